"""Tests of semscale.scale against a float64 NumPy reference (singular values of the centred class)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from semscale import scale
from semscale.scale import (
    PIXEL_SCALES,
    class_centers,
    class_volumes,
    dsb_weights,
    imbalance,
    sample_features,
    sample_volume,
    volume,
)

# ---------------------------------------------------------------------------------------------
# reference


def ref_volume(Z, eps=1.0):
    """½ Σ_j log2(1 + d/(m ε²) σ_j²) over the singular values of the centred (m, d) class matrix."""
    Z = np.asarray(Z, dtype=np.float64)
    m, d = Z.shape
    if m == 0:
        return float("nan")
    s = np.linalg.svd(Z - Z.mean(axis=0), compute_uv=False)
    return 0.5 * float(np.sum(np.log2(1.0 + d / (m * eps**2) * s**2)))


def ref_volume_slogdet(Z, eps=1.0):
    """The printed formula with the d × d matrix, via slogdet (never det)."""
    Z = np.asarray(Z, dtype=np.float64)
    m, d = Z.shape
    Zc = Z - Z.mean(axis=0)
    sign, logdet = np.linalg.slogdet(np.eye(d) + d / (m * eps**2) * Zc.T @ Zc)
    assert sign > 0
    return 0.5 * logdet / math.log(2.0)


def rel(a, b):
    return abs(a - b) / abs(b)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def make_classes(rng, sizes, d, scales=None):
    feats, labels = [], []
    for c, m in enumerate(sizes):
        s = 1.0 if scales is None else scales[c]
        feats.append(s * rng.normal(size=(m, d)) + rng.normal(size=d))
        labels.append(np.full(m, c))
    X = np.concatenate(feats) if feats else np.zeros((0, d))
    y = np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64)
    perm = rng.permutation(len(y))
    return X[perm], y[perm]


# ---------------------------------------------------------------------------------------------
# volume: accuracy, forms, invariances


@pytest.mark.parametrize("m,d", [(2, 5), (7, 40), (40, 7), (64, 64), (300, 16), (5, 500)])
def test_volume_matches_references_float64(rng, m, d):
    Z = rng.normal(size=(m, d)) * rng.uniform(0.1, 3.0, size=d)
    r = ref_volume(Z)
    assert rel(ref_volume_slogdet(Z), r) < 1e-10  # the two references agree
    for form in ("auto", "gram", "scatter"):
        assert rel(volume(Z, form=form), r) < 1e-9
    assert rel(volume(torch.from_numpy(Z)), r) < 1e-9  # torch input


def test_volume_float32_inputs(rng):
    for m, d in [(10, 50), (200, 16), (50, 50)]:
        Z64 = rng.normal(size=(m, d))
        Z32 = Z64.astype(np.float32)
        r = ref_volume(Z64)
        # float32 input, float64 accumulation (default): exact up to the input's rounding
        assert rel(volume(Z32), ref_volume(Z32)) < 1e-9
        assert rel(volume(torch.from_numpy(Z32)), r) < 1e-4
        # float32 accumulation
        assert rel(volume(torch.from_numpy(Z32), dtype=torch.float32), r) < 1e-4
    # class_volumes on float32 inputs, both accumulations
    X, y = make_classes(rng, [30, 80, 5], 24)
    X32 = torch.from_numpy(X.astype(np.float32))
    refs = np.array([ref_volume(X[y == c]) for c in range(3)])
    for dtype in (torch.float64, torch.float32):
        v = class_volumes(X32, torch.from_numpy(y), 3, dtype=dtype)
        assert v.dtype == torch.float64
        np.testing.assert_allclose(v.numpy(), refs, rtol=1e-4)


@pytest.mark.parametrize("m,d", [(6, 30), (30, 6), (12, 12)])
def test_gram_and_scatter_forms_agree(rng, m, d):
    Z = 2.0 * rng.normal(size=(m, d))
    g, s = volume(Z, form="gram"), volume(Z, form="scatter")
    assert rel(g, s) < 1e-9
    X, y = make_classes(rng, [m, m // 2 + 1, 3], d)
    vg = class_volumes(X, y, 3, form="gram")
    vs = class_volumes(X, y, 3, form="scatter")
    np.testing.assert_allclose(vg.numpy(), vs.numpy(), rtol=1e-9)


def test_rotation_and_translation_invariance(rng):
    m, d = 25, 12
    Z = rng.normal(size=(m, d)) * np.linspace(0.2, 2.0, d)
    Q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    v = volume(Z)
    assert rel(volume(Z @ Q), v) < 1e-10
    assert rel(volume(Z + 50.0 * rng.normal(size=d)), v) < 1e-10
    assert rel(volume(Z @ Q + 7.0), v) < 1e-10
    # per class inside a batch: rotating/translating one class leaves all volumes unchanged
    X, y = make_classes(rng, [20, 9, 33], d)
    before = class_volumes(X, y, 3)
    X2 = X.copy()
    X2[y == 1] = X2[y == 1] @ Q - 3.0
    np.testing.assert_allclose(class_volumes(X2, y, 3).numpy(), before.numpy(), rtol=1e-10)


def test_volume_grows_with_scale(rng):
    Z = rng.normal(size=(15, 10))
    vols = [volume(s * Z) for s in (0.1, 0.5, 1.0, 2.0, 10.0)]
    assert all(a < b for a, b in zip(vols, vols[1:]))
    # and in a batch: scaling one class up raises only that class's volume
    X, y = make_classes(rng, [10, 10, 10], 6)
    v0 = class_volumes(X, y, 3)
    X2 = X.copy()
    mu = X2[y == 2].mean(axis=0)
    X2[y == 2] = mu + 3.0 * (X2[y == 2] - mu)
    v1 = class_volumes(X2, y, 3)
    assert v1[2] > v0[2]
    np.testing.assert_allclose(v1[:2].numpy(), v0[:2].numpy(), rtol=1e-12)


def test_eps(rng):
    Z = rng.normal(size=(20, 8))
    vols = [volume(Z, eps=e) for e in (0.1, 1.0, 10.0, 1000.0)]
    assert all(a > b for a, b in zip(vols, vols[1:]))
    for e in (0.5, 3.0, 1000.0):
        r = ref_volume(Z, eps=e)
        assert rel(volume(Z, eps=e), r) < 1e-9
        assert rel(volume(Z / e), r) < 1e-9  # eps only rescales the features
    X, y = make_classes(rng, [10, 30], 8)
    np.testing.assert_allclose(
        class_volumes(X, y, 2, eps=4.0).numpy(), [ref_volume(X[y == c], eps=4.0) for c in range(2)], rtol=1e-9
    )
    with pytest.raises(ValueError, match="eps"):
        volume(Z, eps=0.0)


# ---------------------------------------------------------------------------------------------
# class_volumes: batching


def test_class_volumes_equal_per_class_volume_unequal_sizes(rng):
    sizes = [1, 2, 5, 17, 64, 200, 3]  # both sides of d, and a singleton
    d = 32
    X, y = make_classes(rng, sizes, d, scales=rng.uniform(0.3, 3.0, size=len(sizes)))
    v = class_volumes(X, y, len(sizes))
    assert v.shape == (len(sizes),) and v.dtype == torch.float64 and v.device == torch.device("cpu")
    for c in range(len(sizes)):
        Zc = X[y == c]
        assert rel(v[c].item(), volume(Zc)) < 1e-9 if sizes[c] > 1 else v[c].item() == 0.0
        if sizes[c] > 1:
            assert rel(v[c].item(), ref_volume(Zc)) < 1e-9
    # torch inputs, labels of another integer dtype, forms forced
    vt = class_volumes(torch.from_numpy(X), torch.from_numpy(y).int(), len(sizes))
    np.testing.assert_array_equal(vt.numpy(), v.numpy())
    for form in ("gram", "scatter"):
        np.testing.assert_allclose(class_volumes(X, y, len(sizes), form=form).numpy(), v.numpy(), rtol=1e-9)


def test_single_sample_gives_zero(rng):
    assert volume(rng.normal(size=(1, 10))) == 0.0
    X = rng.normal(size=(3, 4))
    v = class_volumes(X, [0, 1, 1], 2)
    assert v[0].item() == 0.0 and v[1].item() > 0


def test_max_count(rng):
    X, y = make_classes(rng, [4, 9, 6], 5)
    full = class_volumes(X, y, 3)
    for mc in (9, 12):
        np.testing.assert_allclose(class_volumes(X, y, 3, max_count=mc).numpy(), full.numpy(), rtol=1e-12)
        np.testing.assert_allclose(class_volumes(X, y, 3, max_count=mc, validate=False).numpy(), full.numpy(), rtol=1e-12)
    with pytest.raises(ValueError, match=r"\[1\].*max_count"):
        class_volumes(X, y, 3, max_count=8)
    # without validation an overfull class is NaN rather than wrong
    v = class_volumes(X, y, 3, max_count=8, validate=False)
    assert math.isnan(v[1].item())
    np.testing.assert_allclose(v[[0, 2]].numpy(), full[[0, 2]].numpy(), rtol=1e-12)


def test_no_host_reads_with_max_count():
    """On the meta device any read of tensor data fails: the sync-free path must not read any."""
    X = torch.empty(100, 8, device="meta")
    y = torch.empty(100, dtype=torch.long, device="meta")
    for form in ("auto", "gram", "scatter"):
        v = class_volumes(X, y, 5, max_count=40, validate=False, form=form)
        assert v.shape == (5,) and v.device.type == "meta" and v.dtype == torch.float64
    v = class_volumes(X, y, 5, max_count=40, validate=False, dtype=torch.float32)
    assert v.shape == (5,)


def test_empty_class_nan_with_warning(rng):
    X, y = make_classes(rng, [5, 0, 7, 0], 3)
    with pytest.warns(RuntimeWarning, match=r"\[1, 3\]"):
        v = class_volumes(X, y, 4)
    assert math.isnan(v[1].item()) and math.isnan(v[3].item())
    assert np.isfinite(v[[0, 2]].numpy()).all()
    # also without validation (sync-free path): NaN, no warning needed
    v2 = class_volumes(X, y, 4, max_count=7, validate=False)
    assert torch.equal(torch.isnan(v2), torch.isnan(v))
    with pytest.warns(RuntimeWarning, match="no rows"):
        assert math.isnan(volume(np.zeros((0, 3))))
    with pytest.warns(RuntimeWarning):
        centers = class_centers(X, y, 4)
    assert torch.isnan(centers[1]).all()
    with pytest.raises(ValueError, match=r"class\(es\) \[1, 3\]"):
        imbalance(v, centers, alpha=1.0)


def test_non_finite_features_raise_naming_class(rng):
    X, y = make_classes(rng, [5, 6, 7], 4)
    for bad in (np.nan, np.inf, -np.inf):
        Xb = X.copy()
        i = np.flatnonzero(y == 2)[3]
        Xb[i, 1] = bad
        with pytest.raises(ValueError, match=r"class\(es\) \[2\]"):
            class_volumes(Xb, y, 3)
        with pytest.raises(ValueError, match="non-finite"):
            volume(Xb[y == 2])
        # without validation the class comes back NaN, the others are untouched
        v = class_volumes(Xb, y, 3, validate=False)
        assert math.isnan(v[2].item()) and np.isfinite(v[:2].numpy()).all()


def test_label_checks(rng):
    X = rng.normal(size=(6, 3))
    with pytest.raises(ValueError, match="labels must lie"):
        class_volumes(X, [0, 1, 2, 3, 0, 1], 3)
    with pytest.raises(ValueError, match="labels must lie"):
        class_volumes(X, [0, 1, -1, 1, 0, 1], 3)
    with pytest.raises(ValueError, match="one entry per sample"):
        class_volumes(X, [0, 1], 3)
    with pytest.raises(TypeError):
        class_volumes(X, np.zeros(6), 3)
    with pytest.raises(ValueError, match="num_classes"):
        class_volumes(X, np.zeros(6, dtype=int), 0)


def test_high_dimension_small_class_does_not_overflow(rng):
    m, d = 3, 4096
    Z = 1e3 * rng.normal(size=(m, d))
    r = ref_volume(Z)
    v = volume(Z)
    assert math.isfinite(v) and v > 0 and rel(v, r) < 1e-4
    v = class_volumes(np.concatenate([Z, Z[:2] * 2.0]), [0, 0, 0, 1, 1], 2)
    assert torch.isfinite(v).all() and (v > 0).all() and rel(v[0].item(), r) < 1e-4
    # a wide class of ordinary magnitude stays accurate
    Z = rng.normal(size=(50, 2048))
    assert rel(volume(Z), ref_volume(Z)) < 1e-9
    # past 512 bits det() overflows to inf; the volume stays finite and exact
    Z = 10.0 * rng.normal(size=(60, 1024))
    Zc = Z - Z.mean(axis=0)
    with np.errstate(over="ignore"):
        naive = np.linalg.det(np.eye(1024) + 1024 / 60 * Zc.T @ Zc)
    assert np.isinf(naive)
    r = ref_volume(Z)
    assert r > 512 and rel(volume(Z), r) < 1e-9


def test_float32_matmul_runs_without_tf32(rng, monkeypatch):
    """Inside the call the float32 Gram matmul sees IEEE precision; the caller's TF32 setting is restored."""
    X, y = make_classes(rng, [20, 20], 8)
    seen = []
    bmm = torch.bmm

    def spy(*args, **kwargs):
        seen.append(torch.backends.cuda.matmul.fp32_precision)
        return bmm(*args, **kwargs)

    monkeypatch.setattr(torch, "bmm", spy)
    cuda_matmul = torch.backends.cuda.matmul
    before = cuda_matmul.fp32_precision
    cuda_matmul.fp32_precision = "tf32"
    try:
        class_volumes(torch.from_numpy(X).float(), y, 2, dtype=torch.float32)
        assert seen == ["ieee"] and cuda_matmul.fp32_precision == "tf32"
    finally:
        cuda_matmul.fp32_precision = before


