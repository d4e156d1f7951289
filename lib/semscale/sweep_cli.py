"""``python -m semscale.sweep``: train a notebook's runs where the accelerator is, bring the records back, render here.

    python -m semscale.sweep --profile gpu --notebook 03 [--deadline 480] [--root DIR] [--stack auto] [--list]
    python -m semscale.sweep pack --out DIR [--root DIR] [--profile gpu --notebook 03]   # records, no weights
    python -m semscale.sweep unpack DIR/runs-*.tar.gz [--root DIR]                         # into the run cache
    ./run_all.sh --profile gpu                                                            # renders, trains nothing
    python -m semscale.sweep --profile gpu --notebook 03 --rehearse                       # all of it, on the CPU

The points are the ones the notebook itself builds: its study module's ``grids`` over the notebook's parameters
under the profile (:func:`semscale.profiles.parameters`), section by section, most important first; runs already in
the cache are read back, interrupted ones resume. ``--deadline SECONDS`` stops the sweep that many seconds after
the start as Ctrl-C would: running runs save their checkpoint, finished runs are kept, nothing new starts (exit
status 3: the sweep is unfinished; the same command later resumes it). The root is ``--root`` or the run cache
(``$SEMSCALE_RUNS``, :func:`semscale.cache.runs_dir`).

``--stack K|auto`` trains compatible runs K at a time as one network (:mod:`semscale.stack`; auto: 16 on CUDA, 1 on
the CPU, where stacking was measured slower).

``--rehearse`` runs the whole path on this machine with the profile's grid shrunk (``REHEARSALS``: a tiny subset,
2 epochs, one seed where the chapter allows): train into a fresh root in stacks of ``REHEARSAL_STACK``, pack, unpack into another fresh root, render
the notebook from that root with training forbidden, and check that rendering added no run.

Imports on the training path: torch, numpy, pandas, scipy, PyYAML, tqdm, filelock and the study modules'
matplotlib and seaborn, all on the GPU host; papermill and Jupyter only for ``--rehearse``'s rendering, submitit
only for Slurm sweeps.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from . import cache, data, pipeline, profiles, sweep, transfer
from .study import bias, longtail, marginal

STUDY_MODULES = {"01_marginal_effect": marginal, "02_scale_and_bias": bias, "03_long_tailed_dsb": longtail}
TINY_LT = {"dataset": "cifar10-jpeg75", "train_counts": [40, 28, 20, 14, 10, 8, 6, 5, 4, 4]}  # 139 images, IF 10
# what --rehearse changes in a profile's parameters: the same sections and code, a tiny subset and 2 epochs
REHEARSALS = {
    "03_long_tailed_dsb": {
        "settings": [TINY_LT],
        "methods": ["CE"], "other_methods": ["Post-hoc LA"], "seeds": [0], "primary_seeds": [0, 1],
        "epochs": 2, "dsb_stage_epochs": 1, "eval_every": 0,
        "ablation_setting": TINY_LT,
        "ablation_seeds": [0], "ablation_stage_epochs": [1], "ablation_alphas": [2.0], "s_prime_alpha": None,
        "ablation_reductions": ["weighted_mean"],
        "balanced_settings": [{"dataset": "cifar10-jpeg75", "train_per_class": 10}], "balanced_seeds": [0],
        "drift_setting": TINY_LT,
        "jobs": 1, "threads": None, "interactive": False,
    },
}
UNFINISHED = 3  # exit status of a sweep stopped at its deadline


def notebook_stem(notebook: str) -> str:
    (path,) = profiles.select(profiles.notebook_paths(), notebook)[:1]
    if path.stem not in STUDY_MODULES:
        raise SystemExit(f"{path.stem} trains no runs; the notebooks that do: {', '.join(STUDY_MODULES)}")
    return path.stem


def study_grids(stem: str, params: dict) -> dict[str, list[sweep.Point]]:
    """The notebook's runs by section, as its study module builds them from ``params``."""
    return STUDY_MODULES[stem].grids(params)


def _points(grids: dict[str, list[sweep.Point]]) -> list[sweep.Point]:
    return [p for section in grids.values() for p in section]


def _deadline(seconds: float | None) -> threading.Timer | None:
    """A timer that stops this process's sweep as SIGTERM does (checkpoints kept) after ``seconds``."""
    if seconds is None:
        return None
    timer = threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGTERM))
    timer.daemon = True
    timer.start()
    return timer


