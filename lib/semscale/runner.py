"""Execute the study's notebooks headlessly with papermill under a parameter profile.

    python -m semscale.runner --profile smoke [--only 00] [--param key=value ...]     # what ./run_all.sh runs

Profiles live in ``notebooks/profiles/<profile>.yaml``, keyed by notebook stem. Each notebook's
executed copy goes to ``results/<profile>/<stem>.ipynb`` and its figures and tables to
``results/<profile>/<stem>/`` (the notebook receives that folder as ``out_dir``).

``--publish`` copies a successful run's tables (CSV), figures (PNG) and executed notebook (outputs included, so a
reader on the web sees each result under its cell) to ``reference/<profile>/<stem>/`` with a provenance.json (commit, source hash, packages, device, parameters, minutes; taken when the run started, so
the published files themselves never make the commit "+dirty"), replacing what was
published before except the hand-written FINDINGS.md; files over 5 MB are left out with a note. In the smoke
profile the executed notebook itself is what gets published: ``reference/smoke/<stem>.ipynb``, which
``./run_all.sh --test`` re-runs with nbval (see ``publish_executed_copy``).

A ``--param`` name that no selected notebook has, or a value of another type than the parameter's default
(``epochs=ten`` where the default is ``4``), is an error raised before any notebook runs; so is a profile value
of the wrong type or a profile that is no valid YAML. An override goes only to the notebooks that have that
parameter. The kernels run with ``SEMSCALE_HEADLESS=1``, so they draw no progress bars into the executed copies.

``--live`` runs the notebooks as a reader's live kernel would (``interactive=True``: widgets drawn; progress bars on)
into ``results/<profile>-live/``, and reports every output a reader would see go wrong (``output_problems``: an
error, text on stderr such as a warning, also inside a widget's output): the check that the notebooks run live cleanly.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pandas as pd
import papermill
from traitlets.config import Config
import yaml

from . import records
from .profiles import NOTEBOOKS, PROFILES, notebook_paths, read_profile, select
from .records import REPO, write_csv_atomic

REFERENCE = REPO / "reference"
PUBLISH_MAX_BYTES = 5 * 2**20
RENDER_ONLY_PROFILES = ("gpu",)  # trained where the accelerator is (python -m semscale.sweep), rendered here
RUNNER_PARAMS = ("profile", "out_dir")  # set by the runner for every notebook, never by --param
IGNORE_OUTPUT = "NBVAL_IGNORE_OUTPUT"  # nbval's comment marker; such a cell's output is left out of a published copy
RUN_METADATA = ("start_time", "end_time", "duration", "input_path", "output_path")  # papermill's, per notebook


@dataclass
class NotebookRun:
    notebook: str
    ok: bool
    minutes: float
    executed: Path
    outputs: Path
    error: str = ""
    params: dict | None = None
    provenance: dict | None = None  # records.provenance() taken before the run: the code that ran, not what publish wrote
    problems: list[str] | None = None  # output_problems of the executed copy


def load_profile(profile: str, notebooks_dir: Path = NOTEBOOKS) -> dict[str, dict]:
    """The profile's parameters per notebook stem (:func:`semscale.profiles.read_profile`), checked against each
    notebook's parameters cell."""
    profile_params = read_profile(profile, notebooks_dir)
    path = notebooks_dir / "profiles" / f"{profile}.yaml"
    stems = {p.stem: p for p in notebook_paths(notebooks_dir)}
    for stem, params in profile_params.items():
        if stem not in stems:
            raise SystemExit(f"{path}: {stem!r} is not a notebook; notebooks are: {', '.join(stems)}")
        known = papermill.inspect_notebook(str(stems[stem]))
        unknown = set(params) - set(known)
        if unknown:
            raise SystemExit(f"{path}: {stem} has no parameter(s) {sorted(unknown)}; its parameters are {sorted(known)}")
        for name, value in params.items():
            check_type(f"{path}: {stem}", name, value, known[name]["default"])
    return profile_params


