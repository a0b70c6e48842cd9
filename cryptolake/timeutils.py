"""UTC time helpers. Naive datetimes are taken to be UTC, never local time."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

UTC = UTC
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_ms(value: datetime | date | str | int) -> int:
    """Milliseconds since the epoch for a datetime, a date, an ISO 8601 string or an int (ms).

    Naive datetimes and date-only strings are UTC.
    """
    if isinstance(value, bool):
        raise TypeError("a boolean is not a time")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        value = parse_datetime(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return _whole_ms(value)
    if isinstance(value, date):
        return _whole_ms(datetime(value.year, value.month, value.day, tzinfo=UTC))
    raise TypeError(f"cannot turn {type(value).__name__} into a time")


def _whole_ms(value: datetime) -> int:
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def from_ms(t_ms: int) -> datetime:
    """A timezone-aware UTC datetime for milliseconds since the epoch."""
    return _EPOCH + timedelta(milliseconds=t_ms)


def parse_datetime(text: str) -> datetime:
    """Parse ``YYYY-MM-DD`` or an ISO 8601 datetime; without an offset it is UTC."""
    text = text.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def iso(t_ms: int) -> str:
    """ISO 8601 UTC text (``2024-01-01T00:00:00Z``) for milliseconds since the epoch."""
    spec = "milliseconds" if t_ms % 1000 else "seconds"
    return from_ms(t_ms).isoformat(timespec=spec).replace("+00:00", "Z")
