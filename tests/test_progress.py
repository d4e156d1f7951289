"""semscale.progress: progress bars on a terminal or in a live notebook, never in headless logs."""

import io
import sys

import pytest
from semscale import data
from semscale.progress import show_progress


class _Tty(io.StringIO):
    def isatty(self):
        return True


def on_a_terminal(monkeypatch):
    # in the test body: pytest's capture re-installs sys.stderr after fixtures are set up
    monkeypatch.setattr(sys, "stderr", _Tty())


def test_false_when_headless_even_on_a_terminal(monkeypatch):
    on_a_terminal(monkeypatch)
    monkeypatch.setenv("SEMSCALE_HEADLESS", "1")
    assert show_progress() is False


def test_false_under_captured_stderr(monkeypatch):
    monkeypatch.delenv("SEMSCALE_HEADLESS", raising=False)
    assert not sys.stderr.isatty()  # pytest captures it
    assert show_progress() is False


@pytest.mark.parametrize("value", [None, "", "0"])
def test_true_on_a_terminal(monkeypatch, value):
    on_a_terminal(monkeypatch)
    if value is None:
        monkeypatch.delenv("SEMSCALE_HEADLESS", raising=False)
    else:
        monkeypatch.setenv("SEMSCALE_HEADLESS", value)
    assert show_progress() is True


def test_true_in_a_live_kernel(monkeypatch):
    pytest.importorskip("ipykernel")
    from ipykernel import zmqshell

    monkeypatch.delenv("SEMSCALE_HEADLESS", raising=False)
    shell = object.__new__(zmqshell.ZMQInteractiveShell)  # what get_ipython() returns in Jupyter
    monkeypatch.setattr("IPython.get_ipython", lambda: shell)
    assert show_progress() is True
    monkeypatch.setenv("SEMSCALE_HEADLESS", "1")  # the same kernel run by papermill
    assert show_progress() is False


def test_load_draws_no_bars_when_headless(monkeypatch, tmp_path):
    """data.load(progress=None) asks show_progress(): no bars with SEMSCALE_HEADLESS, bars on a tty."""
    on_a_terminal(monkeypatch)
    seen = []
    monkeypatch.setitem(data._DECODERS, "cifar10-jpeg75", lambda split, paths, progress: seen.append(progress) or {})
    monkeypatch.setattr(data, "_read_cache", lambda *a: None)
    monkeypatch.setattr(data, "fetch", lambda res: (tmp_path / res.role, "md5"))
    for headless, expected in (("1", False), ("", True)):
        monkeypatch.setenv("SEMSCALE_HEADLESS", headless)
        with pytest.raises(KeyError):  # the fake decoder returns nothing
            data.load("cifar10-jpeg75", "train")
        assert seen.pop() is expected
    with pytest.raises(KeyError):
        data.load("cifar10-jpeg75", "train", progress=False)  # an explicit value wins
    assert seen == [False]
