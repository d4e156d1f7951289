"""Semantic scale of classes (Ma et al., ICLR 2023, Sec 3) and the DSB class weights (Sec 4).

The semantic scale of a class with ``m`` samples ``z_i`` in ``R^d`` is the volume of its feature
manifold (PAPER.md §1), in bits::

    Vol(Z) = ½ · log2 det( I_d + d / (m ε²) · Zcᵀ Zc ),      Zc = Z − Z̄  (rows are samples)

Here ``Z`` is (m, d) with samples as rows; the paper writes the transposed d × m matrix.

How it is computed
------------------
* ``det(I_d + c·ZcᵀZc) = det(I_m + c·ZcZcᵀ)``: when a class has fewer rows than dimensions the
  m × m Gram form is used, otherwise the d × d scatter form (``form="auto"``; ``"gram"`` or
  ``"scatter"`` force one).
* The matrix ``A = I + c·G`` is symmetric with every eigenvalue ≥ 1, so a Cholesky factorisation
  always exists and ``½·log2 det A = Σ log2 L_ii``: no ``det`` (which overflows to inf once the
  volume passes 512 bits), no pivoting, and a fast batched kernel on CPU and CUDA
  (``torch.linalg.cholesky_ex``, which reports failures in a tensor instead of raising, so it needs
  no host synchronisation).
* All classes go through one batched computation: rows are sorted by label and copied into a
  zero-padded (C, M, d) tensor (M = largest class size), centred per class, and multiplied in one
  ``bmm``. Zero rows change neither the Gram nor the scatter matrix (a zero row of the Gram form
  adds a unit diagonal entry, log 1 = 0).
* Accumulation is in float64 by default. ``dtype=torch.float32`` is available for speed; its
  matmul then runs at full IEEE float32 precision (TF32/bf16 reduced-precision matmul is switched
  off for the call), and autocast is always disabled inside.
* Accuracy. Forming the Gram/scatter matrix squares the condition number: rounding perturbs each
  unit eigenvalue of ``A`` by about u·c·‖Zc‖² (u = unit roundoff). With ordinary features (m ≥ d,
  or moderate magnitudes) float64 agrees with an SVD reference to ~1e-14 and float32 to ~1e-7.
  Classes with few samples in high dimension and large magnitudes are the hard case: for
  m = 3, d = 4096, |z| ~ 1e3 float64 is still within ~1e-5 (relative) of the SVD value, while
  float32 can be off by several percent, or NaN where the factorisation fails (a failed Cholesky is
  always reported as NaN, never as a number). Keep float64 for anything reported.

Host synchronisation
--------------------
``class_volumes(..., max_count=M, validate=False)`` reads nothing back to the host, so the training
pool can call it every iteration without stalling the GPU. Without ``max_count`` it reads the class
counts once (to size the padded tensor); ``validate=True`` (the default) also checks labels and
features on the host and warns about empty classes.

Pixel scale of the sample volume
--------------------------------
The paper's Algorithm 1 (resize to 16×16×3, flatten, centre, log-det) does not say how pixels are
scaled, and the volume is not scale-invariant: multiplying the features by s equals ε = 1/s.
``sample_features``/``sample_volume`` take pixels in [0, 1] (``pixel_scale=1.0``, the default,
PAPER.md §6); ``pixel_scale=255.0`` gives pixels in [0, 255]. Record the scale with every result.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "volume",
    "class_volumes",
    "class_centers",
    "sample_volume",
    "sample_features",
    "PIXEL_SCALES",
    "imbalance",
    "dsb_weights",
]

_FORMS = ("auto", "gram", "scatter")
PIXEL_SCALES = (1.0, 255.0)  # the two pixel conventions: [0, 1] (default, PAPER.md §6) and [0, 255]
_LN2 = math.log(2.0)


# ----------------------------------------------------------------------------------------------
# helpers


def _as_tensor(x: Any, name: str, device: torch.device | None = None) -> torch.Tensor:
    """A torch view of ``x`` (tensor, NumPy array or nested sequence), on ``device`` if given."""
    if isinstance(x, torch.Tensor):
        t = x
    elif isinstance(x, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(x))
    else:
        try:
            t = torch.as_tensor(np.asarray(x))
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} must be a torch tensor or a NumPy array, got {type(x).__name__}") from exc
    if device is not None and t.device != device:
        t = t.to(device)
    return t


def _check_dtype(dtype: torch.dtype) -> None:
    if dtype not in (torch.float64, torch.float32):
        raise ValueError(f"dtype must be torch.float64 or torch.float32, got {dtype}")


def _check_eps(eps: float) -> float:
    eps = float(eps)
    if not (math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a positive finite number, got {eps}")
    return eps


def _check_pixel_scale(pixel_scale: float) -> float:
    pixel_scale = float(pixel_scale)
    if not (math.isfinite(pixel_scale) and pixel_scale > 0):
        raise ValueError(
            f"pixel_scale must be a positive finite number: 1.0 for pixels in [0, 1] (the default) "
            f"or 255.0 for pixels in [0, 255]; got {pixel_scale}"
        )
    return pixel_scale


def _check_form(form: str) -> None:
    if form not in _FORMS:
        raise ValueError(f"form must be one of {_FORMS}, got {form!r}")


def _check_features(features: torch.Tensor, name: str = "features") -> torch.Tensor:
    if features.ndim != 2:
        raise ValueError(f"{name} must be 2-D (samples, dims), got shape {tuple(features.shape)}")
    if not (features.is_floating_point() or features.dtype in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)):
        raise TypeError(f"{name} must hold real numbers, got {features.dtype}")
    if features.shape[1] == 0:
        raise ValueError(f"{name} has no feature dimensions")
    return features


def _check_labels(labels: torch.Tensor, n: int) -> torch.Tensor:
    if labels.ndim != 1 or labels.shape[0] != n:
        raise ValueError(f"labels must be 1-D with one entry per sample ({n}), got shape {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"labels must be integers, got {labels.dtype}")
    return labels.long()


def _check_num_classes(num_classes: int) -> int:
    if isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    return int(num_classes)


def _check_label_range(labels: torch.Tensor, num_classes: int) -> None:
    """Host read: every label in [0, num_classes)."""
    if labels.numel() == 0:
        return
    lo, hi = torch.stack([labels.min(), labels.max()]).tolist()
    if lo < 0 or hi >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}), found values in [{lo}, {hi}]")


def _raise_non_finite(class_sums: torch.Tensor) -> None:
    """Host read: raise a ValueError naming the classes whose (C, d) feature sums are not finite."""
    bad = (~torch.isfinite(class_sums).all(dim=1)).nonzero().flatten().tolist()
    if bad:
        raise ValueError(f"non-finite features (nan or inf, or sums overflowing float) in class(es) {bad}")


def _warn_empty(counts_host: list[int], where: str) -> None:
    empty = [c for c, n in enumerate(counts_host) if n == 0]
    if empty:
        warnings.warn(
            f"{where}: class(es) {empty} have no samples; their volume is NaN",
            RuntimeWarning,
            stacklevel=3,
        )


@contextlib.contextmanager
def _full_precision(dtype: torch.dtype, device: torch.device):
    """Disable reduced-precision float32 matmul (TF32 on CUDA, bf16/TF32 in oneDNN) and autocast.

    Uses only the per-backend ``fp32_precision`` API (mixing it with the legacy global setters makes
    later reads raise) and restores the previous values exactly. These are process-wide flags: do not
    run float32 volumes concurrently with float32 matmuls that want TF32 in another thread.
    """
    saved = []  # (object, attribute, previous value)
    if dtype == torch.float32:
        cuda_matmul = torch.backends.cuda.matmul
        if hasattr(cuda_matmul, "fp32_precision"):  # torch >= 2.9
            backends = (cuda_matmul, getattr(torch.backends.mkldnn, "matmul", None))
            saved = [(b, "fp32_precision", b.fp32_precision) for b in backends if b is not None and b.fp32_precision != "ieee"]
            new_value = "ieee"
        else:  # older torch: the legacy flag
            saved = [(cuda_matmul, "allow_tf32", cuda_matmul.allow_tf32)] if cuda_matmul.allow_tf32 else []
            new_value = False
        for obj, attr, _ in saved:
            setattr(obj, attr, new_value)
    try:
        with torch.autocast(device_type=device.type if device.type in ("cuda", "cpu", "xpu", "mps") else "cpu", enabled=False):
            yield
    finally:
        for obj, attr, value in saved:
            setattr(obj, attr, value)


def _padded_volumes(X: torch.Tensor, counts: torch.Tensor, eps: float, form: str) -> torch.Tensor:
    """Volumes (bits, float64) of C classes stored as a centred, zero-padded (C, M, d) tensor.

    ``counts`` (C,) holds each class's true size m (the factor is d / (m ε²)); classes with m = 0 or
    m > M, and any whose factorisation failed, come back NaN. No host synchronisation.
    """
    C, M, d = X.shape
    use_gram = form == "gram" or (form == "auto" and M < d)
    with _full_precision(X.dtype, X.device):
        A = torch.bmm(X, X.mT) if use_gram else torch.bmm(X.mT, X)  # (C, k, k), k = M or d
    factor = d / (counts.clamp(min=1).to(X.dtype) * (eps * eps))
    A.mul_(factor[:, None, None])
    A.diagonal(dim1=-2, dim2=-1).add_(1.0)
    L, info = torch.linalg.cholesky_ex(A)
    # ½·log2 det A = ½·(2 Σ ln L_ii) / ln 2
    vol = L.diagonal(dim1=-2, dim2=-1).log().sum(dim=-1).to(torch.float64) / _LN2
    bad = (counts == 0) | (counts > M) | (info != 0)
    return torch.where(bad, torch.full_like(vol, float("nan")), vol)


def _centre_padded_(X: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """In place: subtract each class's mean from its first ``counts[c]`` rows, keep padding zero.

    Returns the (C, d) class sums, which are non-finite exactly when a class holds a nan/inf
    (or its sum overflows): a cheap per-class validity check.
    """
    C, M, d = X.shape
    sums = X.sum(dim=1)
    means = sums / counts.clamp(min=1).to(X.dtype)[:, None]
    mask = (torch.arange(M, device=X.device)[None, :] < counts[:, None]).to(X.dtype)
    X.addcmul_(mask[:, :, None], means[:, None, :], value=-1.0)  # X −= mask·μ: one pass, padding stays 0
    return sums


def _group(labels: torch.Tensor, num_classes: int):
    """Sort by label: (order, sorted labels, class starts, class counts). No host synchronisation.

    Counts come from ``searchsorted`` on the sorted labels (deterministic on every device, unlike
    atomics-based bincount/index_add on CUDA). Labels must lie in [0, num_classes).
    """
    order = torch.argsort(labels, stable=True)
    sorted_labels = labels[order]
    bounds = torch.searchsorted(sorted_labels, torch.arange(num_classes + 1, device=labels.device, dtype=labels.dtype))
    starts = bounds[:-1]
    return order, sorted_labels, starts, bounds[1:] - starts


def _padded_rows(order, sorted_labels, starts, num_classes: int, M: int) -> torch.Tensor:
    """For each sample (in its original order), its row in the flattened (C·M + 1, d) padded tensor.

    Rows of a class beyond M go to the spare last row C·M, which is ignored. No host synchronisation.
    """
    n = sorted_labels.shape[0]
    pos = torch.arange(n, device=sorted_labels.device) - starts[sorted_labels]
    dest_sorted = torch.where(pos < M, sorted_labels * M + pos, torch.full_like(pos, num_classes * M))
    dest = torch.empty_like(dest_sorted)
    dest[order] = dest_sorted
    return dest


# ----------------------------------------------------------------------------------------------
# public API


def volume(Z, eps: float = 1.0, *, dtype: torch.dtype = torch.float64, form: str = "auto") -> float:
    """Semantic scale (bits) of one class: ½·log2 det(I + d/(m ε²)·(Z−Z̄)ᵀ(Z−Z̄)).

    ``Z`` is (m, d) with samples as rows (torch tensor or NumPy array). m = 1 gives 0.0; m = 0 gives
    NaN with a warning; non-finite entries raise ValueError.
    """
    _check_dtype(dtype)
    _check_form(form)
    eps = _check_eps(eps)
    Z = _check_features(_as_tensor(Z, "Z"), "Z")
    m, d = Z.shape
    if m == 0:
        warnings.warn("volume: Z has no rows; its volume is NaN", RuntimeWarning, stacklevel=2)
        return float("nan")
    if Z.is_floating_point() and not bool(torch.isfinite(Z).all()):
        raise ValueError("volume: Z holds non-finite values (nan or inf)")
    X = Z.to(dtype)
    X = X - X.mean(dim=0, keepdim=True)
    counts = torch.tensor([m], device=X.device)
    return float(_padded_volumes(X[None], counts, eps, form)[0])


def class_volumes(
    features,
    labels,
    num_classes: int,
    eps: float = 1.0,
    *,
    max_count: int | None = None,
    validate: bool = True,
    dtype: torch.dtype = torch.float64,
    form: str = "auto",
) -> torch.Tensor:
    """Semantic scale (bits) of every class, in one batched computation on ``features.device``.

    features: (N, d) tensor or array, samples as rows. labels: (N,) integers in [0, num_classes).
    max_count: an upper bound on the largest class size; with it (and ``validate=False``) the call
        makes no host synchronisation. A class larger than max_count gets NaN (and, when validating,
        a ValueError is raised instead).
    validate: check labels and features on the host (ValueError naming the offending classes for
        non-finite features) and warn about empty classes.
    dtype: accumulation precision (float64 default; float32 runs at full IEEE precision).
    form: "auto" (m × m Gram matrix when M < d, else d × d scatter matrix), "gram" or "scatter".

    Returns a (num_classes,) float64 tensor on features.device. Empty classes are NaN, classes with
    one sample 0.
    """
    _check_dtype(dtype)
    _check_form(form)
    eps = _check_eps(eps)
    C = _check_num_classes(num_classes)
    features = _check_features(_as_tensor(features, "features"))
    device = features.device
    labels = _check_labels(_as_tensor(labels, "labels", device), features.shape[0])
    if max_count is not None and (isinstance(max_count, bool) or int(max_count) != max_count or max_count < 0):
        raise ValueError(f"max_count must be a non-negative integer, got {max_count!r}")
    d = features.shape[1]

    if validate:
        _check_label_range(labels, C)
    order, sorted_labels, starts, counts = _group(labels, C)
    if validate or max_count is None:
        counts_host = counts.tolist()  # the one host read that sizes the padded tensor
        _warn_empty(counts_host, "class_volumes")
        largest = max(counts_host)
        if max_count is None:
            M = largest
        elif validate and largest > max_count:
            big = [c for c, k in enumerate(counts_host) if k > max_count]
            raise ValueError(f"class(es) {big} have more than max_count={max_count} samples (largest: {largest})")
        else:
            M = int(max_count)
    else:
        M = int(max_count)
    M = max(M, 1)

    dest = _padded_rows(order, sorted_labels, starts, C, M)
    padded = torch.zeros(C * M + 1, d, dtype=dtype, device=device)
    padded.index_copy_(0, dest, features.to(dtype))
    X = padded[: C * M].view(C, M, d)
    sums = _centre_padded_(X, counts)
    if validate:
        _raise_non_finite(sums)
    return _padded_volumes(X, counts, eps, form)


def shrinkage_volumes(features, labels, num_classes: int) -> torch.Tensor:
    """The authors' later, shrinkage-corrected volume of every class (PAPER.md §7; Zhao, …, Ma, *Information Density
    Imbalance in Visual Object Detection*), in bits: ½·Σ log2(1 + λ'ᵢ), λ'ᵢ = max(λᵢ, σ²(1 − √(p/m))²), where λᵢ are
    the eigenvalues of the class covariance Σ = ZcᵀZc / m (p dimensions, m samples) floored at the Marchenko–Pastur
    lower edge, and there is no d/m factor. PAPER.md writes the edge as (1 − √(p/m))², the edge of a spectrum of
    unit variance; we scale it by the class's mean eigenvalue σ² = tr Σ / p, the edge of an MP spectrum of that
    variance, because the unit-variance edge in the features' own units lets the units decide (pixels in [0, 1]
    have eigenvalues far below 1, so every eigenvalue was floored and the volume became a function of m alone).
    Float64, one eigendecomposition per class (an ablation, not the training pool's measure: :func:`class_volumes`
    is). Empty classes are NaN."""
    C = _check_num_classes(num_classes)
    features = _check_features(_as_tensor(features, "features")).to(torch.float64)
    labels = _check_labels(_as_tensor(labels, "labels", features.device), features.shape[0])
    _check_label_range(labels, C)
    if not bool(torch.isfinite(features).all()):
        raise ValueError("shrinkage_volumes: features hold non-finite values (nan or inf)")
    p = features.shape[1]
    out = torch.full((C,), float("nan"), dtype=torch.float64)
    for c in range(C):
        Z = features[labels == c]
        m = Z.shape[0]
        if m == 0:
            continue
        Zc = Z - Z.mean(dim=0, keepdim=True)
        eigenvalues = torch.linalg.eigvalsh(Zc.T @ Zc / m)
        eigenvalues = eigenvalues.clamp(min=float(eigenvalues.clamp(min=0).mean()) * (1 - math.sqrt(p / m)) ** 2)
        out[c] = 0.5 * torch.log2(1 + eigenvalues).sum()
    _warn_empty([int((labels == c).sum()) for c in range(C)], "shrinkage_volumes")
    return out


def class_centers(features, labels, num_classes: int, *, dtype: torch.dtype = torch.float64, validate: bool = True) -> torch.Tensor:
    """(C, d) class means (``dtype``, on features.device), batched with index_add.

    Empty classes are NaN (with a warning when ``validate``, which reads to the host; with
    ``validate=False`` the call is sync-free and labels must be valid).
    """
    _check_dtype(dtype)
    C = _check_num_classes(num_classes)
    features = _check_features(_as_tensor(features, "features"))
    device = features.device
    labels = _check_labels(_as_tensor(labels, "labels", device), features.shape[0])
    if validate:
        _check_label_range(labels, C)
    counts = torch.zeros(C, dtype=dtype, device=device).index_add_(0, labels, torch.ones(labels.shape[0], dtype=dtype, device=device))
    if validate:
        empty = (counts == 0).nonzero().flatten().tolist()
        if empty:
            warnings.warn(f"class_centers: class(es) {empty} have no samples; their centre is NaN", RuntimeWarning, stacklevel=2)
    sums = torch.zeros(C, features.shape[1], dtype=dtype, device=device).index_add_(0, labels, features.to(dtype))
    return sums / counts[:, None]


def sample_features(
    images,
    size: int = 16,
    *,
    pixel_scale: float = 1.0,
    chunk_size: int = 4096,
    device=None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Pixel features of the sample volume: (N, 3·size²) rows, computed chunk by chunk.

    images: uint8 (N, C, H, W) (or (N, H, W)) with C = 1 or 3; uint8 is scaled to [0, 1], float input
    is taken as already in [0, 1]. Each image is resized to size × size (bilinear, antialiased),
    grayscale is repeated to 3 channels, and the result flattened channel-major (d = 768 for 16).
    pixel_scale: the features are multiplied by it after the [0, 1] conversion: 1.0 (pixels in
    [0, 1], the default) or 255.0 (pixels in [0, 255]); see ``PIXEL_SCALES``.
    """
    pixel_scale = _check_pixel_scale(pixel_scale)
    images = _as_images(images)
    device = torch.device(device) if device is not None else images.device
    n = images.shape[0]
    out = torch.empty(n, 3 * size * size, dtype=dtype, device=device)
    for start in range(0, n, chunk_size):
        out[start : start + chunk_size] = _pixels(images[start : start + chunk_size].to(device), size, pixel_scale, dtype)
    return out


