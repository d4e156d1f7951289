"""semscale.plots: the study's figure style keeps every text readable, and figures are saved as PNG and PDF."""

import matplotlib
import matplotlib.pyplot as plt
import pytest
import seaborn as sns
from semscale import plots


@pytest.fixture
def style():
    """plots.set_style() inside an rc_context, so the other tests keep matplotlib's defaults."""
    with matplotlib.rc_context():
        plots.set_style()
        yield


def test_no_text_of_a_styled_figure_is_under_the_minimum_font_size(style):
    fig, (left, right) = plt.subplots(1, 2)
    for ax in (left, right):
        ax.plot([1, 2, 3], label="a line")
        ax.scatter([1, 2], [2, 1], label="points")
        ax.set(title="a panel", xlabel="x", ylabel="y")
        ax.legend(title="legend")
    fig.suptitle("a figure")
    fig.canvas.draw()
    texts = [t for t in fig.findobj(matplotlib.text.Text) if t.get_text()]
    assert len(texts) > 20  # titles, labels, ticks, legend entries and titles
    small = [(t.get_text(), t.get_fontsize()) for t in texts if t.get_fontsize() < plots.MIN_FONT_SIZE]
    assert not small, f"text under {plots.MIN_FONT_SIZE} pt: {small}"
    plt.close(fig)


def test_the_style_is_the_colour_blind_palette(style):
    cycle = [matplotlib.colors.to_hex(c["color"]) for c in plt.rcParams["axes.prop_cycle"]]
    assert cycle[:3] == [matplotlib.colors.to_hex(c) for c in sns.color_palette("colorblind")[:3]]


def test_save_figure_writes_png_and_pdf(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    paths = plots.save_figure(fig, tmp_path / "sub" / "figure")
    plt.close(fig)
    assert paths == [tmp_path / "sub" / "figure.png", tmp_path / "sub" / "figure.pdf"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths[1].read_bytes()[:5] == b"%PDF-"
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["figure.pdf", "figure.png"]  # no temporary left
