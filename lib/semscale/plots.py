"""Figure helpers: one look for every notebook, and every figure saved as PNG and PDF.

``set_style()`` is called once at the top of each notebook: a seaborn theme and a minimum font size, so legends
and tick labels stay readable in the saved figures. A figure of more than a few lines is a named function of the
study module it belongs to (``semscale.study.*``); this module holds what every chapter shares.
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib.pyplot as plt
import seaborn as sns

from .records import write_bytes_atomic

MIN_FONT_SIZE = 9  # points: the smallest text on any figure (legends, ticks)


def set_style() -> None:
    """The study's figure style: seaborn's whitegrid theme, the colour-blind palette, no text under MIN_FONT_SIZE."""
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    plt.rcParams.update({"legend.fontsize": MIN_FONT_SIZE + 1, "legend.title_fontsize": MIN_FONT_SIZE + 1,
                         "xtick.labelsize": MIN_FONT_SIZE + 1, "ytick.labelsize": MIN_FONT_SIZE + 1,
                         "figure.titlesize": 13, "axes.titlesize": 12, "axes.labelsize": 11})


def save_figure(fig: plt.Figure, stem: str | Path, dpi: int = 150) -> list[Path]:
    """Write ``stem.png`` and ``stem.pdf`` atomically and return their paths."""
    stem = Path(stem)
    paths = []
    for fmt in ("png", "pdf"):
        buffer = io.BytesIO()
        fig.savefig(buffer, format=fmt, dpi=dpi, bbox_inches="tight")
        paths.append(write_bytes_atomic(stem.with_suffix(f".{fmt}"), buffer.getvalue()))
    return paths


def count(n: int, noun: str) -> str:
    """'1 epoch', '3 epochs': a count in words for titles and sentences."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def message_figure(text: str) -> plt.Figure:
    """A small figure that says, in words, why there is nothing to draw."""
    fig, ax = plt.subplots(figsize=(9, 1.4))
    ax.set_axis_off()
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, transform=ax.transAxes)
    return fig
