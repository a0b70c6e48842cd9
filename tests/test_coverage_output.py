"""Coverage output: the plain-text table (80 columns, wide characters, no rounding up to 100) and
the heatmap PNG (discrete colours that separate 99.x% from 100%, readable non-Latin labels)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from cryptolake import coverage_plot
from cryptolake.coverage_plot import COVERAGE_BINS, coverage_bin, draw_coverage, label_for_font, plot_labels
from cryptolake.coverage_text import NOT_EXPECTED, cell_text, coverage_text, display_width
from cryptolake.errors import MissingDependency

CJK = "币安人生USDT"


def row(symbol: str, month: str, present: int, expected: int = 744, **extra: Any) -> dict[str, Any]:
    percent = round(100.0 * min(present, expected) / expected, 2)
    return {
        "symbol": symbol,
        "interval": "1h",
        "month": month,
        "expected": expected,
        "present": present,
        "completeness_percent": percent,
        **extra,
    }


def three_years(symbol: str, present: int = 744) -> list[dict[str, Any]]:
    years, months = (2023, 2024, 2025), range(1, 13)
    return [row(symbol, f"{year}-{month:02d}", present) for year in years for month in months]


def data_lines(text: str) -> list[str]:
    """The lines between the header and the legend."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("symbol")) + 1
    return lines[start:-2]


def cells_of(text: str, symbol: str, year: str) -> list[str]:
    for line in data_lines(text):
        if line.startswith(symbol + " ") and line.split()[-13] == year:
            return line.split()[-12:]
    raise AssertionError(f"no line for {symbol} {year} in\n{text}")


# -- text ------------------------------------------------------------------------------------


def test_text_fits_80_columns_for_12_character_symbols_over_3_years() -> None:
    rows = [*three_years("ABCDEFGHIJKL", 739), *three_years("BTCUSDT"), *three_years("1000SHIBUSDT", 0)]
    text = coverage_text(rows, title="completeness % (1h)")
    assert all(display_width(line) <= 80 for line in text.splitlines()), text
    assert len(data_lines(text)) == 9
    header = next(line for line in text.splitlines() if line.startswith("symbol"))
    assert header.split()[2:] == [
        "Jan",
        "Feb",
        "Mar",
        "Apr",
        "May",
        "Jun",
        "Jul",
        "Aug",
        "Sep",
        "Oct",
        "Nov",
        "Dec",
    ]
    assert text.splitlines()[0] == "completeness % (1h)"
    assert "\x1b" not in text


def test_text_cells_complete_floored_empty_and_not_expected() -> None:
    rows = [
        row("BTCUSDT", "2024-01", 744),
        row("BTCUSDT", "2024-02", 9996, 10000),
        row("BTCUSDT", "2024-03", 0),
        row("BTCUSDT", "2024-04", 739),
    ]
    cells = cells_of(coverage_text(rows), "BTCUSDT", "2024")
    assert cells == ["100", "99.9", "0", "99.3", *[NOT_EXPECTED] * 8]


def test_cell_is_100_only_when_every_candle_is_present() -> None:
    # 44639 of 44640 one-minute candles: completeness_percent rounds to 100.0, the cell must not.
    nearly = row("BTCUSDT", "2024-01", 44639, 44640)
    assert nearly["completeness_percent"] == 100.0
    assert cell_text(nearly) == "99.9"
    assert cell_text({"completeness_percent": 99.96}) == "99.9"  # rows without present/expected
    assert cell_text({"completeness_percent": 100.0}) == "100"
    assert cell_text({"completeness_percent": 0.0}) == "0"
    assert cell_text(row("X", "2024-01", 1, 44640)) == "0.0"  # something present, below 0.1%
    assert cell_text(row("X", "2024-01", 800)) == "100"  # more than expected is complete
    assert cell_text(None) == NOT_EXPECTED


def test_cjk_symbol_lines_align() -> None:
    rows = [*three_years(CJK, 700), *three_years("BTCUSDT")]
    text = coverage_text(rows)
    lines = [line for line in text.splitlines() if line.startswith(("symbol", CJK, "BTCUSDT"))]
    assert len(lines) == 7
    assert display_width(CJK) == 12
    assert len({display_width(line) for line in lines}) == 1, text
    # The year column starts at the same display column on every line.
    year_columns = {
        display_width(line[: line.index(word)])
        for line, word in zip(lines, ["year", *["2023", "2024", "2025"] * 2], strict=True)
    }
    assert len(year_columns) == 1, text
    assert all(display_width(line) <= 80 for line in lines)


def test_nothing_is_truncated() -> None:
    long_symbol = "AVERYLONGSYMBOLNAMEUSDT_PERPETUAL"
    text = coverage_text([row(long_symbol, "2024-05", 744), row("BTCUSDT", "2024-05", 743)])
    assert long_symbol in text
    assert cells_of(text, long_symbol, "2024")[4] == "100"
    assert cells_of(text, "BTCUSDT", "2024")[4] == "99.8"
    assert len({display_width(line) for line in data_lines(text)}) == 1


def test_symbols_and_years_sorted_and_summary() -> None:
    rows = [row("ETHUSDT", "2025-01", 744), row("BTCUSDT", "2025-02", 0), row("BTCUSDT", "2024-12", 700)]
    text = coverage_text(rows)
    assert [line.split()[:2] for line in data_lines(text)] == [
        ["BTCUSDT", "2024"],
        ["BTCUSDT", "2025"],
        ["ETHUSDT", "2025"],
    ]
    assert "2 of 3 symbol-months below 100% (1 empty)" in text
    assert coverage_text([]) == "no coverage rows"


