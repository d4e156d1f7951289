"""Headless for every test, also for the kernels nbval starts over reference/smoke/ (they inherit this environment):
no progress bars in a checked cell's output, whoever calls pytest (./run_all.sh --test sets it too)."""

import os

os.environ.setdefault("SEMSCALE_HEADLESS", "1")
