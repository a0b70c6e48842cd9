"""Coverage pictures: completeness per symbol and month as a heatmap PNG (matplotlib).

Colours are discrete bins (:data:`COVERAGE_BINS`) so that 99.x% never looks like 100%. Labels
are drawn with an installed font that has all their characters (a CJK font for symbols such as
``币安人生USDT`` when one is installed); characters no installed font has are written as
``U+XXXX`` escapes instead of empty boxes.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cryptolake.atomic import write_file_atomic
from cryptolake.coverage_text import percent_of
from cryptolake.errors import MissingDependency

#: The colour bins, by index: (colorbar label, colour). Index 0 is a month without a row.
COVERAGE_BINS: tuple[tuple[str, str], ...] = (
    ("not expected", "#d9d9d9"),
    ("0", "#a50026"),
    ("<80", "#f46d43"),
    ("80-95", "#fdae61"),
    ("95-99", "#fee08b"),
    ("99-99.9", "#b8e186"),
    ("100", "#1a9850"),
)

#: Font family names tried first for labels outside the default font (CJK-capable fonts).
PREFERRED_FONTS = (
    "Noto Sans CJK",
    "Noto Serif CJK",
    "Source Han Sans",
    "Source Han Serif",
    "WenQuanYi",
    "Droid Sans Fallback",
    "AR PL",
    "Noto Sans SC",
    "Noto Sans TC",
    "Noto Sans JP",
    "Noto Sans KR",
    "Unifont",
)

#: Fonts never used for labels: placeholder glyphs (Last Resort draws a box per Unicode block)
#: or symbol fonts whose letters are not letters. Lower-case name prefixes.
EXCLUDED_FONTS = ("last resort", "lastresort", "stixnonunicode", "stixsize", "cmex", "cmsy", "cmmi")


def coverage_bin(row: Mapping[str, Any] | None) -> int:
    """The :data:`COVERAGE_BINS` index of one coverage row (``None``: not expected).

    ``100`` only when complete (present >= expected); ``[99, 100)``, ``[95, 99)``, ``[80, 95)``,
    ``(0, 80)`` and exactly ``0`` each have their own bin.
    """
    if row is None:
        return 0
    percent = percent_of(row)
    if percent >= 100:
        return 6
    if percent <= 0:
        return 1
    for index, lower in ((5, 99.0), (4, 95.0), (3, 80.0)):
        if percent >= lower:
            return index
    return 2


def coverage_colormap() -> tuple[Any, Any]:
    """The ``(ListedColormap, BoundaryNorm)`` pair mapping a :func:`coverage_bin` index to its colour.

    Raises:
        MissingDependency: matplotlib is not installed.
    """
    try:
        from matplotlib.colors import BoundaryNorm, ListedColormap
    except ImportError:
        raise MissingDependency("cryptolake coverage --png", "plot") from None
    cmap = ListedColormap([color for _, color in COVERAGE_BINS], name="cryptolake_coverage")
    norm = BoundaryNorm([index - 0.5 for index in range(len(COVERAGE_BINS) + 1)], len(COVERAGE_BINS))
    return cmap, norm


def label_for_font(text: str, charmap: Mapping[int, int] | Iterable[int]) -> str:
    """``text`` with every character missing from ``charmap`` (code points, as from
    ``FT2Font.get_charmap()``) written as a ``U+XXXX`` escape: ``币安人生USDT`` ->
    ``U+5E01U+5B89U+4EBAU+751FUSDT`` for a font without CJK glyphs, unchanged for one with them."""
    return "".join(char if ord(char) in charmap else f"U+{ord(char):04X}" for char in text)


def plot_labels(texts: Sequence[str]) -> tuple[list[str], str | None]:
    """Labels ready to draw, and the font file to draw them with (``None``: matplotlib's default).

    Keeps the default font when it has every character; otherwise picks an installed font that
    has them all (:data:`PREFERRED_FONTS` first), or the one with the most, and escapes what the
    chosen font still lacks (:func:`label_for_font`). ``$`` is escaped so no label turns into
    mathtext. Needs matplotlib.
    """
    needed = {ord(char) for text in texts for char in text}
    default = _default_font_path()
    path: str | None = None
    charmap = _charmap(default)
    if not needed <= charmap.keys():
        best, best_count = None, sum(code in charmap for code in needed)
        for candidate in _candidate_fonts():
            candidate_map = _charmap(candidate)
            count = sum(code in candidate_map for code in needed)
            if count > best_count:
                best, best_count = candidate, count
                if count == len(needed):
                    break
        if best is not None:
            path, charmap = best, _charmap(best)
    return [label_for_font(text, charmap).replace("$", r"\$") for text in texts], path


#: The letter drawn on a month with data-quality findings (``coverage --png --quality``).
QUALITY_MARKS = {"error": "E", "warning": "W"}


def draw_coverage(
    rows: Sequence[dict[str, Any]],
    path: str | Path,
    title: str = "cryptolake coverage",
    marks: Mapping[tuple[str, str], str] | None = None,
) -> Path:
    """Draw ``rows`` (``symbol``, ``month``, ``completeness_percent``, as from
    :func:`cryptolake.gaps.coverage_rows`) as a symbols x months heatmap; returns the PNG path.

    Months run without holes from the first to the last; cells are coloured by
    :func:`coverage_bin`, with a colorbar naming the bins. ``marks`` (``{(symbol, month):
    "error" | "warning"}``, from :func:`cryptolake.quality.marked_months`) puts an ``E`` or a
    ``W`` (:data:`QUALITY_MARKS`) on the months with data-quality findings.

    Raises:
        MissingDependency: matplotlib is not installed (``pip install 'cryptolake[plot]'``).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no display needed
        import matplotlib.pyplot as plt
        import numpy as np
        from matplotlib.cm import ScalarMappable
        from matplotlib.font_manager import FontProperties
    except ImportError:
        raise MissingDependency("cryptolake coverage --png", "plot") from None
    symbols = sorted({str(r["symbol"]) for r in rows})
    months = _month_range(str(r["month"]) for r in rows)
    by_cell = {(str(r["symbol"]), str(r["month"])): r for r in rows}
    grid = np.array([[coverage_bin(by_cell.get((s, m))) for m in months] for s in symbols], dtype=float)
    labels, font_path = plot_labels([*symbols, title])
    font = FontProperties(fname=font_path) if font_path else None
    cmap, norm = coverage_colormap()
    height = max(2.5, 0.3 * len(symbols) + 1.5)
    width = max(4.0, 0.45 * len(months) + 3)
    figure, axes = plt.subplots(figsize=(width, height))
    try:
        if symbols:
            axes.imshow(grid, cmap=cmap, norm=norm, aspect="auto", interpolation="nearest")
            axes.set_xticks(range(len(months)), months, rotation=90, fontsize=7)
            axes.set_yticks(range(len(symbols)), labels[:-1], fontsize=7, fontproperties=font)
            axes.set_xticks([x - 0.5 for x in range(1, len(months))], minor=True)
            axes.set_yticks([y - 0.5 for y in range(1, len(symbols))], minor=True)
            axes.grid(which="minor", color="white", linewidth=0.5)
            axes.tick_params(which="minor", length=0)
            for (symbol, month), severity in (marks or {}).items():
                if symbol in symbols and month in months:
                    axes.text(
                        months.index(month), symbols.index(symbol), QUALITY_MARKS[severity],
                        ha="center", va="center", fontsize=7, fontweight="bold", color="black",
                    )  # fmt: skip
            if marks:
                axes.set_xlabel("E: errors, W: warnings found by cryptolake check", fontsize=7)
        else:
            axes.set_axis_off()
            axes.text(0.5, 0.5, "no coverage rows", ha="center", va="center", transform=axes.transAxes)
        axes.set_title(labels[-1], fontproperties=font)
        ticks = range(len(COVERAGE_BINS))
        colorbar = figure.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=axes, ticks=ticks)
        colorbar.ax.set_yticklabels([label for label, _ in COVERAGE_BINS], fontsize=7)
        colorbar.set_label("completeness %")
        figure.tight_layout()
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        image = io.BytesIO()
        figure.savefig(image, dpi=100, format="png")  # PNG at exactly `path`, whatever it ends with
    finally:
        plt.close(figure)
    write_file_atomic(out, image.getvalue())
    return out


