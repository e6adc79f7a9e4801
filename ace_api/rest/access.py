"""Who may call the API and whose tasks a caller may see.

A certificate holder sees, and may repair or rerun from, only the tasks it
submitted: a task's ``requested_by`` is the common name of the certificate
that queued it. Common names listed in ``API_ADMIN_CNS`` see every task,
including the ones beat schedules (``requested_by`` ``scheduler:<job>``),
which belong to no certificate. Another caller's task is answered exactly like
a task that does not exist, so task ids reveal nothing about other callers.

``API_ALLOWED_CNS``, when set, is the only certificates (besides the admins)
the API serves at all; the TLS layer has already checked that the
certificate is issued by the ACE authority and not revoked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ace_shared.config import Settings

# beat's tasks are recorded as requested by "scheduler:<job name>" (ace_workers.schedule)
SCHEDULED_PREFIX = "scheduler:"


def names_setting(text: str) -> frozenset[str]:
    """Common names from a setting: separated by commas or white space."""
    return frozenset(name for name in re.split(r"[,\s]+", text or "") if name)


@dataclass(frozen=True)
class AccessPolicy:
    """The admin and allow lists, read once from the settings."""

    admins: frozenset[str] = frozenset()
    allowed: frozenset[str] = frozenset()  # empty: every certificate of the ACE authority

    @classmethod
    def from_settings(cls, settings: Settings) -> AccessPolicy:
        return cls(names_setting(settings.API_ADMIN_CNS),
                   names_setting(settings.API_ALLOWED_CNS))

    def may_call(self, common_name: str) -> bool:
        """Whether the API serves this certificate at all."""
        return not self.allowed or common_name in self.allowed or common_name in self.admins

    def may_see(self, common_name: str, requested_by: str | None) -> bool:
        """Whether ``common_name`` may see (and work from) a task ``requested_by`` queued."""
        if common_name in self.admins:
            return True
        if not requested_by or requested_by.startswith(SCHEDULED_PREFIX):
            return False
        return requested_by == common_name
