"""Cron expressions read the way cron reads them, evaluated by APScheduler 3's CronTrigger in UTC.

APScheduler 3 numbers weekdays from Monday = 0 (its issue 286, fixed only in 4.x), so a plain
``CronTrigger.from_crontab("0 6 * * 1-5")`` fires Tuesday to Saturday. :func:`cron_trigger`
spells weekday numbers as day names first, which both read the same way.
"""

from __future__ import annotations

import re

from apscheduler.triggers.cron import CronTrigger

_WEEKDAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")


def cron_trigger(expression: str) -> CronTrigger:
    """A UTC trigger for a 5-field cron expression (minute hour day month weekday).

    Weekday numbers mean what they mean to cron: 0 or 7 = Sunday, 1 = Monday. As in APScheduler,
    a restricted day of month and a restricted weekday must both match (cron fires when either
    does).

    Raises:
        ValueError: not a valid 5-field expression; the message says what is wrong.
    """
    fields = expression.split()
    if len(fields) == 5:
        fields[4] = _cron_weekdays(fields[4])
    return CronTrigger.from_crontab(" ".join(fields), timezone="UTC")


def _cron_weekdays(field: str) -> str:
    """The weekday field with every number spelled as a day name; ``*``, names and malformed
    parts are left as they are (APScheduler explains what is wrong with those)."""
    parts = []
    for part in field.split(","):
        match = re.fullmatch(r"(\*|(\d+)(?:-(\d+))?)(?:/(\d+))?", part)
        if match is None or (match.group(1) == "*" and match.group(4) is None):
            parts.append(part)
            continue
        star, low, high, step = match.groups()
        first = 0 if star == "*" else int(low)
        last = 6 if star == "*" or (high is None and step) else int(high if high is not None else low)
        if not 0 <= first <= last <= 7 or (step is not None and int(step) < 1):
            parts.append(part)
            continue
        parts.extend(_WEEKDAY_NAMES[day] for day in range(first, last + 1, int(step or 1)))
    return ",".join(dict.fromkeys(parts))
