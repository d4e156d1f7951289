"""Whether to draw progress bars: on a terminal or in a live notebook, never in headless logs.

A tqdm bar redraws itself with carriage returns; in a papermill output or a CI log every redraw
stays as a line of text, so headless runs get no bars at all.
"""

from __future__ import annotations

import os
import sys

from tqdm.auto import tqdm

__all__ = ["bar", "show_progress"]


def bar(iterable=None, *, total: int | None = None, desc: str = "", unit: str = "it") -> tqdm:
    """A ``tqdm.auto`` bar (a widget in a live notebook, text on a terminal) that draws nothing in headless runs."""
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not show_progress(), leave=False, dynamic_ncols=True)


def show_progress() -> bool:
    """True on a terminal (stderr is a tty) or in a live Jupyter kernel, else False.

    ``SEMSCALE_HEADLESS`` set to anything but "" or "0" forces False: ``semscale.notebooks`` sets it
    for the kernels it runs, which are Jupyter kernels too but write into the executed notebook.
    """
    if os.environ.get("SEMSCALE_HEADLESS", "") not in ("", "0"):
        return False
    isatty = getattr(sys.stderr, "isatty", None)
    try:
        if isatty is not None and isatty():
            return True
    except (ValueError, OSError):  # a closed or detached stream
        pass
    return _in_live_kernel()


def _in_live_kernel() -> bool:
    """Running inside an ipykernel (Jupyter), not a terminal IPython or plain Python."""
    if "ipykernel" not in sys.modules:
        return False
    try:
        from IPython import get_ipython
        from ipykernel.zmqshell import ZMQInteractiveShell
    except ImportError:  # pragma: no cover - a half-imported ipykernel
        return False
    return isinstance(get_ipython(), ZMQInteractiveShell)