def train(stem: str, params: dict, root: Path, *, jobs: int | None = None, threads: int | None = None,
          deadline: float | None = None, stack: int | str = 1, log=print) -> bool:
    """Train what the notebook's grid lacks in ``root``, most important section first. True when every run is
    complete; False when the deadline stopped the sweep (what is finished is kept, the rest resumes next time).
    ``stack``: members per stacked network (:mod:`semscale.stack`; "auto": by device, 1 on the CPU)."""
    grids = study_grids(stem, params)
    log(f"{stem} under profile {params['profile']}: " + ", ".join(f"{k} {len(v)}" for k, v in grids.items())
        + f" points -> {root}")
    timer = _deadline(deadline)
    try:
        sweep.run(_points(grids), root, jobs=jobs or params.get("jobs") or 1,
                  threads=threads or params.get("threads"), stack=stack, log=log)
    except sweep.SweepInterrupted as stop:
        fired = timer is not None and not timer.is_alive()  # else a signal from outside stopped it
        log(f"deadline of {deadline:g} s reached: {stop}" if fired else str(stop))
        return False
    finally:
        if timer:
            timer.cancel()
    return True


def listing(stem: str, params: dict, root: Path) -> str:
    """Per section (a run counts in the first section that lists it): runs, complete in ``root``, and what is left
    to train in run-epochs and training images (a second stage counts nothing: its first stage trains)."""
    labels, seen, lines = {}, set(), []
    for section, points in study_grids(stem, params).items():
        done = {r.name for r in sweep.cached(points, root)}
        mine = {cache.run_name(c): c for c in (p.config() for p in points)}
        mine = {name: c for name, c in mine.items() if name not in seen}
        seen |= set(mine)
        epochs = images = 0
        for name, c in mine.items():
            if name in done or c.second_stage != "none":
                continue
            if c.dataset not in labels:
                labels[c.dataset] = data.load(c.dataset, "train").labels
            epochs += c.epochs
            images += c.epochs * len(pipeline.select_subset(c, labels[c.dataset])[0].indices)
        lines.append(f"{section:>12}: {len(mine):3d} runs, {len(done & set(mine)):3d} complete; to train: {epochs:6d} "
                     f"run-epochs, {images / 1e6:7.1f} M images")
    return "\n".join(lines)


#: The rehearsal trains in stacks of this many runs, as the GPU does (``--stack auto`` there), though the CPU would not.
REHEARSAL_STACK = 4


def rehearse(stem: str, profile: str, work: Path, log=print) -> None:
    """Train the profile's grid shrunk (``REHEARSALS``) in stacks into ``work/there``, pack, unpack into ``work/here``, render
    the notebook from there with training forbidden (the runner, in a process of its own: papermill stays off the
    training path) into ``work/results``; SystemExit if any step fails or rendering added a run."""
    if stem not in REHEARSALS:
        raise SystemExit(f"no rehearsal is defined for {stem}; there is one for: {', '.join(REHEARSALS)}")
    params = profiles.parameters(stem, profile, REHEARSALS[stem])
    there, here = work / "there", work / "here"
    if not train(stem, params, there, stack=REHEARSAL_STACK, log=log):
        raise SystemExit("rehearsal: the training step did not finish")
    archives = transfer.pack(there, work / "packed")
    placed = transfer.unpack(archives, here)
    log(f"rehearsal: packed into {len(archives)} archive(s) ({sum(a.stat().st_size for a in archives) / 2**10:.0f} KiB), "
        f"unpacked: {_tally(placed)}")
    before = {p.name for p in here.iterdir()}
    overrides = [f"--param={k}={json.dumps(v)}" for k, v in {**REHEARSALS[stem], "runs_dir": str(here)}.items()]
    started = time.perf_counter()
    rendered = subprocess.run([sys.executable, "-m", "semscale.runner", "--profile", profile, "--only", stem,
                               "--render-only", "--results", str(work / "results"), *overrides],
                              capture_output=True, text=True)
    added = sorted({p.name for p in here.iterdir()} - before)
    executed = work / "results" / profile / f"{stem}.ipynb"
    if rendered.returncode or added:
        raise SystemExit(f"rehearsal: rendering {stem} failed ({rendered.stdout.strip().splitlines()[-1:] or added}); "
                         f"executed copy: {executed}")
    log(f"rehearsal: {stem} rendered from the unpacked records without training in "
        f"{(time.perf_counter() - started) / 60:.1f} min -> {executed}")