def _as_images(images) -> torch.Tensor:
    """(N, C, H, W) view of ``images`` ((N, H, W) gains a channel axis); C must be 1 or 3."""
    images = _as_tensor(images, "images")
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be (N, C, H, W) with C in (1, 3) or (N, H, W), got shape {tuple(images.shape)}")
    return images


def _pixels(chunk: torch.Tensor, size: int, pixel_scale: float, dtype: torch.dtype) -> torch.Tensor:
    """(n, 3·size²) features in ``dtype``: [0, 1] pixels, resized, times ``pixel_scale`` (in ``dtype``)."""
    x = chunk.to(torch.float32) / 255.0 if chunk.dtype == torch.uint8 else chunk.to(torch.float32)
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    x = x.reshape(x.shape[0], -1).to(dtype)
    return x if pixel_scale == 1.0 else x.mul_(pixel_scale)


def sample_volume(
    images,
    labels,
    num_classes: int,
    size: int = 16,
    *,
    eps: float = 1.0,
    pixel_scale: float = 1.0,
    chunk_size: int = 4096,
    device=None,
    dtype: torch.dtype = torch.float64,
    form: str = "auto",
) -> torch.Tensor:
    """The paper's sample volume: class volumes (bits) of resized pixel features (d = 3·size²).

    images: uint8 (N, C, H, W) (see ``sample_features``); labels (N,). The images are converted chunk
    by chunk straight into the padded per-class tensor, so the only large buffer is that tensor
    (N·d·8 bytes for balanced classes: 370 MB for 60,000 MNIST images at d = 768). Returns a
    (num_classes,) float64 tensor; empty classes are NaN with a warning.
    pixel_scale: 1.0 (pixels in [0, 1], the default, PAPER.md §6) or 255.0 (pixels in [0, 255]); any
    positive number multiplies the [0, 1] features, which equals ε = eps / pixel_scale. The paper
    does not state its scale and class rankings depend on it: record it with every result.
    """
    _check_dtype(dtype)
    _check_form(form)
    eps = _check_eps(eps)
    pixel_scale = _check_pixel_scale(pixel_scale)
    C = _check_num_classes(num_classes)
    images = _as_images(images)
    device = torch.device(device) if device is not None else images.device
    n = images.shape[0]
    labels = _check_labels(_as_tensor(labels, "labels", device), n)
    _check_label_range(labels, C)
    order, sorted_labels, starts, counts = _group(labels, C)
    counts_host = counts.tolist()
    _warn_empty(counts_host, "sample_volume")
    M = max(max(counts_host), 1)
    d = 3 * size * size
    dest = _padded_rows(order, sorted_labels, starts, C, M)
    padded = torch.zeros(C * M + 1, d, dtype=dtype, device=device)
    for start in range(0, n, chunk_size):
        rows = _pixels(images[start : start + chunk_size].to(device), size, pixel_scale, dtype)
        padded.index_copy_(0, dest[start : start + chunk_size], rows)
    X = padded[: C * M].view(C, M, d)
    _raise_non_finite(_centre_padded_(X, counts))
    return _padded_volumes(X, counts, eps, form)


