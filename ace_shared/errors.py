"""One error tree for everything ACE reports to a person.

Every failure a user can cause or meet (bad input, an unreachable node, a table
that does not fit) is an :class:`AceError` whose message is one plain sentence
saying what is wrong and what to do. Front doors turn these into exit code 2
(CLI) or ``{"error": ...}`` with :attr:`AceError.http_status` (API); anything
that is not an ``AceError`` is a bug and is reported as such.
"""

from __future__ import annotations


class AceError(Exception):
    """Root of every error ACE reports to a user."""

    http_status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(AceError):
    """The ACE configuration or a command-line option is invalid."""


class BadOptionError(AceError):
    """An option is out of range or contradicts another option."""


class NotFoundError(AceError):
    """A named cluster, node, table, task or file does not exist."""

    http_status = 404


class ClusterError(NotFoundError):
    """The cluster definition is missing or malformed."""


class NodeUnreachableError(AceError):
    """A node of the cluster could not be reached."""

    http_status = 502

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


class TableError(AceError):
    """The table is missing, has no primary key, or differs between nodes."""


class FilterError(AceError):
    """The user's table filter is not a valid read-only WHERE clause."""


class PermissionDeniedError(AceError):
    """The caller's role lacks a privilege the operation needs."""

    http_status = 403


class DiffFileError(AceError):
    """A diff file is missing, unreadable, or belongs to something else."""


class RepairError(AceError):
    """A repair could not be applied; the node it names was left unchanged."""


class TaskError(AceError):
    """A task could not be submitted or has failed."""


class BrokerUnreachableError(TaskError):
    """The task broker could not be reached, so nothing was queued."""


class TaskNotRecordedError(TaskError):
    """A task was queued, but this process's task store could not record it (its worker will)."""