def test_float32_leaves_matmul_precision_and_autocast_alone(rng):
    X, y = make_classes(rng, [40, 40], 16)
    before = (torch.backends.cuda.matmul.fp32_precision, torch.backends.mkldnn.matmul.fp32_precision)
    ref = class_volumes(X, y, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        v = class_volumes(torch.from_numpy(X).float(), y, 2, dtype=torch.float32)
    assert (torch.backends.cuda.matmul.fp32_precision, torch.backends.mkldnn.matmul.fp32_precision) == before
    np.testing.assert_allclose(v.numpy(), ref.numpy(), rtol=1e-4)


# ---------------------------------------------------------------------------------------------
# centres, imbalance, DSB weights


def test_class_centers(rng):
    X, y = make_classes(rng, [3, 8, 1], 5)
    c = class_centers(X, y, 3)
    assert c.shape == (3, 5) and c.dtype == torch.float64
    np.testing.assert_allclose(c.numpy(), np.stack([X[y == k].mean(axis=0) for k in range(3)]), rtol=1e-12)
    c32 = class_centers(torch.from_numpy(X).float(), torch.from_numpy(y), 3, dtype=torch.float32)
    assert c32.dtype == torch.float32


def test_imbalance_hand_made_example():
    vols = np.array([2.0, 4.0, 1.0])
    centers = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])  # pairwise distances 3, 4, 5
    w = np.array([(3 + 4) / 2, (3 + 5) / 2, (4 + 5) / 2])  # 3.5, 4, 4.5
    for alpha in (1.0, 2.0):
        s_prime, W, S = imbalance(vols, centers, alpha)
        np.testing.assert_allclose(s_prime.numpy(), [0.5, 1.0, 0.25], rtol=1e-15)
        np.testing.assert_allclose(W.numpy(), np.log2(alpha + w / 4.5), rtol=1e-15)
        np.testing.assert_allclose(S.numpy(), s_prime.numpy() * np.log2(alpha + w / 4.5), rtol=1e-15)
    # torch inputs give the same
    s2 = imbalance(torch.tensor(vols), torch.tensor(centers), 2.0)[2]
    np.testing.assert_allclose(s2.numpy(), S.numpy(), rtol=1e-15)
    with pytest.raises(ValueError, match="alpha"):
        imbalance(vols, centers, 0.5)
    with pytest.raises(ValueError, match="at least 2"):
        imbalance(vols[:1], centers[:1], 1.0)
    with pytest.raises(ValueError, match=r"\[1\]"):
        imbalance([2.0, np.nan, 1.0], centers, 1.0)