def imbalance(volumes, centers, alpha: float, *, validate: bool = True):
    """The semantic-scale imbalance measure of PAPER.md §2. Returns (S′, W, S), each (C,) float64.

    S′ = Vol / max Vol; w_i = mean Euclidean distance from centre i to the other C − 1 centres
    (:func:`center_distances`); W′ = w / max w; W = log2(α + W′); S = S′ ⊙ W. α ≥ 1 (2 on long-tailed data, 1 on
    balanced). Results are on volumes' device. With ``validate`` (default), NaN/inf volumes or centres (e.g.
    from an empty class) raise a ValueError naming the classes; validation reads to the host.
    """
    vol = _as_tensor(volumes, "volumes").to(torch.float64)
    cen = _as_tensor(centers, "centers", vol.device).to(torch.float64)
    if vol.ndim != 1:
        raise ValueError(f"volumes must be 1-D (C,), got shape {tuple(vol.shape)}")
    if cen.ndim != 2 or cen.shape[0] != vol.shape[0]:
        raise ValueError(f"centers must be (C, d) with C = {vol.shape[0]}, got shape {tuple(cen.shape)}")
    if validate:
        bad_c = (~torch.isfinite(cen).all(dim=1)).nonzero().flatten().tolist()
        if bad_c:
            raise ValueError(f"centres of class(es) {bad_c} are NaN or infinite (empty class?); cannot compute the imbalance")
    return imbalance_from_distances(vol, center_distances(cen), alpha, validate=validate)


