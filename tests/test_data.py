"""semscale.data: the official-format loaders on tiny archives, checksums, the mirror, downloads and the cache."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import io
import os
import pickle
import tarfile
import time
import warnings

import numpy as np
import pytest
import torch
from semscale import data

REAL_MIRROR = os.environ.get("SEMSCALE_MIRROR")


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A private data dir and an empty mirror; returns (data_dir, mirror_dir)."""
    d, m = tmp_path / "data", tmp_path / "mirror"
    m.mkdir()
    monkeypatch.setenv("SEMSCALE_DATA", str(d))
    monkeypatch.setenv("SEMSCALE_MIRROR", str(m))
    return d, m


def cached_files(d):
    return sorted(p.name for p in (d / "cache").glob("*")) if (d / "cache").exists() else []


def test_load_names_the_valid_datasets_and_splits():
    with pytest.raises(ValueError, match="valid: mnist"):
        data.load("imagenet", "train")
    with pytest.raises(ValueError, match="valid: train, test"):
        data.load("mnist", "val")


# ---------------------------------------------------------------- official-format loaders on tiny archives


def _tar_gz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tf.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


def make_cifar_archive(kind: str, seed: int = 0):
    """A CIFAR python-pickle archive in the official layout; returns (bytes, expected dict)."""
    rng = np.random.default_rng(seed)
    if kind == "cifar10":
        folder, label_key, classes = "cifar-10-batches-py", "labels", [f"class{i}" for i in range(10)]
        batches = {"train": [(f"data_batch_{i}", 3) for i in range(1, 6)], "test": [("test_batch", 4)]}
        meta_name, meta = "batches.meta", {"label_names": classes, "num_cases_per_batch": 3, "num_vis": 3072}
    else:
        folder, label_key, classes = "cifar-100-python", "fine_labels", [f"fine{i}" for i in range(100)]
        batches = {"train": [("train", 7)], "test": [("test", 5)]}
        meta_name, meta = "meta", {"fine_label_names": classes, "coarse_label_names": [f"coarse{i}" for i in range(20)]}
    members = {f"{folder}/{meta_name}": pickle.dumps(meta, protocol=2)}
    expected = {}
    for split, parts in batches.items():
        images, labels = [], []
        for name, n in parts:
            x = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
            y = rng.integers(0, len(classes), size=n).tolist()
            entry = {"batch_label": name, label_key: y, "data": x, "filenames": [f"{i}.png" for i in range(n)]}
            if kind == "cifar100":
                entry["coarse_labels"] = [v // 5 for v in y]
            members[f"{folder}/{name}"] = pickle.dumps(entry, protocol=2)
            images.append(x.reshape(n, 3, 32, 32))
            labels += y
        expected[split] = (np.concatenate(images), np.array(labels))
    return _tar_gz(members), expected, tuple(classes)


def install(monkeypatch, mirror, kind, payload, md5=None):
    """Put `payload` into the mirror as the official archive; patch the registry md5 to `md5` (default: its own)."""
    res = data.REGISTRY[(kind, "archive")]
    folder = mirror / res.folder
    folder.mkdir(parents=True, exist_ok=True)
    (folder / res.filename).write_bytes(payload)
    if md5 != "official":
        monkeypatch.setitem(data.REGISTRY, (kind, "archive"), dataclasses.replace(res, md5=md5 or hashlib.md5(payload).hexdigest()))
    return folder / res.filename


@pytest.mark.parametrize("kind", ["cifar10", "cifar100"])
def test_cifar_round_trip(env, monkeypatch, kind):
    d, m = env
    payload, expected, classes = make_cifar_archive(kind)
    install(monkeypatch, m, kind, payload)
    for split in ("train", "test"):
        s = data.load(kind, split)
        images, labels = expected[split]
        assert s.images.dtype == torch.uint8 and s.labels.dtype == torch.int64
        assert tuple(s.images.shape) == images.shape
        np.testing.assert_array_equal(s.images.numpy(), images)
        np.testing.assert_array_equal(s.labels.numpy(), labels)
        assert s.classes == classes
    assert cached_files(d) == [f"{kind}-test.pt", f"{kind}-train.pt"]


def test_checksum_mismatch(env, monkeypatch):
    d, m = env
    payload, _, _ = make_cifar_archive("cifar10")
    install(monkeypatch, m, "cifar10", payload, md5="official")
    with pytest.raises(data.DatasetError) as err:
        data.load("cifar10", "train")
    msg = str(err.value)
    for part in ("c58f30108f718f92721af3b95e74349a", "SEMSCALE_MIRROR", "cifar-10-python.tar.gz",
                 "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", hashlib.md5(payload).hexdigest()):
        assert part in msg
    assert cached_files(d) == []


def test_truncated_archive(env, monkeypatch):
    d, m = env
    payload, _, _ = make_cifar_archive("cifar100")
    truncated = payload[: len(payload) // 2]
    install(monkeypatch, m, "cifar100", truncated)  # md5 matches, content is cut
    with pytest.raises(data.DatasetError, match="cannot decode") as err:
        data.load("cifar100", "test")
    assert "cifar-100-python.tar.gz" in str(err.value) and "SEMSCALE_MIRROR" in str(err.value)
    assert cached_files(d) == []


def test_missing_file_in_mirror(env):
    d, m = env
    with pytest.raises(data.DatasetError, match="missing from the mirror") as err:
        data.load("mnist", "train")
    assert "f68b3c2dcbeaaa9fbdd348bbdeb94873" in str(err.value) and "train-images-idx3-ubyte.gz" in str(err.value)
    assert cached_files(d) == []


def test_missing_file_offline_download(env, monkeypatch):
    d, _ = env
    monkeypatch.delenv("SEMSCALE_MIRROR")
    res = data.REGISTRY[("cifar10", "archive")]
    monkeypatch.setitem(data.REGISTRY, ("cifar10", "archive"), dataclasses.replace(res, urls=("http://127.0.0.1:9/cifar-10-python.tar.gz",)))
    with pytest.raises(data.DatasetError, match="download failed") as err:
        data.load("cifar10", "train")
    assert "SEMSCALE_MIRROR" in str(err.value) and res.md5 in str(err.value)
    assert list((d / "downloads").iterdir()) == []  # no partial file left behind
    assert cached_files(d) == []
    # a mirror-only dataset says so
    with pytest.raises(data.DatasetError, match="only distributed through the mirror"):
        data.load("cifar10-jpeg75", "test")


def test_verified_file_in_downloads_is_used(env, monkeypatch):
    d, _ = env
    monkeypatch.delenv("SEMSCALE_MIRROR")
    payload, expected, _ = make_cifar_archive("cifar10", seed=4)
    res = data.REGISTRY[("cifar10", "archive")]
    monkeypatch.setitem(data.REGISTRY, ("cifar10", "archive"), dataclasses.replace(res, md5=hashlib.md5(payload).hexdigest(), urls=()))
    (d / "downloads").mkdir(parents=True)
    (d / "downloads" / res.filename).write_bytes(payload)
    np.testing.assert_array_equal(data.load("cifar10", "test").labels.numpy(), expected["test"][1])


def test_cache_hit(env, monkeypatch):
    d, m = env
    payload, expected, _ = make_cifar_archive("cifar10", seed=1)
    archive = install(monkeypatch, m, "cifar10", payload)
    calls = []
    decode = data._DECODERS["cifar10"]
    monkeypatch.setitem(data._DECODERS, "cifar10", lambda *a, **k: calls.append(a[0]) or decode(*a, **k))
    first = data.load("cifar10", "train")
    assert calls == ["train"]
    archive.unlink()  # the cache no longer needs the source
    second = data.load("cifar10", "train")
    test = data.load("cifar10", "test")  # decoded and cached together with train
    assert calls == ["train"]
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)
    assert first.classes == second.classes
    np.testing.assert_array_equal(test.images.numpy(), expected["test"][0])
    # a changed expected checksum invalidates the cache
    res = data.REGISTRY[("cifar10", "archive")]
    monkeypatch.setitem(data.REGISTRY, ("cifar10", "archive"), dataclasses.replace(res, md5="0" * 32))
    with pytest.raises(data.DatasetError):
        data.load("cifar10", "train")


def test_a_read_only_data_folder_decodes_without_caching_and_warns_once(env, monkeypatch):
    d, m = env
    payload, expected, _ = make_cifar_archive("cifar10", seed=2)
    install(monkeypatch, m, "cifar10", payload)

    def read_only(path, obj):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(data, "save_torch_atomic", read_only)
    monkeypatch.setattr(data, "_UNWRITABLE", set())
    with pytest.warns(UserWarning, match=r"cannot cache decoded datasets in .*cache \(OSError: Read-only file system\)"):
        train = data.load("cifar10", "train")
    np.testing.assert_array_equal(train.images.numpy(), expected["train"][0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per folder: the second load decodes again, silently
        np.testing.assert_array_equal(data.load("cifar10", "test").labels.numpy(), expected["test"][1])
    assert cached_files(d) == []


def test_digits_without_mirror(tmp_path, monkeypatch):
    monkeypatch.delenv("SEMSCALE_MIRROR", raising=False)
    monkeypatch.setenv("SEMSCALE_DATA", str(tmp_path / "data"))
    train, test = data.load("digits", "train"), data.load("digits", "test")
    assert tuple(train.images.shape) == (1347, 1, 8, 8) and tuple(test.images.shape) == (450, 1, 8, 8)
    assert train.images.dtype == torch.uint8 and train.labels.dtype == torch.int64
    assert int(train.images.max()) == 255 and int(train.images.min()) == 0
    assert train.classes == tuple(str(i) for i in range(10))
    counts_train, counts_test = np.bincount(train.labels.numpy()), np.bincount(test.labels.numpy())
    assert np.all(np.abs(counts_test / (counts_train + counts_test) - 0.25) < 0.02)  # stratified
    assert torch.equal(data.load("digits", "test").images, test.images)  # deterministic
    from sklearn.datasets import load_digits

    d = load_digits()
    assert (len(train.labels) + len(test.labels)) == len(d.target)
    assert not (tmp_path / "data").exists()


@pytest.mark.skipif(not REAL_MIRROR, reason="SEMSCALE_MIRROR is not set")
def test_mnist_from_real_mirror(tmp_path, monkeypatch):
    monkeypatch.setenv("SEMSCALE_DATA", str(tmp_path / "data"))
    s = data.load("mnist", "train", progress=False)
    assert tuple(s.images.shape) == (60000, 1, 28, 28) and s.images.dtype == torch.uint8
    assert s.labels.dtype == torch.int64 and s.labels[:5].tolist() == [5, 0, 4, 1, 9]
    assert len(s.classes) == 10
    t = time.perf_counter()
    again = data.load("mnist", "train")
    assert time.perf_counter() - t < 1.0
    assert torch.equal(again.images, s.images)


# ---------------------------------------------------------------- JPEG datasets on tiny archives


def _jpeg(rng, size, gray=False) -> bytes:
    from PIL import Image

    shape = (size, size) if gray else (size, size, 3)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _pil_rgb(blob: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(blob)).convert("RGB")).transpose(2, 0, 1)


def test_cifar10_jpeg75_order(env, monkeypatch):
    d, m = env
    rng = np.random.default_rng(0)
    order = rng.integers(0, 10, size=40)
    members, expected_train = {}, []
    seen = [0] * 10
    for label in order:
        blob = _jpeg(rng, 32)
        members[f"cifar10-jpeg75/train/{data.CIFAR10_CLASSES[label]}/{seen[label]:04d}.jpg"] = blob
        seen[label] += 1
        expected_train.append(_pil_rgb(blob))
    expected_test, test_labels = [], []
    for label, cls in enumerate(data.CIFAR10_CLASSES):
        blobs = [_jpeg(rng, 32, gray=(k == 1)) for k in range(12)]  # 12 per class: 0010 must sort after 0009
        for k, blob in enumerate(blobs):
            members[f"cifar10-jpeg75/test/{cls}/{k:04d}.jpg"] = blob
        expected_test += [_pil_rgb(b) for b in blobs]
        test_labels += [label] * len(blobs)
    members["cifar10-jpeg75/train_labels_official_order.txt"] = "".join(f"{v}\n" for v in order).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as tf:
        for name in sorted(members, reverse=True):  # archive order must not matter
            info = tarfile.TarInfo(name)
            info.size = len(members[name])
            tf.addfile(info, io.BytesIO(members[name]))
    install(monkeypatch, m, "cifar10-jpeg75", buf.getvalue())
    train, test = data.load("cifar10-jpeg75", "train", progress=False), data.load("cifar10-jpeg75", "test", progress=False)
    assert train.labels.tolist() == order.tolist() and test.labels.tolist() == test_labels
    np.testing.assert_array_equal(train.images.numpy(), np.stack(expected_train))
    np.testing.assert_array_equal(test.images.numpy(), np.stack(expected_test))
    assert train.classes == data.CIFAR10_CLASSES and train.images.shape[1:] == (3, 32, 32)


def test_tiny_imagenet_official_zip_layout(env, monkeypatch):
    import zipfile

    d, m = env
    rng = np.random.default_rng(1)
    wnids = ["n02", "n01"]  # wnids.txt order, not sorted order, defines the labels
    root = "tiny-imagenet-200/"
    members = {
        root + "wnids.txt": b"n02\nn01\n",
        root + "words.txt": b"n00\tentity\nn01\tgoldfish, Carassius auratus\nn02\tcat\n",
    }
    expected_train = []
    for label, w in enumerate(wnids):
        for k in range(12):
            blob = _jpeg(rng, 64, gray=(k == 3))
            members[f"{root}train/{w}/images/{w}_{k}.JPEG"] = blob
            expected_train.append((label, k, _pil_rgb(blob)))
        members[f"{root}train/{w}/{w}_boxes.txt"] = b""
    annotations, expected_test = [], []
    for i in range(6):
        label = int(rng.integers(0, 2))
        blob = _jpeg(rng, 64)
        members[f"{root}val/images/val_{i}.JPEG"] = blob
        annotations.append(f"val_{i}.JPEG\t{wnids[label]}\t0\t0\t63\t63\n")
        expected_test.append((label, _pil_rgb(blob)))
    members[root + "val/val_annotations.txt"] = "".join(annotations).encode()
    members[root + "test/images/test_0.JPEG"] = _jpeg(rng, 64)  # the unlabeled split is ignored
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, blob in members.items():
            zf.writestr(name, blob)
    payload = buf.getvalue()
    res = data.REGISTRY[("tiny-imagenet", "archive")]
    (m / res.folder).mkdir()
    (m / res.folder / res.filename).write_bytes(payload)  # the official zip, not the mirror's tar.xz
    monkeypatch.setitem(data.REGISTRY, ("tiny-imagenet", "archive"), dataclasses.replace(res, md5=hashlib.md5(payload).hexdigest()))
    train = data.load("tiny-imagenet", "train", progress=False)
    test = data.load("tiny-imagenet", "test", progress=False)
    assert train.classes == ("cat", "goldfish")
    assert train.labels.tolist() == [t[0] for t in expected_train]
    np.testing.assert_array_equal(train.images.numpy(), np.stack([t[2] for t in expected_train]))
    assert test.labels.tolist() == [t[0] for t in expected_test]
    np.testing.assert_array_equal(test.images.numpy(), np.stack([t[1] for t in expected_test]))
    assert cached_files(d) == ["tiny-imagenet-test.pt", "tiny-imagenet-train.pt"]
