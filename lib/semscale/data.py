"""Datasets: download or mirror, verify, decode and cache.

``load(name, split)`` returns a :class:`Split` of uint8 ``(N, C, H, W)`` images, int64 labels and
class names for ``mnist``, ``fashion-mnist``, ``cifar10``, ``cifar100``, ``tiny-imagenet``,
``cifar10-jpeg75`` and ``digits``.

Where the files come from
    Every archive is listed once in :data:`REGISTRY` (official URL, md5, mirror folder). With the
    environment variable ``SEMSCALE_MIRROR`` set, files are read from
    ``$SEMSCALE_MIRROR/<folder>/<filename>`` and never from the network; otherwise they are
    downloaded from the official URL into ``<data>/downloads`` (temporary file, checksum, rename).
    The md5 is checked either way; a missing, corrupt or truncated file raises
    :class:`DatasetError` and is never used or cached.

Where the decoded arrays go
    ``<data>/cache/<name>-<split>.pt`` (``torch.save`` of the uint8 tensors, written atomically
    after a complete decode), read back memory-mapped. ``<data>`` is ``SEMSCALE_DATA`` or
    ``<repo>/data``. Relative paths in ``SEMSCALE_DATA`` and ``SEMSCALE_MIRROR`` are taken
    relative to the repository root (so ``SEMSCALE_MIRROR=../shared/data`` works from any folder).

Subsets of the training split are :mod:`semscale.subsets`' job.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import lzma
import os
import pickle
import shutil
import tarfile
import tempfile
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch

from .progress import show_progress
from .records import REPO, save_torch_atomic

DATASETS = ("mnist", "fashion-mnist", "cifar10", "cifar100", "tiny-imagenet", "cifar10-jpeg75", "digits")
SPLITS = ("train", "test")
CACHE_FORMAT = 1

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


class DatasetError(RuntimeError):
    """A dataset file is missing, fails its checksum, or cannot be decoded."""


class Split(NamedTuple):
    images: torch.Tensor  # uint8 (N, C, H, W)
    labels: torch.Tensor  # int64 (N,)
    classes: tuple[str, ...]


# --------------------------------------------------------------------------------------------
# Registry of files: one row per file. `splits` says which splits need the file; `mirror_filename`
# and `mirror_md5` describe the mirror's copy where it is a different file from the official one.
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Resource:
    dataset: str
    role: str
    filename: str
    md5: str
    urls: tuple[str, ...]  # official URLs, tried in order; empty: the file exists only on the mirror
    folder: str  # folder under SEMSCALE_MIRROR
    splits: tuple[str, ...] = SPLITS
    mirror_filename: str | None = None
    mirror_md5: str | None = None

    def candidates(self) -> list[tuple[str, str]]:
        """(filename, md5) pairs accepted in the mirror folder, preferred first."""
        out = []
        if self.mirror_filename:
            out.append((self.mirror_filename, self.mirror_md5 or self.md5))
        out.append((self.filename, self.md5))
        return out


def _registry() -> dict[tuple[str, str], Resource]:
    from torchvision import datasets as tvd

    rows: list[Resource] = []
    for name, cls in (("mnist", tvd.MNIST), ("fashion-mnist", tvd.FashionMNIST)):
        for filename, md5 in cls.resources:
            split = "train" if filename.startswith("train") else "test"
            kind = "images" if "images" in filename else "labels"
            urls = tuple(m + filename for m in cls.mirrors)
            rows.append(Resource(name, f"{split}-{kind}", filename, md5, urls, name, (split,)))
    for name, cls in (("cifar10", tvd.CIFAR10), ("cifar100", tvd.CIFAR100)):
        rows.append(Resource(name, "archive", cls.filename, cls.tgz_md5, (cls.url,), name))
    rows.append(
        Resource(
            "tiny-imagenet", "archive", "tiny-imagenet-200.zip", "90528d7ca1a48142e341f4ef8d21d0de",
            ("http://cs231n.stanford.edu/tiny-imagenet-200.zip",), "tiny-imagenet-200",
            mirror_filename="tiny-imagenet-200.tar.xz", mirror_md5="cc5d60d7fc116ed423de0c39bde6468e",
        )
    )
    rows.append(
        Resource("cifar10-jpeg75", "archive", "cifar10-jpeg75.tar.xz", "7d7247c743c61eb34caa3eeb4d851274", (), "cifar10-jpeg75")
    )
    return {(r.dataset, r.role): r for r in rows}


#: (dataset, role) -> Resource. Tests may replace rows (e.g. with a tiny archive's md5).
REGISTRY: dict[tuple[str, str], Resource] = _registry()


def resources(name: str, split: str | None = None) -> list[Resource]:
    return [r for (d, _), r in REGISTRY.items() if d == name and (split is None or split in r.splits)]


# --------------------------------------------------------------------------------------------
# Paths
# --------------------------------------------------------------------------------------------


def _env_path(var: str) -> Path | None:
    value = os.environ.get(var)
    if not value:
        return None
    path = Path(value).expanduser()
    return path if path.is_absolute() else (REPO / path).resolve()


def data_dir() -> Path:
    """``$SEMSCALE_DATA`` or ``<repo>/data`` (relative paths are taken from the repository root)."""
    return _env_path("SEMSCALE_DATA") or REPO / "data"


def mirror_dir() -> Path | None:
    """``$SEMSCALE_MIRROR`` resolved, or None when unset."""
    return _env_path("SEMSCALE_MIRROR")


def cache_path(name: str, split: str) -> Path:
    return data_dir() / "cache" / f"{name}-{split}.pt"


# --------------------------------------------------------------------------------------------
# Fetching and verifying files
# --------------------------------------------------------------------------------------------


def _md5(path: Path) -> str:
    from torchvision.datasets.utils import calculate_md5

    return calculate_md5(str(path))


def _help(res: Resource, problem: str, path: Path | None = None) -> DatasetError:
    mirror = os.environ.get("SEMSCALE_MIRROR")
    url = " or ".join(res.urls) if res.urls else "none (this file is only distributed through the mirror)"
    wanted = ", ".join(f"{f} (md5 {m})" for f, m in res.candidates())
    lines = [
        f"{res.dataset}: {problem}",
        f"  file: {path if path is not None else res.filename}",
        f"  expected md5: {res.md5} for {res.filename}"
        + (f"; the mirror's {res.mirror_filename} has md5 {res.mirror_md5}" if res.mirror_filename else ""),
        f"  official URL: {url}",
        f"  SEMSCALE_MIRROR: {mirror!r} (resolved: {mirror_dir()})" if mirror else "  SEMSCALE_MIRROR: not set",
        "  what to do: "
        + (
            f"put {wanted} into $SEMSCALE_MIRROR/{res.folder}/, or unset SEMSCALE_MIRROR to download from the official URL"
            if mirror
            else ("check the network connection and retry, or " if res.urls else "")
            + f"place {res.filename} into {data_dir() / 'downloads'}/, "
            f"or set SEMSCALE_MIRROR to a folder holding {res.folder}/{res.candidates()[0][0]}"
        )
        + ". A file that fails its checksum is never used: delete it and fetch it again.",
    ]
    return DatasetError("\n".join(lines))


def fetch(res: Resource) -> tuple[Path, str]:
    """Path of a verified copy of `res` (from the mirror, the download folder, or the network) and its md5."""
    mirror = mirror_dir()
    if mirror is not None:
        for filename, md5 in res.candidates():
            path = mirror / res.folder / filename
            if path.is_file():
                got = _md5(path)
                if got != md5:
                    raise _help(res, f"checksum mismatch in the mirror (got md5 {got}, expected {md5})", path)
                return path, md5
        raise _help(res, "file missing from the mirror", mirror / res.folder / res.candidates()[0][0])

    downloads = data_dir() / "downloads"
    dest = downloads / res.filename
    stale = None
    if dest.is_file():
        got = _md5(dest)
        if got == res.md5:
            return dest, res.md5
        stale = f"{dest} exists but fails its checksum (got md5 {got}); it is not used"
    if not res.urls:
        raise _help(res, stale or "file not downloaded and no official URL exists", dest)

    from torchvision.datasets.utils import download_url

    downloads.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(dir=downloads, prefix=f".{res.filename}.partial-"))
    errors = [stale] if stale else []
    try:
        for url in res.urls:
            try:
                download_url(url, str(tmpdir), res.filename)
            except Exception as e:  # noqa: BLE001 - any failure here means "try the next URL"
                errors.append(f"{url}: {type(e).__name__}: {e}")
                continue
            tmp = tmpdir / res.filename
            got = _md5(tmp)
            if got != res.md5:
                errors.append(f"{url}: checksum mismatch (got md5 {got})")
                tmp.unlink(missing_ok=True)
                continue
            os.replace(tmp, dest)
            return dest, res.md5
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    raise _help(res, "download failed: " + "; ".join(errors), dest)


# --------------------------------------------------------------------------------------------
# Archive helpers and decoders. Each decoder takes (split, {role: path}) and returns
# {split: Split} for every split it decoded (at least the requested one).
# --------------------------------------------------------------------------------------------

_DECODE_ERRORS = (
    tarfile.TarError, zipfile.BadZipFile, EOFError, lzma.LZMAError, zlib.error, gzip.BadGzipFile,
    pickle.UnpicklingError, KeyError, ValueError, TypeError, AssertionError, OSError, RuntimeError, IndexError,
)


def _read_members(path: Path, want: Callable[[str], bool], progress: bool = False) -> dict[str, bytes]:
    """Bytes of the archive members whose name passes `want`, read straight from the archive."""
    from tqdm.auto import tqdm

    out: dict[str, bytes] = {}
    bar = tqdm(desc=f"reading {path.name}", unit=" files", disable=not progress, leave=False)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                name = info.filename[2:] if info.filename.startswith("./") else info.filename
                if not info.is_dir() and want(name):
                    out[name] = zf.read(info)
                    bar.update()
    else:
        with tarfile.open(path, "r|*") as tf:  # streaming: one pass through the compressed file
            for member in tf:
                name = member.name[2:] if member.name.startswith("./") else member.name
                if member.isfile() and want(name):
                    out[name] = tf.extractfile(member).read()
                    bar.update()
    bar.close()
    return out


def _jpeg_decoder() -> Callable[[list[bytes]], list[torch.Tensor]]:
    """Batch JPEG -> RGB (3, H, W) uint8 decoder: torchvision.io (libjpeg-turbo) where available, else PIL.

    torchvision 0.29 deprecates its image decoders in favour of TorchCodec; both paths give the same
    pixels (libjpeg with default settings), checked against PIL in the tests.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            from torchvision.io import ImageReadMode, decode_jpeg
    except ImportError:  # pragma: no cover - future torchvision without image decoding
        decode_jpeg = None

    def with_torchvision(blobs):
        tensors = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in blobs]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return decode_jpeg(tensors, mode=ImageReadMode.RGB)

    def with_pil(blobs):
        from PIL import Image

        return [torch.from_numpy(np.asarray(Image.open(io.BytesIO(b)).convert("RGB")).transpose(2, 0, 1).copy()) for b in blobs]

    return with_torchvision if decode_jpeg is not None else with_pil


