"""How the CLI writes results: tables (rich on a terminal, plain aligned text otherwise), CSV,
JSON and Parquet from ``cryptolake sql``, and where an ``--output`` file may go."""

from __future__ import annotations

import io
import os
import sys
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptolake.atomic import write_file_atomic
from cryptolake.cli.failures import UsageProblem

if TYPE_CHECKING:
    from cryptolake.query import SqlResult

#: Rows above which a terminal table is drawn as plain text (rich takes about 3 ms a row).
RICH_MAX_ROWS = 100


def check_output_path(output: Path, lake_root: Path | str, option: str = "--output") -> Path:
    """Where an ``--output`` file really goes (symlinks followed), refused when that is inside the
    lake (also through a bind mount of the lake or of any folder in it: folders are compared by
    device and inode), a folder, something other than a regular file (a device, a pipe), or in
    a folder that does not exist.

    Raises:
        UsageProblem: one line saying which and what to do.
    """
    target = output.expanduser().resolve()
    shown = f"{option} {output}" + (f" (a link to {target})" if output.is_symlink() else "")
    if isinstance(lake_root, Path) and _inside(target, lake_root.expanduser().resolve()):
        raise UsageProblem(
            f"{shown} is inside the lake {lake_root}: the lake holds only what cryptolake "
            "writes; choose a file outside it"
        )
    if target.is_dir():
        raise UsageProblem(f"{shown} is a folder; give a file name")
    if target.exists() and not target.is_file():
        hint = (
            "leave out --output to write to standard output" if option == "--output" else "give a file name"
        )
        raise UsageProblem(f"{shown} is not a regular file (a device, a pipe or a socket); {hint}")
    if not target.parent.is_dir():
        raise UsageProblem(f"{shown}: folder {target.parent} does not exist; create it first")
    return target


def _inside(target: Path, lake: Path) -> bool:
    if target == lake or target.is_relative_to(lake):
        return True
    if not lake.is_dir():
        return False
    folders = {_identity(Path(folder)) for folder, _, _ in os.walk(lake)}  # every folder of the lake
    for folder in target.parents:
        try:
            if _identity(folder) in folders:
                return True
        except OSError:
            continue  # not there (yet): its parents decide
    return False


def _identity(path: Path) -> tuple[int, int]:
    status = path.stat()
    return status.st_dev, status.st_ino


def write_output(target: Path, data: str | bytes) -> None:
    """Write ``data`` to ``target`` whole or not at all, keeping the mode of the file it replaces."""
    write_file_atomic(target, data.encode("utf-8") if isinstance(data, str) else data)


def render_sql(result: SqlResult, fmt: str, *, to_terminal: bool) -> str | bytes:
    """A ``cryptolake sql`` result as ``table``, ``csv`` or ``json`` text, or ``parquet`` bytes."""
    # Here, not at the top: the query module loads duckdb and pyarrow, which the tables of
    # `cryptolake config` and `status` do not need.
    from cryptolake.query import dumps_json, to_json_rows, unique_names

    table = result.table
    if fmt == "parquet":
        import pyarrow.parquet as pq

        buffer = io.BytesIO()
        pq.write_table(table.rename_columns(unique_names(table.column_names)), buffer, compression="zstd")
        return buffer.getvalue()
    if fmt == "json":
        return dumps_json(to_json_rows(result)) + "\n"
    if fmt == "csv":
        import csv

        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(table.column_names)
        for batch in table.to_batches(max_chunksize=50_000):
            writer.writerows(zip(*(column.to_pylist() for column in batch.columns), strict=True))
        return text.getvalue()
    columns = [column.to_pylist() for column in table.columns]  # not to_pydict: names may repeat
    rows = [["" if v is None else str(v) for v in row] for row in zip(*columns, strict=True)]
    if to_terminal and len(rows) <= RICH_MAX_ROWS:
        return rich_table("", table.column_names, rows)
    return plain_table(table.column_names, rows)


def visible(text: str) -> str:
    """``text`` safe to show in a table: control characters (escape sequences, carriage
    returns, newlines, NUL) as ``\\xNN`` escapes, so data cannot drive the terminal or break
    the layout."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") and ch != "\u200d":
            out.append(
                {"\n": "\\n", "\t": "\\t", "\r": "\\r"}.get(
                    ch, f"\\x{ord(ch):02x}" if ord(ch) < 256 else f"\\u{ord(ch):04x}"
                )
            )
        else:
            out.append(ch)
    return "".join(out)


def plain_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns aligned with two spaces, a header and a rule; nothing cut, any width; fast."""
    cells = [[visible(str(c)) for c in columns], *[[visible(str(c)) for c in row] for row in rows]]
    widths = [max(_width(row[i]) for row in cells) for i in range(len(columns))]
    lines = []
    for n, row in enumerate(cells):
        lines.append(
            "  ".join(
                _pad(cell, w, numeric=n > 0 and _is_number(cell)) for cell, w in zip(row, widths, strict=True)
            ).rstrip()
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines) + "\n"


def rich_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A rich table as text for the terminal (cells wrap rather than being cut)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title or None, show_edge=False, header_style="bold")
    for column in columns:
        table.add_column(Text(visible(column)), overflow="fold")
    for row in rows:  # Text, not markup: a value such as "[bold]" is shown as it is
        table.add_row(*(Text("" if cell is None else visible(str(cell))) for cell in row))
    console = Console(
        file=io.StringIO(), width=None if sys.stdout.isatty() else 200, force_terminal=sys.stdout.isatty()
    )
    console.print(table)
    return console.file.getvalue()  # type: ignore[attr-defined]


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _pad(text: str, width: int, *, numeric: bool) -> str:
    fill = " " * (width - _width(text))
    return fill + text if numeric else text + fill


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