def test_dsb_weights():
    S = np.array([0.5, 1.0, 0.25, 0.8])
    a = dsb_weights(S)
    inv = 1.0 / S
    np.testing.assert_allclose(a.numpy(), inv / inv.mean(), rtol=1e-15)
    assert abs(a.mean().item() - 1.0) < 1e-15
    # weights order inversely to S
    assert list(np.argsort(a.numpy())) == list(np.argsort(-S))
    # end to end from the hand-made example
    s = imbalance([2.0, 4.0, 1.0], [[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]], 2.0)[2]
    a = dsb_weights(s)
    assert abs(a.mean().item() - 1.0) < 1e-15 and a[2] > a[0] > a[1]
    with pytest.raises(ValueError, match=r"\[1\]"):
        dsb_weights([1.0, 0.0, 2.0])
    with pytest.raises(ValueError, match=r"\[0\]"):
        dsb_weights([np.nan, 1.0])


# ---------------------------------------------------------------------------------------------
# sample volume


def _manual_pixels(images, size=16):
    x = torch.as_tensor(images).float() / 255.0
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    return x.reshape(len(x), -1)


def test_sample_volume_matches_manual_pipeline():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (50, 1, 28, 28), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 4, (50,), generator=g)
    labels[:4] = torch.arange(4)
    feats = _manual_pixels(images)
    assert feats.shape == (50, 768)
    ref = class_volumes(feats, labels, 4)
    for chunk in (7, 4096):
        v = sample_volume(images, labels, 4, chunk_size=chunk)
        np.testing.assert_allclose(v.numpy(), ref.numpy(), rtol=1e-9)
    np.testing.assert_allclose(sample_features(images, chunk_size=9).numpy(), feats.numpy(), rtol=0, atol=1e-6)
    # torchvision's resize gives the same pixels
    from torchvision.transforms.v2 import functional as TF

    tv = TF.resize(images.float() / 255.0, [16, 16], antialias=True).repeat(1, 3, 1, 1).reshape(50, -1)
    np.testing.assert_allclose(tv.numpy(), feats.numpy(), atol=1e-6)
    # and the SVD reference on the same pixels
    f64 = feats.double().numpy()
    np.testing.assert_allclose(v.numpy(), [ref_volume(f64[labels.numpy() == c]) for c in range(4)], rtol=1e-6)