def center_distances(centers) -> torch.Tensor:
    """w_i of PAPER.md §2: the mean Euclidean distance from centre i to the other C − 1 centres, (C,) float64."""
    cen = _as_tensor(centers, "centers").to(torch.float64)
    dist = torch.cdist(cen[None], cen[None], compute_mode="donot_use_mm_for_euclid_dist")[0]
    return dist.sum(dim=1) / max(cen.shape[0] - 1, 1)  # one class: 0 (imbalance then says it needs two)


def imbalance_from_distances(volumes, distances, alpha: float, *, validate: bool = True):
    """:func:`imbalance` from the volumes and the centres' mean distances w (:func:`center_distances`): what a run
    records per class (per_class.csv), so that S′, W and S can be had at any α without the features."""
    alpha = float(alpha)
    if not (math.isfinite(alpha) and alpha >= 1.0):
        raise ValueError(f"alpha must be a finite number >= 1, got {alpha}")
    vol = _as_tensor(volumes, "volumes").to(torch.float64)
    w = _as_tensor(distances, "distances", vol.device).to(torch.float64)
    if vol.ndim != 1:
        raise ValueError(f"volumes must be 1-D (C,), got shape {tuple(vol.shape)}")
    if w.shape != vol.shape:
        raise ValueError(f"distances must be (C,) with C = {vol.shape[0]}, got shape {tuple(w.shape)}")
    if vol.shape[0] < 2:
        raise ValueError("imbalance needs at least 2 classes (w_i averages over the other C − 1 centres)")
    if validate:
        bad_v = (~torch.isfinite(vol)).nonzero().flatten().tolist()
        if bad_v:
            raise ValueError(f"volumes of class(es) {bad_v} are NaN or infinite (empty class?); cannot compute the imbalance")
        if bool((vol < 0).any()):
            raise ValueError("volumes must be non-negative")
        if not bool(vol.max() > 0):
            raise ValueError("every class has volume 0 (at most one sample each): S′ = Vol / max Vol is undefined")
        if not bool(w.max() > 0):
            raise ValueError("all class centres coincide: W′ = w / max w is undefined")
    s_prime = vol / vol.max()
    w_prime = w / w.max()
    W = torch.log2(alpha + w_prime)
    return s_prime, W, s_prime * W


def dsb_weights(S, *, validate: bool = True) -> torch.Tensor:
    """DSB class weights a_c ∝ 1/S_c, rescaled to mean 1 over classes (float64, on S's device).

    With ``validate`` (default) every S_c must be finite and > 0 (ValueError naming the classes).
    """
    s = _as_tensor(S, "S").to(torch.float64)
    if s.ndim != 1 or s.shape[0] == 0:
        raise ValueError(f"S must be a non-empty 1-D tensor, got shape {tuple(s.shape)}")
    if validate:
        bad = (~(torch.isfinite(s) & (s > 0))).nonzero().flatten().tolist()
        if bad:
            raise ValueError(f"S of class(es) {bad} is not a positive finite number: {s[bad].tolist()}")
    inv = 1.0 / s
    return inv / inv.mean()