def _tally(placed: dict[str, str]) -> str:
    """"9 added, 1 kept": how many runs :func:`semscale.transfer.unpack` placed each way."""
    counts = collections.Counter(placed.values())
    return ", ".join(f"{counts[outcome]} {outcome}" for outcome in sorted(counts))


def _root(path: str | None) -> Path:
    return Path(path) if path else cache.runs_dir()


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["pack"]:
        parser = argparse.ArgumentParser(prog="python -m semscale.sweep pack", description="write the complete runs' "
                                         "record files (no weights) as tar.gz archives of at most --max-mb each")
        parser.add_argument("--out", required=True, help="folder for runs-NN.tar.gz")
        parser.add_argument("--root", help="the run folder (default: the run cache)")
        parser.add_argument("--profile", choices=profiles.PROFILES, help="with --notebook: only that notebook's runs")
        parser.add_argument("--notebook")
        parser.add_argument("--max-mb", type=float, default=transfer.MAX_BYTES / 2**20)
        args = parser.parse_args(argv[1:])
        if bool(args.profile) != bool(args.notebook):
            parser.error("--profile and --notebook go together")
        names = None
        if args.notebook:
            stem = notebook_stem(args.notebook)
            names = [r.name for r in sweep.cached(_points(study_grids(stem, profiles.parameters(stem, args.profile))),
                                                  _root(args.root))]
        archives = transfer.pack(_root(args.root), args.out, names, max_bytes=int(args.max_mb * 2**20))
        print(f"{len(archives)} archive(s) in {args.out}: " + ", ".join(f"{a.name} {a.stat().st_size / 2**20:.1f} MiB"
                                                                      for a in archives))
        return 0
    if argv[:1] == ["unpack"]:
        parser = argparse.ArgumentParser(prog="python -m semscale.sweep unpack", description="put packed runs into "
                                         "the run cache (a complete run there is kept, an unfinished one set aside)")
        parser.add_argument("archives", nargs="+")
        parser.add_argument("--root", help="the run folder (default: the run cache)")
        args = parser.parse_args(argv[1:])
        missing = [a for a in args.archives if not Path(a).is_file()]
        if missing:
            parser.error(f"no such archive: {missing[0]}")
        placed = transfer.unpack(args.archives, _root(args.root))
        print(_tally(placed))
        return 0 if not any(v.startswith("damaged") for v in placed.values()) else 1
    parser = argparse.ArgumentParser(prog="python -m semscale.sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", required=True, choices=profiles.PROFILES)
    parser.add_argument("--notebook", required=True, help="its stem or number: 01, 02 or 03")
    parser.add_argument("--root", help="the run folder (default: the run cache)")
    parser.add_argument("--deadline", type=float, help="stop cleanly after this many seconds (checkpoints kept)")
    parser.add_argument("--jobs", type=int, help="runs at once (default: the notebook's)")
    parser.add_argument("--threads", type=int, help="threads per run (default: the notebook's)")
    parser.add_argument("--stack", default="auto", type=lambda v: v if v == "auto" else int(v),
                        help="runs per stacked network: a number, or auto (by device: 1 on the CPU; needs --jobs 1)")
    parser.add_argument("--list", action="store_true", help="say what the grid holds and what is left to train")
    parser.add_argument("--rehearse", action="store_true", help="train a tiny version here, pack, unpack, render")
    args = parser.parse_args(argv)
    stem = notebook_stem(args.notebook)
    if args.rehearse:
        work = Path(args.root) if args.root else Path(tempfile.mkdtemp(prefix="semscale-rehearsal-"))
        rehearse(stem, args.profile, work)
        return 0
    params = profiles.parameters(stem, args.profile)
    if args.list:
        print(listing(stem, params, _root(args.root)))
        return 0
    started = time.perf_counter()
    jobs = args.jobs or params.get("jobs") or 1
    if jobs > 1 and args.stack not in (1, "auto"):
        parser.error(f"--stack {args.stack} trains in one process: it needs --jobs 1 (the notebook's jobs are {jobs})")
    finished = train(stem, params, _root(args.root), jobs=jobs, threads=args.threads, deadline=args.deadline,
                     stack=args.stack if jobs == 1 else 1)
    print(f"{stem}: {'complete' if finished else 'stopped at the deadline'} after {time.perf_counter() - started:.0f} s")
    return 0 if finished else UNFINISHED
