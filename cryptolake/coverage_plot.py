"""Coverage pictures: completeness per symbol and month as a heatmap PNG (matplotlib)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptolake.errors import MissingDependency


def draw_coverage(rows: Sequence[dict[str, Any]], path: str | Path, title: str = "cryptolake coverage") -> Path:
    """Draw ``rows`` (``symbol``, ``month``, ``completeness_percent``, as from
    :func:`cryptolake.gaps.coverage_rows`) as a symbols x months heatmap; returns the PNG path.

    Raises:
        MissingDependency: matplotlib is not installed (``pip install 'cryptolake[plot]'``).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no display needed
        import matplotlib.pyplot as plt
        import numpy as np
    except ImportError:
        raise MissingDependency("cryptolake coverage --png", "plot") from None
    symbols = sorted({r["symbol"] for r in rows})
    months = sorted({r["month"] for r in rows})
    grid = np.full((len(symbols), len(months)), np.nan)
    for row in rows:
        grid[symbols.index(row["symbol"]), months.index(row["month"])] = row["completeness_percent"]
    height = max(2.5, 0.3 * len(symbols) + 1.5)
    width = max(4.0, 0.45 * len(months) + 3)
    figure, axes = plt.subplots(figsize=(width, height))
    try:
        image = axes.imshow(np.ma.masked_invalid(grid), cmap="RdYlGn", vmin=0, vmax=100, aspect="auto",
                            interpolation="nearest")
        axes.set_xticks(range(len(months)), months, rotation=90, fontsize=7)
        axes.set_yticks(range(len(symbols)), symbols, fontsize=7)
        axes.set_title(title)
        figure.colorbar(image, ax=axes, label="completeness %")
        figure.tight_layout()
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(out, dpi=100)
    finally:
        plt.close(figure)
    return out