def _month_range(months: Iterable[str]) -> list[str]:
    """Every ``YYYY-MM`` from the first to the last of ``months``."""
    present = sorted(set(months))
    if not present:
        return []
    year, month = int(present[0][:4]), int(present[0][5:7])
    out = []
    while (current := f"{year:04d}-{month:02d}") <= present[-1]:
        out.append(current)
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return out


def _default_font_path() -> str:
    from matplotlib.font_manager import FontProperties, findfont

    return str(findfont(FontProperties()))


def _candidate_fonts() -> list[str]:
    """Installed font files (first faces, regular first), :data:`PREFERRED_FONTS` first, without
    :data:`EXCLUDED_FONTS`."""
    from matplotlib.font_manager import fontManager

    def rank(entry: Any) -> tuple[int, bool, bool, str]:
        name = entry.name.lower()
        preferred = next(
            (i for i, p in enumerate(PREFERRED_FONTS) if name.startswith(p.lower())), len(PREFERRED_FONTS)
        )
        return preferred, entry.style != "normal", entry.weight not in (400, "normal", "regular"), entry.fname

    entries = [
        e
        for e in fontManager.ttflist
        if getattr(e, "index", 0) == 0
        and not e.name.lower().startswith(EXCLUDED_FONTS)
        and not Path(e.fname).name.lower().startswith(EXCLUDED_FONTS)
    ]
    return list(dict.fromkeys(e.fname for e in sorted(entries, key=rank)))


@functools.lru_cache(maxsize=256)
def _charmap(font_path: str) -> dict[int, int]:
    """The code points a font file has glyphs for (empty when FreeType cannot read it)."""
    from matplotlib.ft2font import FT2Font

    try:
        return {code: glyph for code, glyph in FT2Font(font_path).get_charmap().items() if glyph}
    except (OSError, RuntimeError, ValueError):
        return {}