def check_type(where: str, name: str, value, default: str) -> None:
    """SystemExit unless ``value`` has the type of the parameter's ``default`` (its source text, as papermill reads
    it): a number for a number, a string for a string, a list for a list, ... None, a default of None and a default
    that is no literal go with anything."""
    try:
        expected = ast.literal_eval(default)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return
    if expected is None or value is None:  # None often means "the default behaviour": take it for any parameter
        return
    kinds = {bool: (bool,), int: (int,), float: (int, float), str: (str,), list: (list, tuple), tuple: (list, tuple),
             dict: (dict,)}.get(type(expected))
    if kinds is None or (isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)):
        return
    raise SystemExit(f"{where}: {name} must be {_KIND_NAMES[type(expected)]} like the notebook's default {default}, "
                     f"got {value!r}")


_KIND_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string", list: "a list",
               tuple: "a list", dict: "a mapping"}


def check_overrides(paths: list[Path], overrides: dict) -> dict[str, set[str]]:
    """Each selected notebook's parameter names; SystemExit if an override names none of them."""
    parameters = {p.stem: papermill.inspect_notebook(str(p)) for p in paths}
    known = {stem: set(params) for stem, params in parameters.items()}
    valid = sorted(set().union(*known.values()) - set(RUNNER_PARAMS))
    for name, value in overrides.items():
        if name in RUNNER_PARAMS:
            raise SystemExit(f"--param {name}: {name!r} is set by the runner (use --profile); "
                             f"the selected notebooks' parameters are: {', '.join(valid)}")
        if not any(name in names for names in known.values()):
            raise SystemExit(f"--param {name}: no selected notebook has a parameter {name!r}; "
                             f"the selected notebooks' parameters are: {', '.join(valid)}")
        for stem, params in parameters.items():
            if name in params:
                check_type(f"--param {name}={value!r} for {stem}", name, value, params[name]["default"])
    return known


@contextlib.contextmanager
def _environment(name: str, value: str | None):
    """``os.environ[name] = value`` (None: unset) while the block runs (the papermill kernel inherits it), then as
    it was."""
    previous = os.environ.get(name)
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


def run_notebook(path: Path, params: dict, results_dir: Path, live: bool = False, render_only: bool = False) -> NotebookRun:
    """Execute one notebook headlessly (no progress bars: see ``semscale.progress``), or ``live`` with its bars.
    ``render_only``: its sweeps read runs back and train nothing (``semscale.sweep.RENDER_ONLY``; a missing run is
    the notebook's error, which names the command that trains it).

    The kernel talks over IPC sockets rather than TCP: a local kernel needs no network, and ipykernel warns once per
    notebook about unencrypted TCP otherwise (IPC needs POSIX sockets: TCP elsewhere)."""
    executed = results_dir / path.name
    outputs = results_dir / path.stem
    outputs.mkdir(parents=True, exist_ok=True)
    provenance = records.provenance()
    start = time.perf_counter()
    error = ""
    try:
        with _environment("SEMSCALE_HEADLESS", None if live else "1"), \
                _environment("SEMSCALE_RENDER_ONLY", "1" if render_only else None):
            papermill.execute_notebook(
                str(path), str(executed), parameters={**params, "out_dir": str(outputs)},
                cwd=str(path.parent), kernel_name="python3", progress_bar=False,
                config=Config({"KernelManager": {"transport": "ipc" if os.name == "posix" else "tcp"}}),
            )
    except papermill.PapermillExecutionError as exc:
        error = f"{exc.ename}: {exc.evalue}"
    minutes = (time.perf_counter() - start) / 60
    problems = output_problems(nbformat.read(executed, as_version=4)) if executed.exists() else []
    return NotebookRun(path.stem, not error, minutes, executed, outputs, error, params, provenance, problems)


