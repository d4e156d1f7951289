"""Execute the study's notebooks headlessly with papermill under a parameter profile.

    python -m semscale.notebooks --profile smoke [--only 00] [--param key=value ...]

Profiles live in ``notebooks/profiles/<profile>.yaml``, keyed by notebook stem. Each notebook's
executed copy goes to ``results/<profile>/<stem>.ipynb`` and its figures and tables to
``results/<profile>/<stem>/`` (the notebook receives that folder as ``out_dir``).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import papermill
import yaml

from semscale.records import write_csv_atomic

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
PROFILES = ("smoke", "default", "paper")


@dataclass
class NotebookRun:
    notebook: str
    ok: bool
    minutes: float
    executed: Path
    outputs: Path
    error: str = ""


def notebook_paths(notebooks_dir: Path = NOTEBOOKS) -> list[Path]:
    return sorted(p for p in notebooks_dir.glob("[0-9]*.ipynb"))


def select(paths: list[Path], only: str | None) -> list[Path]:
    if only is None:
        return paths
    chosen = [p for p in paths if p.stem == only or p.stem.startswith(only) or p.name == only]
    if not chosen:
        raise SystemExit(f"--only {only!r} matches no notebook; choose from: {', '.join(p.stem for p in paths)}")
    return chosen


def load_profile(profile: str, notebooks_dir: Path = NOTEBOOKS) -> dict[str, dict]:
    """The profile's parameters per notebook stem, checked against each notebook's parameters cell."""
    if profile not in PROFILES:
        raise SystemExit(f"unknown profile {profile!r}; choose one of: {', '.join(PROFILES)}")
    path = notebooks_dir / "profiles" / f"{profile}.yaml"
    profile_params = yaml.safe_load(path.read_text()) or {}
    stems = {p.stem: p for p in notebook_paths(notebooks_dir)}
    for stem, params in profile_params.items():
        if stem not in stems:
            raise SystemExit(f"{path}: {stem!r} is not a notebook; notebooks are: {', '.join(stems)}")
        known = papermill.inspect_notebook(str(stems[stem]))
        unknown = set(params or {}) - set(known)
        if unknown:
            raise SystemExit(f"{path}: {stem} has no parameter(s) {sorted(unknown)}; its parameters are {sorted(known)}")
    return {stem: dict(params or {}) for stem, params in profile_params.items()}


def run_notebook(path: Path, params: dict, results_dir: Path) -> NotebookRun:
    executed = results_dir / path.name
    outputs = results_dir / path.stem
    outputs.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    error = ""
    try:
        papermill.execute_notebook(
            str(path), str(executed), parameters={**params, "out_dir": str(outputs)},
            cwd=str(path.parent), kernel_name="python3", progress_bar=False,
        )
    except papermill.PapermillExecutionError as exc:
        error = f"{exc.ename}: {exc.evalue}"
    minutes = (time.perf_counter() - start) / 60
    return NotebookRun(path.stem, not error, minutes, executed, outputs, error)


def run_study(profile: str, only: str | None = None, overrides: dict | None = None,
              results_root: Path = REPO / "results", notebooks_dir: Path = NOTEBOOKS) -> list[NotebookRun]:
    """Run every selected notebook in order, going on past failures."""
    profile_params = load_profile(profile, notebooks_dir)
    results_dir = results_root / profile
    runs = []
    for path in select(notebook_paths(notebooks_dir), only):
        params = {"profile": profile, **profile_params.get(path.stem, {}), **(overrides or {})}
        print(f"[{profile}] running {path.name} ...", flush=True)
        runs.append(run_notebook(path, params, results_dir))
    write_csv_atomic(results_dir / "summary.csv", pd.DataFrame([vars(r) for r in runs]))
    return runs


def summary_text(runs: list[NotebookRun]) -> str:
    lines = [f"{'notebook':<36} {'status':<7} {'min':>6}  outputs"]
    for r in runs:
        lines.append(f"{r.notebook:<36} {'ok' if r.ok else 'FAILED':<7} {r.minutes:6.1f}  {r.outputs}")
        if r.error:
            lines.append(f"    error: {r.error}  (see {r.executed})")
    failed = sum(not r.ok for r in runs)
    lines.append(f"{len(runs) - failed} ok, {failed} failed")
    return "\n".join(lines)


def parse_override(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"--param wants key=value, got {text!r}")
    return key, yaml.safe_load(value)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="default", choices=PROFILES)
    parser.add_argument("--only", help="run one notebook (its stem, number or file name)")
    parser.add_argument("--param", type=parse_override, action="append", default=[], help="override a parameter: key=value")
    args = parser.parse_args(argv)
    runs = run_study(args.profile, args.only, dict(args.param))
    print(summary_text(runs))
    return 0 if all(r.ok for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