def test_sample_volume_rgb_and_numpy():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(30, 3, 32, 32), dtype=np.uint8)
    labels = np.repeat(np.arange(3), 10)
    v = sample_volume(images, labels, 3)
    ref = class_volumes(_manual_pixels(images), labels, 3)
    np.testing.assert_allclose(v.numpy(), ref.numpy(), rtol=1e-9)
    with pytest.raises(ValueError, match="images"):
        sample_volume(images[:, :2], labels, 3)


def test_pixel_scale_255_equals_eps_1_over_255():
    g = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (40, 3, 20, 20), dtype=torch.uint8, generator=g)
    labels = torch.arange(40) % 4
    assert PIXEL_SCALES == (1.0, 255.0)
    at_255 = sample_volume(images, labels, 4, pixel_scale=255.0)
    np.testing.assert_allclose(at_255.numpy(), sample_volume(images, labels, 4, eps=1 / 255).numpy(), rtol=1e-9)
    assert bool((at_255 > sample_volume(images, labels, 4) + 1.0).all())  # the scale matters
    np.testing.assert_allclose(
        sample_features(images, pixel_scale=255.0).numpy(), 255.0 * sample_features(images).numpy(), rtol=1e-6
    )
    # any positive scale: features multiplied after the [0, 1] conversion
    np.testing.assert_allclose(
        sample_volume(images, labels, 4, pixel_scale=2.0).numpy(), sample_volume(images, labels, 4, eps=0.5).numpy(), rtol=1e-9
    )


