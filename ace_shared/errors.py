"""One error tree for everything ACE reports to a person.

Every failure a user can cause or meet (bad input, an unreachable node, a table
that does not fit) is an :class:`AceError` whose message is one plain sentence
saying what is wrong and what to do, and every one is defined here. Front doors
turn these into exit code 2 (CLI) or ``{"error": ...}`` with a status code that
the REST layer chooses by class (``ace_api.rest.errors``); the core knows
nothing of HTTP. Anything that is not an ``AceError`` is a bug and is reported
as such.
"""

from __future__ import annotations


class AceError(Exception):
    """Root of every error ACE reports to a user."""

    def __init__(self, message: str, remote: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        # what a remote caller (the API) is told: the same sentence without what is the
        # server's own business, such as its file paths
        self.remote_message = remote or message

    def __str__(self) -> str:
        return self.message

    def with_note(self, note: str) -> AceError:
        """The same error (same class, so the same exit code and status) with ``note``
        after its sentence: what the caller needs to know next, such as what was changed."""
        noted = self.__class__.__new__(self.__class__)  # not __init__: its arguments vary
        noted.__dict__.update(self.__dict__)
        noted.message = f"{self.message.rstrip()} {note}"
        noted.remote_message = f"{getattr(self, 'remote_message', self.message).rstrip()} {note}"
        Exception.__init__(noted, noted.message)
        return noted


class ConfigError(AceError):
    """The ACE configuration or a command-line option is invalid."""


class BadOptionError(AceError):
    """An option is out of range or contradicts another option."""


class NotFoundError(AceError):
    """A named cluster, node, table, task or file does not exist."""


class ClusterError(NotFoundError):
    """The cluster definition is missing or malformed."""


class NodeUnreachableError(AceError):
    """A node of the cluster could not be reached."""

    def __init__(self, node: str, detail: str) -> None:
        super().__init__(f"Node {node} cannot be reached: {detail}. Check that it is running "
                         "and that the cluster definition has the right host and port.")
        self.node = node


class NodeLoginRefusedError(NodeUnreachableError):
    """A node answered but refused to log in ACE's user (wrong password, no such role,
    pg_hba.conf). A subclass so code that treats a node as unavailable still does."""

    def __init__(self, node: str, user: str, dbname: str, detail: str) -> None:
        AceError.__init__(self, f"Node {node} refused the login of user {user} to database "
                          f"{dbname}: {detail}. Check that user's password (or client "
                          "certificate) in the cluster definition and the node's "
                          "pg_hba.conf.")
        self.node = node


class JobCancelledError(AceError):
    """A cancelled job's thread was about to start another statement (Ctrl-C, a revoke)."""

    def __init__(self) -> None:
        super().__init__("The job was cancelled; nothing more was started.")


class TableError(AceError):
    """The table is missing, has no primary key, or differs between nodes."""


class FilterError(AceError):
    """The user's table filter is not a valid read-only WHERE clause."""


class PermissionDeniedError(AceError):
    """The caller's role lacks a privilege the operation needs."""


class CallerUnverifiedError(AceError):
    """A node could not say whether a caller's role may be served, so it is not (fail closed)."""


class DiffFileError(AceError):
    """A diff file is missing, unreadable, or belongs to something else."""


class RepairError(AceError):
    """A repair could not be applied; the node it names was left unchanged."""


class RepairPlanError(RepairError):
    """A repair plan is malformed, leaves a key undecided, or cannot be applied as written."""


class OwnerCodeRefusedError(RepairError):
    """Writing the table would run code a role other than the writing session's controls
    (docs/security.md); nothing was written, and running it again changes nothing."""


class TaskError(AceError):
    """A task could not be submitted or has failed."""


class BrokerUnreachableError(TaskError):
    """The task broker could not be reached, so nothing was queued."""


class TaskNotRecordedError(TaskError):
    """A task was queued, but this process's task store could not record it (its worker will)."""


class TaskFailedError(TaskError):
    """A task on the fleet failed for a reason a user can act on; the message says which.

    The job is already recorded as FAILED with this message when it is raised.
    """


class ResultNotReadyError(AceError):
    """A task's files were asked for before it finished."""


class ExceptionBusyError(AceError):
    """The Spock exception's rows are locked by another session."""


class ConnectionsBusyError(AceError):
    """Every connection the fleet may open to a node (``MAX_CONNECTIONS_PER_NODE``) stayed
    in use for as long as a job may wait for one (``CONNECTION_WAIT_SECONDS``)."""

    def __init__(self, node: str, in_use: int, cap: int, waited: int) -> None:
        super().__init__(
            f"No connection to node {node} came free in {waited} s ({in_use} of {cap} in use "
            "by ACE): raise MAX_CONNECTIONS_PER_NODE or CONNECTION_WAIT_SECONDS, or run "
            "fewer jobs at once.")
        self.node = node


class NodeSkippedError(NotFoundError):
    """A node auto-repair cannot work on as it is set up (no Spock tables, say); it is skipped."""


class NoReplicationError(AceError):
    """The node runs no replication system ACE can read."""


class NoFreeNameError(AceError):
    """Every name ACE would give a new output file in a folder is taken."""


class UnknownFormatError(BadOptionError):
    """A report format other than the ones ACE writes was asked for."""


class LocalClusterError(AceError):
    """A node of a local test or demo cluster (``deploy/localcluster.py``) could not be
    created, started, reached or stopped."""
