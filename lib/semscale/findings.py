"""The numbers the README's Findings and the references' FINDINGS.md state, computed from the committed reference CSVs.

A number in the text is wrapped in a marker that names it (invisible once the markdown is rendered)::

    CE+DSB − CE = <!--n:03.primary.diff-->+1.80 [−0.26, +3.86]<!--/n--> points

``python -m semscale.findings`` lists every marked number that differs from what its CSV gives now; ``--write``
rewrites them in place (after a republish). tests/test_findings.py runs the check, so the text cannot drift from
the tables. Each number is a small function of ``reference/<profile>/<notebook>/*.csv`` (``FACTS``).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Callable

import pandas as pd

from .records import REPO, write_bytes_atomic

REFERENCE = REPO / "reference" / "default"
TEXTS = (REPO / "README.md", *sorted(REFERENCE.glob("*/FINDINGS.md")))
MARKER = re.compile(r"<!--n:(?P<name>[\w.\-]+)-->(?P<value>.*?)<!--/n-->", re.S)

FACTS: dict[str, Callable[[Path], str]] = {}


def fact(name: str):
    """Register ``function(reference_root) -> str`` as the number named ``name``."""
    def register(function):
        FACTS[name] = function
        return function
    return register


def signed(x: float, digits: int = 2) -> str:
    """+1.80 / −0.27 (a true minus sign, as the prose writes it)."""
    return f"{x:+.{digits}f}".replace("-", "−")


def interval(low: float, high: float, digits: int = 2) -> str:
    return f"[{signed(low, digits)}, {signed(high, digits)}]"


def estimate(mean: float, low: float, high: float, digits: int = 2) -> str:
    """+1.80 [−0.26, +3.86]: a difference and its interval, as the prose writes them."""
    return f"{signed(mean, digits)} {interval(low, high, digits)}"


def _csv(root: Path, notebook: str, name: str) -> pd.DataFrame:
    return pd.read_csv(root / notebook / f"{name}.csv")


# ---------------------------------------------------------------------------------------------------------
# the facts


@fact("03.primary.diff")
def _03_primary_diff(root: Path) -> str:
    p = _csv(root, "03_long_tailed_dsb", "primary_test").iloc[0]
    return estimate(p.diff_mean, p.ci_low, p.ci_high)


@fact("03.primary.seeds")
def _03_primary_seeds(root: Path) -> str:
    return str(int(_csv(root, "03_long_tailed_dsb", "primary_test").iloc[0].n_pairs))


@fact("03.primary.verdict")
def _03_primary_verdict(root: Path) -> str:
    return str(_csv(root, "03_long_tailed_dsb", "primary_test").iloc[0].verdict)


@fact("03.primary.detectable")
def _03_primary_detectable(root: Path) -> str:
    return f"{_csv(root, '03_long_tailed_dsb', 'primary_test').iloc[0].detectable_pilot:.2f}"


def _main_top1(root: Path, method: str) -> str:
    t = _csv(root, "03_long_tailed_dsb", "main_table")
    row = t[t.method == method].iloc[0]
    return f"{row.top1_pct_mean:.1f} ± {row.top1_pct_std:.1f}"


for _method in ("CE", "CE+DSB", "LDAM-DRW", "Balanced Softmax", "CDB-CE"):
    fact(f"03.top1.{_method.replace(' ', '_')}")(lambda root, _m=_method: _main_top1(root, _m))


def _dsb_effect(root: Path, method: str) -> str:
    e = _csv(root, "03_long_tailed_dsb", "dsb_effect")
    row = e[(e.method == method) & (e.metric == "top1")].iloc[0]
    return estimate(row.diff_mean, row.ci_low, row.ci_high)


for _method in ("LDAM-DRW", "Balanced Softmax", "CDB-CE"):
    fact(f"03.dsb_effect.{_method.replace(' ', '_')}")(lambda root, _m=_method: _dsb_effect(root, _m))


def _selection(root: Path) -> pd.DataFrame:
    return _csv(root, "03_long_tailed_dsb", "selection_rules")


@fact("03.selection.optimism")
def _03_selection_optimism(root: Path) -> str:
    """The smallest and largest mean optimism of best-on-test over the last epoch, across the main methods."""
    o = _selection(root).optimism_mean
    return f"{o.min():.2f} to {o.max():.2f}"


@fact("03.selection.heldout_minus_last")
def _03_selection_heldout(root: Path) -> str:
    """The range of (held-out-chosen − last epoch) means across the main methods, in points."""
    t = _selection(root)
    gap = t.heldout_chosen_mean - t.last_mean
    return f"{signed(gap.min())} to {signed(gap.max())}"


@fact("04.max_z")
def _04_max_z(root: Path) -> str:
    return f"{_csv(root, '04_imbalance_taxonomy', 'monte_carlo_check').z.abs().max():.2f}"


def _02_difference(root: Path, row: int) -> str:
    p = _csv(root, "02_scale_and_bias", "primary_test").iloc[row]
    return estimate(p.difference, p.low, p.high)


# the primary row (S against N), then the exploratory one (S against the count-only curve)
for _row, _name in enumerate(("02.primary.diff", "02.count_curve.diff")):
    fact(_name)(lambda root, _r=_row: _02_difference(root, _r))


@fact("02.primary.verdict")
def _02_primary_verdict(root: Path) -> str:
    return str(_csv(root, "02_scale_and_bias", "primary_test").iloc[0].verdict)


def _01_primary(root: Path) -> pd.Series:
    claims = _csv(root, "01_marginal_effect", "claims")
    return claims[claims.claim.str.startswith("(c′)")].iloc[0]


@fact("01.primary.detail")
def _01_primary_detail(root: Path) -> str:
    boot = _csv(root, "01_marginal_effect", "correlations_bootstrap")
    row = boot[boot.predictor == "summed_volume"].iloc[0]
    return estimate(row.diff_mean, row.diff_lo95, row.diff_hi95, 3)


@fact("01.primary.verdict")
def _01_primary_verdict(root: Path) -> str:
    return str(_01_primary(root).verdict)


# ---------------------------------------------------------------------------------------------------------
# checking and writing


def marked(text: str) -> list[tuple[str, str]]:
    """(name, value as written) of every marked number in ``text``."""
    return [(m["name"], m["value"]) for m in MARKER.finditer(text)]


def differences(paths=TEXTS, root: Path = REFERENCE) -> list[str]:
    """'file: name: written X, the CSVs give Y' for every marked number that differs; unknown names too."""
    out = []
    for path in paths:
        for name, value in marked(Path(path).read_text()):
            if name not in FACTS:
                out.append(f"{Path(path).name}: {name}: no such number (semscale.findings.FACTS)")
                continue
            now = FACTS[name](root)
            if value != now:
                out.append(f"{Path(path).name}: {name}: written {value!r}, the CSVs give {now!r}")
    return out


def rewrite(path: Path, root: Path = REFERENCE) -> int:
    """Put the CSVs' value in every marked number of ``path``; returns how many changed."""
    text = Path(path).read_text()
    changed = 0

    def put(m):
        nonlocal changed
        now = FACTS[m["name"]](root)
        changed += now != m["value"]
        return f"<!--n:{m['name']}-->{now}<!--/n-->"

    new = MARKER.sub(put, text)
    if changed:
        write_bytes_atomic(Path(path), new.encode())
    return changed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="rewrite every marked number from the reference CSVs")
    args = parser.parse_args(argv)
    if args.write:
        for path in TEXTS:
            if changed := rewrite(path):
                print(f"{path.relative_to(REPO)}: {changed} number(s) rewritten")
        return 0
    problems = differences()
    print("\n".join(problems) or f"every marked number agrees with the reference CSVs ({len(FACTS)} known)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
