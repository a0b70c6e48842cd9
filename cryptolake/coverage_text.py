"""Coverage as plain text: completeness (%) per symbol and month, one line per symbol and year.

Twelve month columns (Jan..Dec) keep a line within 80 columns for symbols up to about 12
characters, however many months the lake holds; wider symbols make lines longer, never cut.
No colour, no box drawing: the same text on a terminal, in a pipe or in a file.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

#: The cell of a month without a row: outside the symbol's expected range (before its listing,
#: after the last closed candle).
NOT_EXPECTED = "-"


def percent_of(row: Mapping[str, Any]) -> float:
    """The completeness of one coverage row in percent, 0..100.

    Computed from ``present`` (plus ``no_trades``: slots an exchange sends no candle for, as it
    should) and ``expected`` when the row has them (``completeness_percent`` is rounded to two
    decimals, so 44639 of 44640 reads 100.0 there), else ``completeness_percent``.
    """
    present, expected = row.get("present"), row.get("expected")
    if present is not None and expected:
        accounted = int(present) + int(row.get("no_trades") or 0)
        return 100.0 * min(max(accounted, 0), int(expected)) / int(expected)
    return min(max(float(row["completeness_percent"]), 0.0), 100.0)


def cell_text(row: Mapping[str, Any] | None) -> str:
    """One month's cell: ``100`` when complete (present >= expected), ``0`` when nothing is
    present, otherwise the percent floored to one decimal (``99.96`` -> ``99.9``, never ``100.0``);
    :data:`NOT_EXPECTED` for no row."""
    if row is None:
        return NOT_EXPECTED
    present, expected = row.get("present"), row.get("expected")
    if present is not None and expected:
        present, expected = int(present), int(expected)
        if present >= expected:
            return "100"
        if present <= 0:
            return "0"
        tenths = 1000 * present // expected  # exact integer floor, no float rounding
    else:
        percent = float(row["completeness_percent"])
        if percent >= 100:
            return "100"
        if percent <= 0:
            return "0"
        tenths = min(int(percent * 10 + 1e-9), 999)
    return f"{tenths // 10}.{tenths % 10}"


def display_width(text: str) -> int:
    """Terminal columns of ``text``: East Asian wide and fullwidth characters take two,
    combining marks none."""
    width = 0
    for char in text:
        if unicodedata.combining(char):
            continue
        width += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return width


def coverage_text(rows: Iterable[Mapping[str, Any]], title: str | None = None) -> str:
    """Render coverage rows (``symbol``, ``month`` as ``YYYY-MM``, ``present``, ``expected``,
    ``completeness_percent``, as from :func:`cryptolake.gaps.coverage_rows`) as plain text.

    One line per symbol and year with twelve right-aligned month cells, symbols and years
    sorted, a header of month names, and a legend with how many symbol-months are incomplete.
    Rows of several intervals get the interval next to the symbol. Pure: no I/O.
    """
    rows = list(rows)
    lines = [title] if title else []
    if not rows:
        return "\n".join([*lines, "no coverage rows"])
    several_intervals = len({row.get("interval") for row in rows}) > 1
    cells: dict[tuple[str, str, str], list[Mapping[str, Any] | None]] = {}
    for row in rows:
        year, month = str(row["month"])[:4], int(str(row["month"])[5:7])
        key = (str(row["symbol"]), str(row.get("interval") or "") if several_intervals else "", year)
        cells.setdefault(key, [None] * 12)[month - 1] = row
    labels = {key: f"{key[0]} {key[1]}" if key[1] else key[0] for key in cells}
    texts = {key: [cell_text(row) for row in months] for key, months in cells.items()}
    label_width = max(display_width("symbol"), *(display_width(label) for label in labels.values()))
    cell_width = max(4, *(len(text) for cell_row in texts.values() for text in cell_row))

    def line(label: str, year: str, values: Sequence[str]) -> str:
        pad = " " * (label_width - display_width(label))
        return f"{label}{pad}  {year:>4}" + "".join(f" {value:>{cell_width}}" for value in values)

    lines.append(line("symbol", "year", MONTH_NAMES))
    lines.extend(line(labels[key], key[2], texts[key]) for key in sorted(cells))
    judged = [text for cell_row in texts.values() for text in cell_row if text != NOT_EXPECTED]
    below = sum(text != "100" for text in judged)
    empty = sum(text == "0" for text in judged)
    lines.append(f"{below} of {len(judged)} symbol-months below 100% ({empty} empty)")
    lines.append(f"100 complete, 99.9 floored to 0.1%, 0 none present, {NOT_EXPECTED} not expected")
    return "\n".join(lines)
