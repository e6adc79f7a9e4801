"""Repair plans: rules that decide, key by key, which version each node ends with (docs/repair-plans.md).

``loader`` reads and checks a plan (``schema``, ``condition``), ``decide`` applies
its precedence and actions to one key's versions (pure Python), ``resolve`` does
that for every key of a diff file into a resolved plan (``resolved``), and
``apply`` writes a resolved plan through the repair's own machinery; ``run``
drives it all for table-repair.
"""
