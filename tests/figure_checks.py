"""What the figure and explorer tests share: a figure's words checked for readability, its PNG bytes, and the
option grid of an explorer's sliders."""

import io
import itertools

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.text import Text
from semscale import plots


def texts(fig) -> list[Text]:
    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]


def figure_words(fig) -> str:
    """The figure's words; fails on text under the minimum size, a 'nan' where words belong, or Python's spelling
    of a list or a count ("[0]", "1 epochs")."""
    assert isinstance(fig, plt.Figure)
    found = texts(fig)
    assert found, "a figure without any text"
    small = [(t.get_text(), t.get_fontsize()) for t in found if t.get_fontsize() < plots.MIN_FONT_SIZE]
    assert not small, f"text under {plots.MIN_FONT_SIZE} pt: {small[:5]}"
    words = " | ".join(t.get_text() for t in found)
    assert "nan" not in words.lower().replace("nanmean", ""), words
    assert "[0]" not in words and "1 epochs" not in words and "1 seeds" not in words, words
    return words


def png(fig, dpi: int = 40) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def slider_values(slider) -> np.ndarray:
    """Every value a slider can take (a log slider's exponents turned into values)."""
    values = np.arange(slider.min, slider.max + slider.step / 2, slider.step)
    return 10.0**values if isinstance(slider, widgets.FloatLogSlider) else values


def grid_sample(controls: dict, n: int, seed: int = 0) -> list[dict]:
    """n settings drawn (seeded) from the full option grid of the sliders in ``controls``, plus its corners."""
    sliders = {name: w for name, w in controls.items() if hasattr(w, "step")}
    values = {name: slider_values(w) for name, w in sliders.items()}
    rng = np.random.default_rng(seed)
    sample = [{name: v[rng.integers(len(v))] for name, v in values.items()} for _ in range(n)]
    corners = [dict(zip(values, c)) for c in itertools.product(*[(v[0], v[-1]) for v in values.values()])]
    return [{name: float(x) if isinstance(sliders[name], widgets.FloatSlider | widgets.FloatLogSlider) else int(x)
             for name, x in s.items()} for s in sample + corners]


def fixed_values(controls: dict) -> dict:
    return {name: w.value for name, w in controls.items() if isinstance(w, widgets.fixed)}


def check_controls(controls: dict) -> None:
    """Every control reads in words: a label that is never cut, a tooltip, a description that is not the argument's name."""
    for name, w in controls.items():
        if isinstance(w, widgets.fixed):
            continue
        assert w.style.description_width == "initial", name
        assert isinstance(w.tooltip, str) and w.tooltip.strip() and w.tooltip != "null", name
        assert w.description and w.description != name, name
