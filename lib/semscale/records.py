"""Atomic result files and the provenance every result carries."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[2]  # the checkout (lib/semscale/records.py)
_UMASK = os.umask(0o022)
os.umask(_UMASK)

PACKAGES = ("torch", "torchvision", "numpy", "pandas", "scikit-learn", "seaborn", "matplotlib", "papermill")


class DiskFull(OSError):
    """A result file could not be written because its file system is full (or over quota)."""


def _atomic_write(path: str | os.PathLike, write) -> Path:
    """Write through a temporary file in the same folder, then rename: readers never see half a file.

    A full disk raises :class:`DiskFull` naming the file (the old file, if any, is kept)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        _raise_if_full(e, path)
        raise
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the permissions open() would
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            _raise_if_full(e, path)
        raise
    return path


def _raise_if_full(error: OSError, path: Path) -> None:
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        raise DiskFull(error.errno, f"disk full at {path}: free some space there (or point SEMSCALE_RUNS elsewhere) "
                                    f"and run again; what was written before is kept") from error


def write_bytes_atomic(path, data: bytes) -> Path:
    return _atomic_write(path, lambda f: f.write(data))


def write_json_atomic(path, obj) -> Path:
    text = json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"
    return write_bytes_atomic(path, text.encode())


def write_csv_atomic(path, frame: pd.DataFrame, **to_csv_kwargs) -> Path:
    to_csv_kwargs.setdefault("index", False)
    return write_bytes_atomic(path, frame.to_csv(**to_csv_kwargs).encode())


def save_torch_atomic(path, obj) -> Path:
    """torch.save through memory, so that a failed write is the file system's OSError (torch's own writer reports
    a full disk as ``unexpected pos``)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return write_bytes_atomic(path, buffer.getbuffer())


def git_commit(repo: str | os.PathLike | None = None) -> str:
    """The checkout's commit, with '+dirty' when tracked files differ from it; 'unknown' outside git."""
    cwd = Path(repo) if repo else Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def package_versions(names=PACKAGES) -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), or the platform's processor where there is no /proc/cpuinfo."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device=None) -> str:
    device = torch.device(device or "cpu")
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu: {cpu_model()} ({platform.machine()}), {os.cpu_count()} cores, {torch.get_num_threads()} threads"


def source_sha256() -> str:
    """sha256 over the ``semscale`` package's Python sources (names and contents): the code that made a result,
    also where git does not tell (an uncommitted change, an installed copy)."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).resolve().parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def run_record(config, protocol: dict, described: dict, device, *, started: str, wall_seconds: float,
               train_seconds: float, img_per_s: float, final: dict, **extra) -> dict:
    """run.json of a finished run, first or second stage: what ran (``config``, a TrainConfig, and its ``protocol``),
    on what (``described``: seed, dataset, variant, subset, classes, normalisation, loss, parameters, engine), where
    (provenance, device, threads), when and how fast, and the last epoch's ``final`` metrics; ``extra`` keys added."""
    return {
        "status": "complete",
        "config": dataclasses.asdict(config),
        "protocol": protocol,
        **described,
        **extra,
        **provenance(device),
        "device_type": torch.device(device).type,
        "threads": torch.get_num_threads(),
        "started": started,
        "finished": now(),
        "wall_seconds": wall_seconds,
        "train_seconds": train_seconds,
        "img_per_s": img_per_s,
        "final": final,
    }


def now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def provenance(device=None) -> dict:
    """What every result records about where it came from."""
    return {
        "git_commit": git_commit(),
        "source_sha256": source_sha256(),
        "packages": package_versions(),
        "device": device_name(device),
        "cpu_model": cpu_model(),
        "platform": platform.platform(),
        "argv": sys.argv,
    }