def output_problems(notebook) -> list[str]:
    """What a reader would see go wrong in an executed notebook: "cell N: ..." for each error output and each text on
    stderr (warnings land there), in the cells' outputs and in the outputs that widgets hold (an ``interact``
    callback's figure or traceback goes to an Output widget, whose state nbclient keeps in the notebook's metadata)."""
    def problems_of(outputs, where: str) -> list[str]:
        found = []
        for output in outputs:
            if output.get("output_type") == "error":
                found.append(f"{where}: {output.get('ename')}: {output.get('evalue')}")
            elif output.get("output_type") == "stream" and output.get("name") == "stderr" and "".join(output.get("text", "")).strip():
                found.append(f"{where}: stderr: {''.join(output['text']).strip().splitlines()[0][:200]}")
        return found

    problems = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            problems += problems_of(cell.get("outputs", []), f"cell {index}")
    state = notebook.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    for model in state.values():
        problems += problems_of(model.get("state", {}).get("outputs", []), f"widget {model.get('model_name', '')}")
    return problems


def run_study(profile: str, only: str | None = None, overrides: dict | None = None,
              results_root: Path = REPO / "results", notebooks_dir: Path = NOTEBOOKS, live: bool = False,
              render_only: bool = False) -> list[NotebookRun]:
    """Run every selected notebook in order, going on past failures.

    ``overrides`` are checked against the selected notebooks' parameters before anything runs. ``live``: as a live
    kernel (``interactive=True`` where a notebook has it, progress bars on), into ``results/<profile>-live/``.
    """
    profile_params = load_profile(profile, notebooks_dir)
    results_dir = results_root / (f"{profile}-live" if live else profile)
    paths = select(notebook_paths(notebooks_dir), only)
    overrides = dict(overrides or {})
    known = check_overrides(paths, overrides)
    runs = []
    for path in paths:
        # Papermill would inject an unknown name anyway (it only logs "Passed unknown parameter"),
        # leaving a stray global in that notebook: pass each override only where it is a parameter.
        mine = {k: v for k, v in overrides.items() if k in known[path.stem]}
        params = {"profile": profile, **profile_params.get(path.stem, {}), **mine}
        if live and "interactive" in known[path.stem]:
            params["interactive"] = True
        print(f"[{profile}{' live' if live else ''}] running {path.name} ...", flush=True)
        runs.append(run_notebook(path, params, results_dir, live, render_only))
    write_csv_atomic(results_dir / "summary.csv", pd.DataFrame([vars(r) for r in runs]))
    return runs


def publish(run: NotebookRun, profile: str, reference_root: Path = REFERENCE) -> Path:
    """Copy a successful run's CSV tables and PNG figures to reference/<profile>/<stem>/ with provenance.json.

    In the smoke profile the reference is the executed notebook instead (``publish_executed_copy``): its tables are
    its outputs, and a reference folder of a smoke run would have no findings to hold.
    """
    if not run.ok:
        raise ValueError(f"{run.notebook} failed ({run.error}); only a successful run is published")
    if profile == "smoke":
        return publish_executed_copy(run, reference_root / profile)
    target = reference_root / profile / run.notebook
    target.mkdir(parents=True, exist_ok=True)
    for old in target.iterdir():
        if old.name != "FINDINGS.md" and old.is_file():
            old.unlink()
    copied, left_out = [], []
    for path in sorted([*run.outputs.glob("*.csv"), *run.outputs.glob("*.png")]):
        if path.stat().st_size > PUBLISH_MAX_BYTES:
            left_out.append(f"{path.name} ({path.stat().st_size / 2**20:.1f} MB)")
            continue
        shutil.copyfile(path, target / path.name)
        copied.append(path.name)
    copied.append(publish_executed_copy(run, target, keep_ignored=True).name)
    records.write_json_atomic(target / "provenance.json", {
        **(run.provenance or records.provenance()),
        "notebook": f"notebooks/{run.notebook}.ipynb",
        "profile": profile,
        "parameters": {k: v for k, v in (run.params or {}).items() if k != "out_dir"},
        "minutes": run.minutes,
        "date": time.strftime("%Y-%m-%d"),
        "command": f"./run_all.sh --profile {profile} --only {run.notebook}",
        "files": copied,
        "left_out": left_out,
    })
    return target


