"""Cron expressions read the way cron reads them, evaluated by APScheduler 3's triggers in UTC.

Two differences between APScheduler 3's ``CronTrigger.from_crontab`` and cron are corrected here:

- APScheduler 3 numbers weekdays from Monday = 0 (its issue 286, fixed only in 4.x), so a plain
  ``from_crontab("0 6 * * 1-5")`` fires Tuesday to Saturday. Weekday numbers are spelled as day
  names first, which both read the same way (0 and 7 are Sunday).
- When both the day of month and the weekday are restricted, cron fires on a day that matches
  *either* (``0 0 1 * 1``: the 1st of every month and every Monday); APScheduler requires both.
  Such an expression becomes an ``OrTrigger`` of the two.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Protocol

from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger

_WEEKDAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")


class Trigger(Protocol):
    """What the scheduler needs of a trigger (``CronTrigger`` and ``OrTrigger`` both have it)."""

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None: ...


def cron_trigger(expression: str) -> Trigger:
    """A UTC trigger for a 5-field cron expression (minute hour day month weekday).

    Weekday numbers mean what they mean to cron: 0 or 7 = Sunday, 1 = Monday. When both the day
    of month and the weekday are restricted, a day matching either fires, as in cron.

    Raises:
        ValueError: not a valid 5-field expression; the message says what is wrong.
    """
    fields = expression.split()
    if len(fields) != 5:
        return CronTrigger.from_crontab(expression, timezone="UTC")  # raises with APScheduler's reason
    minute, hour, day, month, weekday_field = fields
    weekday = _cron_weekdays(weekday_field)
    if not day.startswith("*") and not weekday_field.startswith("*"):  # cron: "*/2" is not a restriction
        return OrTrigger(
            [
                CronTrigger(minute=minute, hour=hour, day=day, month=month, timezone="UTC"),
                CronTrigger(minute=minute, hour=hour, month=month, day_of_week=weekday, timezone="UTC"),
            ]
        )
    return CronTrigger.from_crontab(" ".join((minute, hour, day, month, weekday)), timezone="UTC")


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
