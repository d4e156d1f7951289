"""Tests of semscale.data: LDAM-exact long-tailed subsets, nested subsets, loaders, checksums, cache."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle
import tarfile
import time

import numpy as np
import pytest
import torch

from semscale import data

CIFAR10_LT_100 = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
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


# ---------------------------------------------------------------- LDAM reference (inline copy)


def ldam_reference(targets, cls_num, imb_factor, seed, imb_type="exp"):
    """IMBALANCECIFAR10.get_img_num_per_cls + gen_imbalanced_data of LDAM-DRW, returning indices."""
    np.random.seed(seed)
    img_max = len(targets) / cls_num
    img_num_per_cls = []
    if imb_type == "exp":
        for cls_idx in range(cls_num):
            num = img_max * (imb_factor ** (cls_idx / (cls_num - 1.0)))
            img_num_per_cls.append(int(num))
    else:
        for cls_idx in range(cls_num // 2):
            img_num_per_cls.append(int(img_max))
        for cls_idx in range(cls_num // 2):
            img_num_per_cls.append(int(img_max * imb_factor))
    targets_np = np.array(targets, dtype=np.int64)
    classes = np.unique(targets_np)
    selected = []
    for the_class, the_img_num in zip(classes, img_num_per_cls):
        idx = np.where(targets_np == the_class)[0]
        np.random.shuffle(idx)
        selected.append(idx[:the_img_num])
    return img_num_per_cls, np.concatenate(selected)


def balanced_labels(num_classes, per_class, seed=0):
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(num_classes), per_class))


def test_ldam_counts():
    assert data.long_tailed_counts(10, 100, 5000) == CIFAR10_LT_100
    assert sum(CIFAR10_LT_100) == 12406
    c100 = data.long_tailed_counts(100, 100, 500)
    assert (c100[0], c100[-1], len(c100)) == (500, 5, 100)
    for num_classes, n_max in ((10, 5000), (100, 500)):
        for imb in (10, 50, 100, 200):
            expected, _ = ldam_reference(np.repeat(np.arange(num_classes), n_max), num_classes, 1 / imb, 0)
            assert data.long_tailed_counts(num_classes, imb, n_max) == expected
    assert data.long_tailed_counts(10, 1, 5000) == [5000] * 10


def test_step_counts():
    assert data.long_tailed_counts(10, 10, 5000, "step") == [5000] * 5 + [500] * 5
    assert data.long_tailed_counts(5, 10, 100, "step") == [100, 100, 10, 10, 10]
    expected, _ = ldam_reference(np.repeat(np.arange(100), 500), 100, 1 / 100, 0, "step")
    assert data.long_tailed_counts(100, 100, 500, "step") == expected


@pytest.mark.parametrize(
    "num_classes,per_class,imb,seed,profile",
    [(10, 500, 100, 0, "exp"), (10, 300, 10, 3, "exp"), (100, 50, 50, 0, "exp"), (20, 40, 200, 7, "exp"), (10, 200, 10, 1, "step")],
)
def test_long_tailed_matches_ldam_loop(num_classes, per_class, imb, seed, profile):
    labels = balanced_labels(num_classes, per_class, seed=seed + 11)
    counts, reference = ldam_reference(labels.tolist(), num_classes, 1 / imb, seed, profile)
    sub = data.long_tailed_indices(labels, imb, profile=profile, seed=seed)
    np.testing.assert_array_equal(sub.indices, reference)
    assert sub.indices.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(labels[sub.indices], minlength=num_classes), counts)
    # the same from a torch tensor
    assert data.long_tailed_indices(torch.from_numpy(labels), imb, profile=profile, seed=seed).sha256 == sub.sha256


def test_long_tailed_cifar10_shape_and_explicit_n_max():
    labels = balanced_labels(10, 5000)
    sub = data.long_tailed_indices(labels, 100)
    assert np.bincount(labels[sub.indices]).tolist() == CIFAR10_LT_100
    sub = data.long_tailed_indices(labels, 100, n_max=1000)
    assert np.bincount(labels[sub.indices]).tolist() == data.long_tailed_counts(10, 100, 1000)
    with pytest.raises(ValueError, match="has 5000 samples"):
        data.long_tailed_indices(labels, 100, n_max=6000)


def test_global_rng_restored():
    np.random.seed(123)
    expected = np.random.rand(3)
    np.random.seed(123)
    data.long_tailed_indices(balanced_labels(10, 50), 10, seed=5)
    data.per_class_indices(balanced_labels(10, 50), [5] * 10, seed=5)
    np.testing.assert_array_equal(np.random.rand(3), expected)


def test_per_class_indices():
    mnist_like = np.random.default_rng(0).permutation(np.repeat(np.arange(10), [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]))
    for counts in (data.MNIST_LT_1, data.MNIST_LT_2):
        sub = data.per_class_indices(mnist_like, counts, seed=0)
        assert np.bincount(mnist_like[sub.indices]).tolist() == list(counts)
        assert len(set(sub.indices.tolist())) == len(sub.indices)
        # same scheme as LDAM's loop: seed, then per class shuffle and keep a prefix
        np.random.seed(0)
        ref = []
        for c, n in enumerate(counts):
            idx = np.where(mnist_like == c)[0]
            np.random.shuffle(idx)
            ref.append(idx[:n])
        np.testing.assert_array_equal(sub.indices, np.concatenate(ref))
    with pytest.raises(ValueError, match="class 5 has 5421 samples, 6000 asked"):
        data.per_class_indices(mnist_like, [10] * 5 + [6000] + [10] * 4)
    with pytest.raises(ValueError, match="9 counts given for 10 classes"):
        data.per_class_indices(mnist_like, [10] * 9)


def test_parameter_validation():
    labels = balanced_labels(10, 20)
    with pytest.raises(ValueError, match=">= 1"):
        data.long_tailed_indices(labels, 0.5)
    with pytest.raises(ValueError, match="valid: exp, step"):
        data.long_tailed_indices(labels, 10, profile="linear")
    with pytest.raises(ValueError, match="num_classes"):
        data.long_tailed_counts(1, 10, 100)
    with pytest.raises(ValueError, match="n_max"):
        data.long_tailed_counts(10, 10, 0)
    with pytest.raises(ValueError, match=r"1\.\.20"):
        data.nested_balanced_indices(labels, [10, 21])
    with pytest.raises(ValueError, match="valid: mnist"):
        data.load("imagenet", "train")
    with pytest.raises(ValueError, match="valid: train, test"):
        data.load("mnist", "val")


def test_nested_balanced_indices():
    labels = balanced_labels(10, 100, seed=2)
    labels = np.concatenate([labels, np.full(7, 3)])  # an unequal class does not matter
    sizes = [50, 10, 20, 100]
    subsets = data.nested_balanced_indices(labels, sizes, seed=1)
    assert list(subsets) == [10, 20, 50, 100]
    previous = set()
    for m, sub in subsets.items():
        assert np.bincount(labels[sub.indices], minlength=10).tolist() == [m] * 10
        assert len(set(sub.indices.tolist())) == 10 * m
        assert previous <= set(sub.indices.tolist())
        previous = set(sub.indices.tolist())
    again = data.nested_balanced_indices(labels, [20], seed=1)
    assert again[20].sha256 == subsets[20].sha256
    assert data.nested_balanced_indices(labels, [20], seed=2)[20].sha256 != subsets[20].sha256


def test_sha256_stability_and_sensitivity():
    sub = data.make_subset([0, 1, 2, 3, 4])
    assert sub.sha256 == hashlib.sha256(np.arange(5, dtype="<i8").tobytes()).hexdigest()
    assert sub.sha256 == "281b02b10f5f4997e5bf8c93343e6f2aa8bc81ffad6d6813c593181ebceda12a"
    assert data.indices_sha256(np.arange(5)) == sub.sha256
    assert data.make_subset(np.arange(5, dtype=np.int32)).sha256 == sub.sha256  # dtype-independent
    assert data.make_subset([0, 1, 2, 4, 3]).sha256 != sub.sha256  # order matters
    assert data.make_subset([0, 1, 2, 3, 5]).sha256 != sub.sha256
    # pinned digests: a change in the selection scheme shows up here
    labels = np.repeat(np.arange(10), 50)
    assert data.long_tailed_indices(labels, 10, seed=0).sha256 == PINNED_LT
    assert data.nested_balanced_indices(labels, [5], seed=0)[5].sha256 == PINNED_NESTED
    assert data.long_tailed_indices(labels, 10, seed=1).sha256 != PINNED_LT


PINNED_LT = "87673439d0c7c322da4fd57e02beb9c72bf0077ca2705a7aee710dffda27e876"
PINNED_NESTED = "ccdd8cbae7c8972139f0a83912bfc95e47739a287e4dcbeb2146786668f6a4d5"


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


def test_default_n_max_is_ldams_on_balanced_data_and_fits_every_class_otherwise():
    balanced = np.arange(5000) % 10
    assert data.default_n_max(balanced, 100) == 500.0  # LDAM's len / C
    mnist_counts = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    mnist_like = np.repeat(np.arange(10), mnist_counts)
    assert data.default_n_max(mnist_like, 100) == 5923.0  # len / C = 6000 would ask class 0 for more than it has
    assert data.default_n_max(mnist_like, 10, "step") == 5842.0  # the smallest head class (0..4)
    subset = data.long_tailed_indices(mnist_like, 100)
    assert np.bincount(mnist_like[subset.indices]).tolist() == data.long_tailed_counts(10, 100, 5923.0)
