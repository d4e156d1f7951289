"""Figure helpers: one look for every notebook, and every figure saved as PNG and PDF."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib.pyplot as plt
import seaborn as sns

from semscale.records import write_bytes_atomic


def set_style() -> None:
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")


def save_figure(fig: plt.Figure, stem: str | Path, dpi: int = 150) -> list[Path]:
    """Write ``stem.png`` and ``stem.pdf`` atomically and return their paths."""
    stem = Path(stem)
    paths = []
    for fmt in ("png", "pdf"):
        buffer = io.BytesIO()
        fig.savefig(buffer, format=fmt, dpi=dpi, bbox_inches="tight")
        paths.append(write_bytes_atomic(stem.with_suffix(f".{fmt}"), buffer.getvalue()))
    return paths
