"""The command line, and the one way to train a config: ``train_run`` (both stages of a two-stage config).

    python -m semscale.train --dataset mnist --imbalance 100 --model cnn --loss ce --dsb --epochs 2 --out runs/x
    python -m semscale.train --config exp.yaml --seeds 0 1 2 --out runs/y      # YAML values, flags override them
    python -m semscale.train ... --out runs/x --resume                          # continue from the checkpoint

Every ``TrainConfig`` field is a flag (``--batch-size 64``, ``--dsb/--no-dsb``, ``--resize none``). A config with a
``second_stage`` trains its first stage (the same config without it) into the sibling folder of ``--out`` that the
first stage's own config names (``cache.run_name``), then the second stage into ``--out``: a sweep and the CLI keep
first stages in the same place, so one CE run serves the plain method and every second stage on it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import shlex
import sys
import typing
from pathlib import Path

import filelock
import pandas as pd
import yaml

from . import cache, data, records
from .checkpoint import TrainingInterrupted
from .config import CHOICES, PRESET_FIELDS, ConfigError, TrainConfig, base_type, field_types, first_stage
from .second_stage import train_second_stage
from .train import TrainingDiverged, train

_PRESET = "set by the protocol"
# one line: an error then reads as that line and the message, not the usage of every config field
USAGE = "%(prog)s --dataset NAME [--FIELD VALUE ...] --out DIR [--resume] [--seeds S ...]   (--help: every field)"
SUMMARY_METRICS = ("top1", "balanced", "many", "medium", "few", "train_loss", "train_acc")


def first_stage_dir(config: TrainConfig, out_dir) -> Path:
    """Where a two-stage config's first stage lives: the sibling of ``out_dir`` its own config names."""
    return Path(out_dir).parent / cache.run_name(first_stage(config))


def train_run(config: TrainConfig, out_dir, resume: bool = False) -> dict:
    """Train ``config`` into ``out_dir`` and return its record; the CLI and ``sweep.run`` both come here.

    A one-stage config is :func:`semscale.train.train`. A two-stage config trains (resumes, or reads back) its first
    stage in :func:`first_stage_dir`, then its second stage into ``out_dir``. The first stage, which other configs
    share, is trained holding its folder's lock (:func:`semscale.cache.run_lock`); ``out_dir``'s lock is the
    caller's (``sweep.train_one``, :func:`main`).
    """
    if config.second_stage == "none":
        return train(config, out_dir, resume)
    first_dir = first_stage_dir(config, out_dir)
    started = (first_dir / "checkpoint.pt").exists() or (first_dir / "run.json").exists()
    with locked(first_dir):  # resume: also reads a finished first stage back and moves a damaged one aside
        train(first_stage(config), first_dir, resume=started)
    return train_second_stage(config, out_dir, first_dir, resume=resume)


@contextlib.contextmanager
def locked(folder):
    """Hold the run folder's lock; if another process holds it, say so and wait for it."""
    lock = cache.run_lock(folder)
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        print(f"waiting for {folder}: another process is training it", file=sys.stderr, flush=True)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def run_seeds(config: TrainConfig, seeds, out_dir, resume: bool = False) -> dict:
    """Train ``config`` once per seed into out_dir/seed_<k>/; write summary.csv and summary.json (mean ± sample std)."""
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds must be distinct and at least one, got {seeds}")
    out = Path(out_dir)
    finals = {s: train_run(dataclasses.replace(config, seed=s), out / f"seed_{s}", resume)["final"] for s in seeds}
    table = pd.DataFrame.from_dict(finals, orient="index")[list(SUMMARY_METRICS)]
    summary = pd.DataFrame({
        "metric": SUMMARY_METRICS,
        "mean": table.mean().to_numpy(),
        "std": table.std(ddof=1).to_numpy(),
        "n": table.count().to_numpy(),
        **{f"seed_{s}": table.loc[s].to_numpy() for s in seeds},
    })
    records.write_csv_atomic(out / "summary.csv", summary)
    result = {"config": {**dataclasses.asdict(config), "seed": None}, "seeds": seeds, "std": "sample (ddof=1)",
              "metrics": {m: {"mean": r["mean"], "std": r["std"], "n": int(r["n"]), "values": {str(s): r[f"seed_{s}"] for s in seeds}}
                          for m, r in summary.set_index("metric").iterrows()}}
    records.write_json_atomic(out / "summary.json", result)
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m semscale.train", argument_default=argparse.SUPPRESS, usage=USAGE,
                                     description="Train one run (or one per seed) of the semscale engine.")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--config", type=Path, help="YAML file of config fields; explicit flags override it")
    parser.add_argument("--seeds", type=int, nargs="+", help="one run per seed into OUT/seed_<k>/ plus summary.csv/json")
    parser.add_argument("--resume", action="store_true", help="continue from OUT's checkpoint")
    hints = field_types()
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        base, _ = base_type(hints[f.name])
        default = _PRESET if f.name in PRESET_FIELDS else f.default
        help_text = f.metadata["help"] + ("" if default is dataclasses.MISSING else f" (default: {default})")
        help_text = help_text.replace("%", "%%")  # argparse formats help with %: "23 % of the steps" is no format
        if base is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, help=help_text)
        elif typing.get_origin(base) is tuple:
            parser.add_argument(flag, dest=f.name, type=int, nargs="+", help=help_text)
        else:  # parsed by TrainConfig (numbers, 'none')
            parser.add_argument(flag, dest=f.name, choices=CHOICES.get(f.name), help=help_text)
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Dataclass defaults <- protocol preset <- YAML file <- explicit flags."""
    values = {}
    if getattr(args, "config", None) is not None:
        try:
            loaded = yaml.safe_load(args.config.read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"cannot read config file {args.config}: {e}") from e
        if not isinstance(loaded, dict):
            raise ConfigError(f"{args.config} must hold a mapping of config fields")
        values = {str(k).replace("-", "_"): v for k, v in loaded.items()}
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(f"unknown config field(s) {unknown} in {args.config}; valid: {', '.join(names)}")
    values.update({k: v for k, v in vars(args).items() if k in names})
    if "dataset" not in values:
        raise ConfigError(f"--dataset is required (in the flags or the config file); valid: {', '.join(data.DATASETS)}")
    return TrainConfig(**values)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    resume = getattr(args, "resume", False)
    try:
        config = config_from_args(args)
        if getattr(args, "seeds", None) is not None:
            with locked(args.out):
                result = run_seeds(config, args.seeds, args.out, resume)
            lines = [f"{m}: {v['mean']:.4f} ± {v['std']:.4f} (n={v['n']})" for m, v in result["metrics"].items()]
            print(f"{len(result['seeds'])} seeds -> {args.out}/summary.csv\n" + "\n".join(lines))
        else:
            with locked(args.out):
                record = train_run(config, args.out, resume)
            final = record["final"]
            print(f"{record['dataset_variant']} -> {args.out}: " + ", ".join(f"{k} {v:.4f}" for k, v in final.items())
                  + f"; {record['img_per_s']:.0f} img/s, {record['wall_seconds']:.1f} s")
    except (ConfigError, FileExistsError, data.DatasetError) as e:
        parser.error(str(e))
    except (TrainingDiverged, cache.DamagedRun, records.DiskFull) as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 1
    except TrainingInterrupted as e:
        command = " ".join(shlex.quote(a) for a in ["python", "-m", "semscale.train", *argv] if a != "--resume")
        print(f"{e}\nresume with: {command} --resume", file=sys.stderr)
        return 128 + e.signum if e.signum else 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