def test_pixel_scale_default_is_1():
    g = torch.Generator().manual_seed(4)
    images = torch.randint(0, 256, (30, 1, 28, 28), dtype=torch.uint8, generator=g)
    labels = torch.arange(30) % 3
    assert torch.equal(sample_volume(images, labels, 3), sample_volume(images, labels, 3, pixel_scale=1.0))
    assert torch.equal(sample_features(images), sample_features(images, pixel_scale=1.0))


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_pixel_scale_rejects_non_positive_or_non_finite(bad):
    images = torch.zeros(4, 1, 16, 16, dtype=torch.uint8)
    labels = torch.tensor([0, 0, 1, 1])
    with pytest.raises(ValueError, match=r"pixel_scale.*positive.*255"):
        sample_volume(images, labels, 2, pixel_scale=bad)
    with pytest.raises(ValueError, match=r"pixel_scale.*positive.*255"):
        sample_features(images, pixel_scale=bad)


def test_deterministic_mode_and_repeatability(rng):
    X, y = make_classes(rng, [12, 30, 7], 9)
    first = class_volumes(X, y, 3)
    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        v = class_volumes(X, y, 3, max_count=30, validate=False)
    finally:
        torch.use_deterministic_algorithms(prev)
    assert torch.equal(v, first)


def test_shrinkage_volume_floors_the_covariance_spectrum_at_the_marchenko_pastur_edge():
    """PAPER.md §7: ½ Σ log2(1 + max(λ, σ²(1 − √(p/m))²)) of the class covariance (σ² its mean eigenvalue), no d/m
    factor; checked against an SVD of each class by hand, and the floor seen to act (a flat direction is lifted)."""
    rng = np.random.default_rng(0)
    p, sizes = 8, [40, 200, 5]
    Z = [rng.normal(size=(m, p)) * np.linspace(0.1, 3.0, p) for m in sizes]
    Z[1][:, 0] = 0.0  # one flat direction: eigenvalue 0, floored
    features, labels = np.concatenate(Z), np.repeat(np.arange(3), sizes)
    got = scale.shrinkage_volumes(features, labels, 3).numpy()
    for c, (m, z) in enumerate(zip(sizes, Z)):
        singular = np.linalg.svd(z - z.mean(0), compute_uv=False)
        lam = np.zeros(p)
        lam[: len(singular)] = singular**2 / m
        floor = lam.mean() * (1 - np.sqrt(p / m)) ** 2
        assert got[c] == pytest.approx(0.5 * np.log2(1 + np.maximum(lam, floor)).sum(), rel=1e-10)
    unfloored = 0.5 * np.log2(1 + np.linalg.eigvalsh(np.cov(Z[1].T, bias=True)).clip(min=0)).sum()
    assert got[1] > unfloored  # the flat direction was lifted
    with pytest.warns(RuntimeWarning, match="no samples"):
        assert np.isnan(scale.shrinkage_volumes(features, labels, 4).numpy()[3])