def publish_executed_copy(run: NotebookRun, folder: Path, keep_ignored: bool = False) -> Path:
    """Write the executed notebook to ``folder/<stem>.ipynb`` for nbval to re-run and compare, with its outputs and
    papermill's injected-parameters cell, and without what differs from one machine or run to the next
    (``keep_ignored``: the outputs of the ignored cells too, for a reader: a reference's executed copy).

    Absolute paths become relative to the copy: ``out_dir`` then still names ``results/<profile>/<stem>/`` when nbval
    runs the copy from its own folder, the checkout becomes ``../..`` and the home folder ``~``. Papermill's and the
    kernel's timestamps and durations go; so do the outputs of cells marked ``# NBVAL_IGNORE_OUTPUT``, which mark
    what changes from run to run (timings, the run cache's path, what the sweep trained or read back).
    """
    notebook = nbformat.read(run.executed, as_version=4)
    for key in RUN_METADATA:
        notebook.metadata.get("papermill", {}).pop(key, None)
    for cell in notebook.cells:
        cell.metadata.pop("execution", None)
        cell.metadata.pop("papermill", None)
        if cell.cell_type == "code" and has_marker(cell.source, IGNORE_OUTPUT) and not keep_ignored:
            cell.outputs = []
    relative = {str(run.outputs.resolve()): os.path.relpath(run.outputs.resolve(), folder.resolve()),
                str(REPO): os.path.relpath(REPO, folder.resolve()), str(Path.home()): "~"}
    copy = folder / f"{run.notebook}.ipynb"
    records.write_bytes_atomic(copy, (nbformat.writes(_replaced(notebook, relative)) + "\n").encode())
    return copy


def has_marker(source: str, marker: str) -> bool:
    """Whether a cell carries an nbval comment marker (a comment line holding just the marker, as nbval reads it)."""
    comments = (line.strip() for line in source.splitlines() if line.strip().startswith("#"))
    return any(comment.lstrip("#").strip() == marker for comment in comments)


def _replaced(node, replacements: dict[str, str]):
    """``node`` (a notebook, or any part of one) with every string's ``replacements`` made; images are left alone."""
    if isinstance(node, str):
        for old, new in replacements.items():
            node = node.replace(old, new)
        return node
    if isinstance(node, list):
        return [_replaced(item, replacements) for item in node]
    if isinstance(node, dict):
        return type(node)((key, value if key.startswith("image/") else _replaced(value, replacements))
                          for key, value in node.items())
    return node


def summary_text(runs: list[NotebookRun]) -> str:
    lines = [f"{'notebook':<36} {'status':<7} {'min':>6}  outputs"]
    for r in runs:
        lines.append(f"{r.notebook:<36} {'ok' if r.ok else 'FAILED':<7} {r.minutes:6.1f}  {r.outputs}")
        if r.error:
            lines.append(f"    error: {r.error}  (see {r.executed})")
        lines += [f"    {problem}" for problem in r.problems or []]
    failed = sum(not r.ok for r in runs)
    problems = sum(len(r.problems or []) for r in runs)
    lines.append(f"{len(runs) - failed} ok, {failed} failed" + (f"; {problems} output(s) with an error or a warning" if problems else ""))
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
    parser.add_argument("--publish", action="store_true", help="copy each successful notebook's tables and figures to reference/<profile>/")
    parser.add_argument("--live", action="store_true", help="run as a live kernel (widgets, progress bars) into "
                        "results/<profile>-live/ and list every output with an error or a warning")
    parser.add_argument("--results", default=str(REPO / "results"), help="where results/<profile>/ goes (default: the "
                        "repository's results/)")
    parser.add_argument("--render-only", action="store_true", help="train nothing: read every run from the cache (the "
                        f"default for the {', '.join(RENDER_ONLY_PROFILES)} profile, trained with python -m semscale.sweep)")
    args = parser.parse_args(argv)
    if args.live and args.publish:
        raise SystemExit("--live runs are checks, not references: drop --publish (or --live)")
    render_only = args.render_only or args.profile in RENDER_ONLY_PROFILES
    runs = run_study(args.profile, args.only, dict(args.param), live=args.live, render_only=render_only,
                     results_root=Path(args.results))
    print(summary_text(runs))
    if args.publish:
        for run in runs:
            if run.ok:
                print(f"published {run.notebook} -> {publish(run, args.profile)}")
    return 0 if all(r.ok and not (args.live and r.problems) for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