# -- colours ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("present", "expected_label"), [
    (744, "100"), (800, "100"), (743, "99-99.9"), (737, "99-99.9"), (736, "95-99"), (707, "95-99"),
    (706, "80-95"), (596, "80-95"), (595, "<80"), (1, "<80"), (0, "0"),
])  # fmt: skip
def test_coverage_bin(present: int, expected_label: str) -> None:
    assert COVERAGE_BINS[coverage_bin(row("X", "2024-01", present))][0] == expected_label


def test_coverage_bin_without_present_and_not_expected() -> None:
    assert COVERAGE_BINS[coverage_bin({"completeness_percent": 99.96})][0] == "99-99.9"
    assert COVERAGE_BINS[coverage_bin({"completeness_percent": 100.0})][0] == "100"
    assert COVERAGE_BINS[coverage_bin(None)][0] == "not expected"


def test_colormap_separates_every_bin() -> None:
    pytest.importorskip("matplotlib")
    cmap, norm = coverage_plot.coverage_colormap()
    colours = [tuple(cmap(norm(index))) for index in range(len(COVERAGE_BINS))]
    assert len(set(colours)) == len(COVERAGE_BINS)
    complete = colours[coverage_bin(row("X", "2024-01", 744))]
    nearly = colours[coverage_bin(row("X", "2024-01", 743))]
    assert max(abs(a - b) for a, b in zip(complete, nearly, strict=True)) > 0.3  # clearly, not a shade


# -- fonts -----------------------------------------------------------------------------------


def test_label_for_font_escapes_only_missing_characters() -> None:
    ascii_only = {code: code for code in range(32, 127)}
    assert label_for_font(CJK, ascii_only) == "U+5E01U+5B89U+4EBAU+751FUSDT"
    assert label_for_font(CJK, ascii_only).isascii()
    with_cjk = {**ascii_only, **{ord(char): 1 for char in "币安人生"}}
    assert label_for_font(CJK, with_cjk) == CJK
    assert label_for_font("BTCUSDT", ascii_only) == "BTCUSDT"


def test_plot_labels_prefers_a_font_covering_every_label(monkeypatch: pytest.MonkeyPatch) -> None:
    ascii_map = {code: 1 for code in range(32, 127)}
    charmaps = {
        "default.ttf": ascii_map,
        "partial.ttf": {**ascii_map, ord("币"): 1},
        "cjk.ttc": {**ascii_map, **{ord(char): 1 for char in "币安人生"}},
    }
    monkeypatch.setattr(coverage_plot, "_charmap", charmaps.__getitem__)
    monkeypatch.setattr(coverage_plot, "_default_font_path", lambda: "default.ttf")
    monkeypatch.setattr(coverage_plot, "_candidate_fonts", lambda: ["partial.ttf", "cjk.ttc"])
    assert plot_labels(["BTCUSDT", "a$b$"]) == (["BTCUSDT", r"a\$b\$"], None)
    assert plot_labels(["BTCUSDT", CJK]) == (["BTCUSDT", CJK], "cjk.ttc")
    monkeypatch.setattr(coverage_plot, "_candidate_fonts", lambda: ["partial.ttf"])
    assert plot_labels([CJK]) == (["币U+5B89U+4EBAU+751FUSDT"], "partial.ttf")
    monkeypatch.setattr(coverage_plot, "_candidate_fonts", lambda: [])
    assert plot_labels([CJK]) == (["U+5E01U+5B89U+4EBAU+751FUSDT"], None)


def test_plot_labels_on_this_machine_never_draw_boxes() -> None:
    pytest.importorskip("matplotlib")
    (label,), font_path = plot_labels([CJK])
    charmap = coverage_plot._charmap(font_path or coverage_plot._default_font_path())
    assert all(ord(char) in charmap for char in label)
    assert label == CJK or label == "U+5E01U+5B89U+4EBAU+751FUSDT"
    assert font_path is None or "lastresort" not in Path(font_path).name.lower()


# -- PNG -------------------------------------------------------------------------------------


def test_png_colours_99_and_100_differently(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from matplotlib.colors import to_rgb
    from matplotlib.image import imread

    rows = [
        row("BTCUSDT", "2024-01", 744),
        row("BTCUSDT", "2024-02", 737),
        row(CJK, "2024-01", 0),
        row(CJK, "2024-02", 744),
    ]
    # filterwarnings = error: a "Glyph missing" warning for the CJK label fails this test.
    out = draw_coverage(rows, tmp_path / "sub" / "coverage.png", title="cryptolake coverage (1h)")
    assert out == tmp_path / "sub" / "coverage.png" and out.stat().st_size > 0
    pixels = (imread(out)[:, :, :3] * 255).round().astype(int)

    def count(label: str) -> int:
        colour = [round(c * 255) for c in to_rgb(dict(COVERAGE_BINS)[label])]
        return int((pixels == colour).all(axis=-1).sum())

    # Each heatmap cell is a solid block of thousands of pixels, plus one small swatch per colour in
    # the colorbar: two cells are 100%, one is 99.1% and one is 0%, so if 99.1% were drawn in the
    # colour of 100% the counts would be 3 cells and 0 cells.
    swatch = count("<80")  # a colour in the colorbar only
    cell = count("0") - swatch
    assert 0 < swatch < cell / 5
    assert count("99-99.9") - swatch == pytest.approx(cell, rel=0.15)
    assert count("100") - swatch == pytest.approx(2 * cell, rel=0.15)


def test_png_needs_matplotlib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingDependency) as caught:
        draw_coverage([row("BTCUSDT", "2024-01", 744)], tmp_path / "c.png")
    assert caught.value.extra == "plot"
    assert "cryptolake coverage --png" in str(caught.value)
    assert not (tmp_path / "c.png").exists()
