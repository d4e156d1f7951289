"""Run records between machines: train where the accelerator is, render where you are.

    archives = transfer.pack(root, out_dir)          # every complete run's record files, no weights, as runs-NN.tar.gz
    transfer.unpack(archives, cache.runs_dir())      # into the local cache: "added", "kept" or "replaced" per run

A packed run is its folder without ``*.pt`` (weights, checkpoints): run.json, per_class.csv, epochs.csv,
pool_history.csv and any other record file, enough for every notebook that reads runs (:mod:`semscale.results`)
and for the cache to read it back as complete (:func:`semscale.cache.inspect_run` needs no weights). Only what
needs the weights afterwards (a second stage not trained with its first, features of the final network) needs
the run trained here. Archives hold whole runs and stay under ``max_bytes`` each (16 MiB is what the device tool
brings back per file). Unpacking never overwrites a complete run; an unfinished folder of the same name is set
aside (``<name>.replaced-<time>``) for the complete one, and an archive member that is no plain file inside its
run's folder is refused.
"""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
import time
from pathlib import Path

from .cache import LOCK_FILE, inspect_run, run_lock, set_aside
from .records import write_bytes_atomic

LEFT_BEHIND = (".pt", ".lock")  # weights, checkpoints (*.pt, *.pt.leftover-*) and lock files never travel
MAX_BYTES = 15 * 2**20


def record_files(folder: Path) -> list[Path]:
    """The files of a run folder that travel: all but weights, checkpoints and the lock."""
    return sorted(p for p in folder.iterdir() if p.is_file() and not any(s in p.name for s in LEFT_BEHIND))


def _archive(folders: list[Path]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for folder in folders:
            for path in record_files(folder):
                tar.add(path, arcname=f"{folder.name}/{path.name}", recursive=False)
    return buffer.getvalue()


def pack(root, out_dir, names=None, *, max_bytes: int = MAX_BYTES, prefix: str = "runs") -> list[Path]:
    """Write the complete runs of ``root`` (or only those in ``names``) to ``out_dir/<prefix>-NN.tar.gz``, each
    archive under ``max_bytes`` (a group that comes out larger is split in two; a single run larger than that is
    an error). Returns the archives written (none when there is no complete run)."""
    root, out_dir = Path(root), Path(out_dir)
    wanted = None if names is None else set(names)
    folders = [p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")
               and (wanted is None or p.name in wanted) and inspect_run(p).complete]
    if wanted is not None and len(folders) < len(wanted):
        missing = sorted(wanted - {p.name for p in folders})
        raise ValueError(f"pack: {len(missing)} named run(s) are not complete in {root}, e.g. {missing[0]}")
    blobs, pending = [], [folders] if folders else []
    while pending:
        group = pending.pop(0)
        blob = _archive(group)
        if len(blob) <= max_bytes:
            blobs.append(blob)
        elif len(group) == 1:
            raise ValueError(f"pack: the records of {group[0].name} alone take {len(blob) / 2**20:.1f} MiB "
                             f"compressed, more than max_bytes ({max_bytes / 2**20:.1f} MiB)")
        else:
            half = len(group) // 2
            pending[:0] = [group[:half], group[half:]]
    out_dir.mkdir(parents=True, exist_ok=True)
    return [write_bytes_atomic(out_dir / f"{prefix}-{i:02d}.tar.gz", blob) for i, blob in enumerate(blobs)]


def _checked_members(tar: tarfile.TarFile, archive: Path) -> list[tarfile.TarInfo]:
    members = tar.getmembers()
    for m in members:
        parts = Path(m.name).parts
        if not m.isfile() or len(parts) != 2 or m.name.startswith("/") or ".." in parts or parts[1].endswith(LEFT_BEHIND):
            raise ValueError(f"unpack: {archive} holds {m.name!r}, which is no record file of a run "
                             f"(<run>/<file>, no weights): not a semscale.transfer archive; nothing was unpacked from it")
    return members


def unpack(archives, root) -> dict[str, str]:
    """Put the runs of ``archives`` into ``root``. Per run: ``added``; ``kept`` where ``root`` already holds it
    complete (never overwritten); ``replaced`` where ``root`` held it unfinished or damaged (that folder's files
    are set aside first); ``damaged: <why>`` where the archive's copy does not read back (left out)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    outcome = {}
    for archive in map(Path, archives):
        with tempfile.TemporaryDirectory(dir=root, prefix=".unpack-") as tmp:
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(tmp, members=_checked_members(tar, archive), filter="data")
            for staged in sorted(Path(tmp).iterdir()):
                outcome[staged.name] = _place(staged, root / staged.name)
    return outcome


def _place(staged: Path, dest: Path) -> str:
    state = inspect_run(staged)
    if not state.complete:
        return f"damaged: {state.problem or 'no complete run'}"
    with run_lock(dest):
        if inspect_run(dest).complete:
            return "kept"
        held = [p for p in dest.iterdir() if p.name != LOCK_FILE]
        if held:
            set_aside(dest, f"replaced-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")  # the folder stays
        for path in sorted(staged.iterdir(), key=lambda p: p.name == "run.json"):  # the record last: complete at once
            os.replace(path, dest / path.name)  # the staging folder is inside root: one file system
        return "replaced" if held else "added"