def _decode_jpegs(blobs: Sequence[bytes], names: Sequence[str], size: tuple[int, int], desc: str, progress: bool) -> torch.Tensor:
    """Decode JPEGs to RGB uint8 (N, 3, H, W) in batches, with a progress bar."""
    from tqdm.auto import tqdm

    decode = _jpeg_decoder()
    n, (h, w) = len(blobs), size
    out = torch.empty((n, 3, h, w), dtype=torch.uint8)
    batch = 2048
    with tqdm(total=n, desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for start in range(0, n, batch):
            stop = min(start + batch, n)
            try:
                images = decode(blobs[start:stop])
            except (RuntimeError, OSError):
                images = []
                for name, blob in zip(names[start:stop], blobs[start:stop]):  # find the culprit
                    try:
                        images += decode([blob])
                    except (RuntimeError, OSError) as e:
                        raise ValueError(f"cannot decode {name}: {e}") from e
            for name, img in zip(names[start:stop], images):
                if tuple(img.shape) != (3, h, w):
                    raise ValueError(f"{name} decodes to shape {tuple(img.shape)}, expected (3, {h}, {w})")
            out[start:stop] = torch.stack(images)
            bar.update(stop - start)
    return out


def _decode_idx(split: str, paths: dict[str, Path]) -> dict[str, tuple]:
    from torchvision.datasets.mnist import read_image_file, read_label_file

    with tempfile.TemporaryDirectory() as tmp:
        arrays = {}
        for kind in ("images", "labels"):
            raw = Path(tmp) / kind
            raw.write_bytes(gzip.decompress(paths[f"{split}-{kind}"].read_bytes()))
            arrays[kind] = (read_image_file if kind == "images" else read_label_file)(str(raw))
    images, labels = arrays["images"].unsqueeze(1).contiguous(), arrays["labels"].long()
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
    return {split: (images, labels)}


def _decode_mnist(split, paths):
    from torchvision.datasets import MNIST

    (images, labels), = _decode_idx(split, paths).values()
    return {split: Split(images, labels, tuple(MNIST.classes))}


def _decode_fashion(split, paths):
    from torchvision.datasets import FashionMNIST

    (images, labels), = _decode_idx(split, paths).values()
    return {split: Split(images, labels, tuple(FashionMNIST.classes))}


def _cifar_pickles(path: Path, folder: str, batches: dict[str, list[str]], meta: str, label_key: str, names_key: str):
    wanted = {f"{folder}/{b}" for bs in batches.values() for b in bs} | {f"{folder}/{meta}"}
    members = _read_members(path, lambda n: n in wanted)
    missing = sorted(wanted - members.keys())
    if missing:
        raise KeyError(f"archive lacks {', '.join(missing)}")
    load = lambda name: pickle.loads(members[f"{folder}/{name}"], encoding="latin1")  # noqa: E731
    classes = tuple(load(meta)[names_key])
    out = {}
    for split, names in batches.items():
        entries = [load(b) for b in names]
        data = np.concatenate([np.asarray(e["data"], dtype=np.uint8).reshape(-1, 3, 32, 32) for e in entries])
        labels = np.concatenate([np.asarray(e[label_key], dtype=np.int64) for e in entries])
        if len(data) != len(labels):
            raise ValueError(f"{split}: {len(data)} images but {len(labels)} labels")
        if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
            raise ValueError(f"{split}: labels outside 0..{len(classes) - 1}")
        out[split] = Split(torch.from_numpy(np.ascontiguousarray(data)), torch.from_numpy(labels), classes)
    return out


def _decode_cifar10(split, paths):
    batches = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
    return _cifar_pickles(paths["archive"], "cifar-10-batches-py", batches, "batches.meta", "labels", "label_names")


def _decode_cifar100(split, paths):
    return _cifar_pickles(paths["archive"], "cifar-100-python", {"train": ["train"], "test": ["test"]}, "meta", "fine_labels", "fine_label_names")


def _decode_tiny_imagenet(split, paths, progress=True):
    root = "tiny-imagenet-200/"

    def want(name: str) -> bool:
        return name.startswith(root) and (
            name.endswith(".txt") and name.count("/") == 1
            or name == root + "val/val_annotations.txt"
            or name.endswith(".JPEG") and (name.startswith(root + "train/") or name.startswith(root + "val/"))
        )

    members = _read_members(paths["archive"], want, progress)
    for f in ("wnids.txt", "words.txt", "val/val_annotations.txt"):
        if root + f not in members:
            raise KeyError(f"archive lacks {root + f}")
    wnids = members[root + "wnids.txt"].decode().split()
    words = dict(line.split("\t", 1) for line in members[root + "words.txt"].decode().splitlines() if "\t" in line)
    classes = tuple(words[w].split(",")[0].strip() for w in wnids)
    index = {w: i for i, w in enumerate(wnids)}

    train = []  # (wnid order, image number, name, label)
    for name in members:
        if name.startswith(root + "train/") and name.endswith(".JPEG"):
            wnid, stem = name.split("/")[2], Path(name).stem
            train.append((index[wnid], int(stem.rsplit("_", 1)[1]), name))
    train.sort()
    test = []
    for line in members[root + "val/val_annotations.txt"].decode().splitlines():
        if line.strip():
            fname, wnid = line.split("\t")[:2]
            test.append((index[wnid], root + "val/images/" + fname))

    empty = sorted(set(range(len(wnids))) - {t[0] for t in train})
    if empty:
        raise ValueError(f"no training images for {', '.join(wnids[i] for i in empty[:5])}")
    if not test:
        raise ValueError("val_annotations.txt lists no images")
    out = {}
    for s, names, labels in (
        ("train", [t[2] for t in train], [t[0] for t in train]),
        ("test", [t[1] for t in test], [t[0] for t in test]),
    ):
        images = _decode_jpegs([members[n] for n in names], names, (64, 64), f"tiny-imagenet {s}", progress)
        out[s] = Split(images, torch.tensor(labels, dtype=torch.int64), classes)
    return out


def _decode_cifar10_jpeg75(split, paths, progress=True):
    root = "cifar10-jpeg75/"
    order_file = root + "train_labels_official_order.txt"
    members = _read_members(paths["archive"], lambda n: n.startswith(root) and (n.endswith(".jpg") or n == order_file), progress)
    if order_file not in members:
        raise KeyError(f"archive lacks {order_file}")
    order = [int(x) for x in members[order_file].decode().split()]
    seen = [0] * len(CIFAR10_CLASSES)
    train_names = []
    for label in order:
        train_names.append(f"{root}train/{CIFAR10_CLASSES[label]}/{seen[label]:04d}.jpg")
        seen[label] += 1
    n_train_files = sum(1 for n in members if n.startswith(root + "train/"))
    if n_train_files != len(train_names):
        raise ValueError(f"archive has {n_train_files} training images, the label file {len(train_names)}")
    test, test_labels = [], []
    for label, cls in enumerate(CIFAR10_CLASSES):
        names = sorted((n for n in members if n.startswith(f"{root}test/{cls}/")), key=lambda n: int(Path(n).stem))
        test += names
        test_labels += [label] * len(names)
    if not test or sum(1 for n in members if n.startswith(root + "test/")) != len(test):
        raise ValueError(f"archive has {len(test)} test images in the ten class folders and others elsewhere")
    out = {}
    for s, names, labels in (("train", train_names, order), ("test", test, test_labels)):
        images = _decode_jpegs([members[n] for n in names], names, (32, 32), f"cifar10-jpeg75 {s}", progress)
        out[s] = Split(images, torch.tensor(labels, dtype=torch.int64), CIFAR10_CLASSES)
    return out


def _load_digits(split: str) -> Split:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    images = np.rint(d.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)[:, None]
    labels = d.target.astype(np.int64)
    train, test = train_test_split(np.arange(len(labels)), test_size=0.25, stratify=labels, random_state=0)
    idx = np.sort(train if split == "train" else test)
    classes = tuple(str(int(c)) for c in d.target_names)
    return Split(torch.from_numpy(np.ascontiguousarray(images[idx])), torch.from_numpy(labels[idx]), classes)


_DECODERS: dict[str, Callable] = {
    "mnist": _decode_mnist,
    "fashion-mnist": _decode_fashion,
    "cifar10": _decode_cifar10,
    "cifar100": _decode_cifar100,
    "tiny-imagenet": _decode_tiny_imagenet,
    "cifar10-jpeg75": _decode_cifar10_jpeg75,
}
_PROGRESS = {"tiny-imagenet", "cifar10-jpeg75"}


# --------------------------------------------------------------------------------------------
# load
# --------------------------------------------------------------------------------------------


def _read_cache(path: Path, accepted: dict[str, set[str]]) -> Split | None:
    if not path.is_file():
        return None
    try:
        obj = torch.load(path, weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - an unreadable cache is rebuilt
        return None
    if not isinstance(obj, dict) or obj.get("format") != CACHE_FORMAT:
        return None
    sources = obj.get("sources", {})
    if set(sources) != set(accepted) or any(sources[r] not in accepted[r] for r in accepted):
        return None
    return Split(obj["images"], obj["labels"], tuple(obj["classes"]))


def load(name: str, split: str, *, progress: bool | None = None) -> Split:
    """Images (uint8, N×C×H×W), labels (int64) and class names of one split of a dataset.

    progress: progress bars while decoding the JPEG archives; None (default) draws them only on a
    terminal or in a live notebook (``semscale.progress.show_progress``), never in headless logs.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    if name == "digits":
        return _load_digits(split)

    needed = resources(name, split)
    accepted = {r.role: {md5 for _, md5 in r.candidates()} for r in needed}
    cached = _read_cache(cache_path(name, split), accepted)
    if cached is not None:
        return cached

    fetched = {r.role: fetch(r) for r in needed}
    paths = {role: p for role, (p, _) in fetched.items()}
    try:
        if progress is None:
            progress = show_progress()
        kwargs = {"progress": progress} if name in _PROGRESS else {}
        decoded = _DECODERS[name](split, paths, **kwargs)
    except _DECODE_ERRORS as e:
        res = needed[0]
        raise _help(res, f"cannot decode the archive (truncated or corrupt?): {type(e).__name__}: {e}", paths[res.role]) from e

    for s, part in decoded.items():
        roles = {r.role for r in resources(name, s)}
        if not roles <= fetched.keys():
            continue  # decoded from files another split does not use: never the case today
        obj = {
            "format": CACHE_FORMAT,
            "images": part.images.contiguous(),
            "labels": part.labels.to(torch.int64).contiguous(),
            "classes": list(part.classes),
            "sources": {role: fetched[role][1] for role in roles},
        }
        try:
            save_torch_atomic(cache_path(name, s), obj)
        except OSError as e:  # a read-only or full data folder: the decoded arrays serve this run all the same
            _warn_uncached(cache_path(name, s).parent, e)
    return decoded[split]


_UNWRITABLE: set[Path] = set()


def _warn_uncached(folder: Path, error: OSError) -> None:
    """Warn once per folder that decoded arrays cannot be cached there (each run then decodes again)."""
    if folder in _UNWRITABLE:
        return
    _UNWRITABLE.add(folder)
    warnings.warn(f"cannot cache decoded datasets in {folder} ({type(error).__name__}: {error.strerror or error}); "
                  f"training goes on, but every run decodes the archives again: set SEMSCALE_DATA to a writable folder",
                  UserWarning, stacklevel=3)
