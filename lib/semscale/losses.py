"""The loss zoo of the training engine: per-sample losses with one class-weighting mechanism.

A loss is ``build_loss(name, class_counts, *, reweight="none", reduction="weighted_mean", **params)``
and is called as ``loss(logits, targets, class_weights=None) -> scalar``. Per sample ``i`` it computes a
loss ``L_i`` and a weight ``a_i = r_{y_i} · c_{y_i}``, where ``r`` is the loss's own class reweighting
(``reweight``) and ``c`` the optional extra per-class weights passed at call time (DSB's
``semscale.scale.dsb_weights``; PAPER.md §3). The batch loss is

* ``"weighted_mean"``: ``Σ a_i L_i / Σ a_i`` (what ``F.cross_entropy(weight=a)`` does; default), or
* ``"mean"``:          ``Σ a_i L_i / N``.

If every weight in a batch is 0 the weighted mean is 0 (not NaN).

Losses (``LOSSES``), z = logits, y = target, n_c = training images of class c, π_c = n_c / Σ n:

* ``ce``               ``−log softmax(z)_y``.
* ``focal``            ``−(1 − p_y)^γ log p_y`` with ``p = softmax(z)`` (Lin et al. 2017); class weights act
                       as α_t. ``gamma`` defaults to 1, the value LDAM-DRW's CIFAR script uses.
                       LDAM-DRW's ``FocalLoss`` computes ``p`` from the *weighted* CE, ``exp(−w_y CE)``;
                       the two agree when the weights are uniform (here ``p`` is always the true softmax
                       probability, as in Lin et al.). LDAM-DRW averages the focal loss over N, i.e.
                       ``reduction="mean"``.
* ``ldam``             ``CE(s · (z − m_y e_y), y)``: the target logit minus the class margin
                       ``m_c ∝ n_c^(−1/4)``, scaled so that ``max_c m_c = max_m``, then everything times ``s``
                       (Cao et al. 2019, LDAM-DRW ``LDAMLoss``); ``max_m = 0.5``, ``s = 30``. Meant for the
                       cosine classifier (``needs_normed_classifier``).
* ``balanced-softmax`` ``CE(z + log π, y)`` (Ren et al. 2020).
* ``logit-adjusted``   ``CE(z + τ log π, y)`` (Menon et al. 2021), ``tau = 1``.
* ``gla``              Generalized Logit-Adjusted loss (Cortes, Mohri & Zhong, "Improved Balanced Classification
                       with Theoretically Grounded Loss Functions", NeurIPS 2025): the logit adjustment inside the
                       general cross-entropy family, ``ℓ_q(p̃_y)`` with ``p̃ = softmax(z + τ log π)`` and
                       ``ℓ_q(p) = (1 − p^q)/q`` (``ℓ_0 = −log p``); ``q = 0.5``, ``tau = 1``.
* ``gca``              Generalized Class-Aware weighted loss (same paper): ``w_y · ℓ_q(p̂_y)`` with inverse-frequency
                       class weights ``w_c ∝ 1/n_c`` (mean 1; they live in the class-weight buffer, so DSB multiplies
                       them) and a class-dependent confidence margin on the target logit,
                       ``p̂ = softmax(z − m_y e_y)``, ``m_c ∝ n_c^(−1/4)`` scaled so that ``max m = margin_max``;
                       ``q = 0.5``, ``margin_max = 0.5``. ``reweight`` must be ``none``.

                       GLA/GCA: the paper's text (arXiv 2512.23947) could not be found from this project; only its
                       abstract (``../shared/seeds/002_fd0387101ff9aea7.txt``) was. The forms above are derived
                       from the abstract: "general cross-entropy family" is read as the comp-sum family of Mao,
                       Mohri & Zhong (ICML 2023), ``Φ_τ(Σ_y' e^{z_y' − z_y})``, which in terms of ``p_y`` is
                       ``ℓ_q`` with ``q = τ − 1`` (q = −1: sum-exponential, 0: CE, 1: MAE); "shift logits based on
                       class priors" is Menon's ``+ τ log π``; "scale losses inversely by class frequency" is
                       ``w_c ∝ 1/n_c``. The margins' calibration (``n_c^(−1/4)``, LDAM's, Cao et al. 2019) and the
                       defaults ``q = 0.5``, ``margin_max = 0.5`` are this project's choices, not the paper's.
                       With ``q = 0`` GLA is ``logit-adjusted`` and GCA with ``margin_max → 0`` is inverse-frequency
                       weighted CE (tested).

Reweightings (``REWEIGHTS``) — the loss's own ``r``, normalised to sum to C (mean 1):

* ``none``  uniform.
* ``cb``    class-balanced by effective number (Cui et al. 2019): ``r_c ∝ (1 − β) / (1 − β^{n_c})``,
            ``beta = 0.9999``.
* ``drw``   deferred re-weighting (LDAM-DRW): uniform until epoch ``round(0.8 · total_epochs)`` (160 of
            200; ``drw_fraction = 0.8``), then the ``cb`` weights. Epochs are 0-based (LDAM-DRW's
            ``idx = epoch // 160`` with ``epoch`` in ``range(200)``): call ``set_epoch(epoch, total)`` before
            each epoch.
* ``cdb``   class-wise difficulty-balanced (Sinha, Ohashi & Nakamura, ACCV 2020): with per-class accuracy
            ``A_c`` (from ``update_class_accuracy``), difficulty ``d_c = 1 − A_c`` and ``r_c ∝ d_c^τ``. The
            default ``cdb_tau="dynamic-v1"`` is the τ of CDB's CIFAR-LT script, which the CIFAR-LT experiments
            of this study follow: ``τ = sigmoid(max A/(min A + ε))``, ``ε = 0.01`` (``hitachi-rd-cv/CDB-loss``,
            CIFAR-LT/losses/cdb_loss.py lines 25-31, used by CIFAR-LT/cifar_train.py line 85).
            ``cdb_tau="dynamic"`` is the official code's later form (ImageNet-LT/loss/CDBSoftmaxLoss.py),
            ``τ = 2 · sigmoid(b)``, ``b = max_c A_c / (min_c A_c + ε) − 1``: τ ≈ 1 when all classes are equally
            accurate, → 2 as the spread grows. A number fixes τ. The trainer measures ``A_c`` in eval mode on a
            balanced held-out split (PAPER.md §6); CDB's script averages the weighted loss over the batch
            (``reduction="mean"``, cifar_train.py line 76).
            Uniform until the first update. If every class has accuracy 1 (all difficulties 0) the weights
            stay uniform.

The weights live in buffers (they follow ``.to(device)`` and are saved in ``state_dict``) and are
updated in place, so a captured CUDA graph or compiled forward sees the new values. ``forward`` reads
nothing back to the host, has no Python branching on tensor values and computes in float32 whatever
the logits' dtype (bf16 under autocast).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

LOSSES = ("ce", "focal", "ldam", "balanced-softmax", "logit-adjusted", "gla", "gca")
REWEIGHTS = ("none", "cb", "drw", "cdb")
REDUCTIONS = ("weighted_mean", "mean")

# parameters (with defaults) of each loss and of each reweighting
LOSS_PARAMS: dict[str, dict[str, Any]] = {
    "ce": {},
    "focal": {"gamma": 1.0},
    "ldam": {"max_m": 0.5, "s": 30.0},
    "balanced-softmax": {},
    "logit-adjusted": {"tau": 1.0},
    "gla": {"q": 0.5, "tau": 1.0},
    "gca": {"q": 0.5, "margin_max": 0.5},
}
REWEIGHT_PARAMS: dict[str, dict[str, Any]] = {
    "none": {},
    "cb": {"beta": 0.9999},
    "drw": {"beta": 0.9999, "drw_fraction": 0.8},
    "cdb": {"cdb_tau": "dynamic-v1"},
}
CDB_EPS = 0.01

__all__ = [
    "LOSSES",
    "REWEIGHTS",
    "REDUCTIONS",
    "LOSS_PARAMS",
    "REWEIGHT_PARAMS",
    "build_loss",
    "ClassWeightedLoss",
    "CrossEntropyLoss",
    "FocalLoss",
    "LDAMLoss",
    "BalancedSoftmaxLoss",
    "LogitAdjustedLoss",
    "GLALoss",
    "GCALoss",
    "general_ce",
    "cb_weights",
    "ldam_margins",
    "cdb_weights",
    "cdb_tau",
    "drw_start_epoch",
]


# ---------------------------------------------------------------------------------------------
# weight formulas (host-side helpers, float64)


def _counts(class_counts, *, positive: bool) -> np.ndarray:
    if isinstance(class_counts, torch.Tensor):
        class_counts = class_counts.detach().cpu().numpy()
    n = np.asarray(class_counts, dtype=np.float64)
    if n.ndim != 1 or n.shape[0] == 0:
        raise ValueError(f"class_counts must be a non-empty 1-D sequence, got shape {n.shape}")
    if not np.all(np.isfinite(n)) or np.any(n < 0):
        raise ValueError(f"class_counts must be finite and >= 0, got {n.tolist()}")
    if positive and np.any(n <= 0):
        bad = np.nonzero(n <= 0)[0].tolist()
        raise ValueError(f"this loss/reweighting needs every class count > 0; class(es) {bad} have 0 images")
    return n


def cb_weights(class_counts, beta: float = 0.9999) -> torch.Tensor:
    """Class-balanced weights (Cui et al. 2019): ``(1 − β)/(1 − β^{n_c})``, normalised to sum to C (float64)."""
    n = _counts(class_counts, positive=True)
    beta = float(beta)
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta must be in [0, 1), got {beta}")
    w = (1.0 - beta) / (1.0 - np.power(beta, n))
    return torch.from_numpy(w / w.sum() * len(n))


def ldam_margins(class_counts, max_m: float = 0.5) -> torch.Tensor:
    """LDAM margins ``m_c = n_c^(−1/4)``, scaled so that the largest is ``max_m`` (float64)."""
    n = _counts(class_counts, positive=True)
    m = 1.0 / np.sqrt(np.sqrt(n))
    return torch.from_numpy(m * (float(max_m) / m.max()))


def cdb_tau(acc: torch.Tensor, tau: str | float = "dynamic") -> torch.Tensor:
    """τ of CDB from per-class accuracy ``acc`` (a 0-d tensor on acc's device; no host sync)."""
    if tau == "dynamic":
        b = acc.max() / (acc.min() + CDB_EPS) - 1.0
        return 2.0 * torch.sigmoid(b)
    if tau == "dynamic-v1":
        return torch.sigmoid(acc.max() / (acc.min() + CDB_EPS))
    return torch.as_tensor(float(tau), dtype=acc.dtype, device=acc.device)


def cdb_weights(acc, tau: str | float = "dynamic") -> torch.Tensor:
    """CDB weights ``d_c^τ`` with ``d_c = 1 − acc_c``, normalised to sum to C; uniform if all d_c are 0.

    Computed in float64 on ``acc``'s device without reading anything back to the host.
    """
    a = torch.as_tensor(acc).detach().to(torch.float64)
    d = 1.0 - a
    w = d.clamp_min(0.0) ** cdb_tau(a, tau)
    total = w.sum()
    C = a.shape[0]
    uniform = torch.ones_like(w)
    return torch.where(total > 0, w / total.clamp_min(torch.finfo(torch.float64).tiny) * C, uniform)


def drw_start_epoch(total_epochs: int, fraction: float = 0.8) -> int:
    """First (0-based) epoch with DRW's class-balanced weights: ``round(fraction · total)`` (160 of 200)."""
    return int(round(float(fraction) * int(total_epochs)))


def _check_cdb_tau(tau) -> str | float:
    if isinstance(tau, str):
        if tau not in ("dynamic", "dynamic-v1"):
            raise ValueError(f"cdb_tau must be 'dynamic', 'dynamic-v1' or a number >= 0, got {tau!r}")
        return tau
    t = float(tau)
    if not (math.isfinite(t) and t >= 0):
        raise ValueError(f"cdb_tau must be 'dynamic', 'dynamic-v1' or a number >= 0, got {tau!r}")
    return t


# ---------------------------------------------------------------------------------------------
# losses


class ClassWeightedLoss(nn.Module):
    """Base class: a per-sample loss ``per_sample(logits, targets) -> (N,)`` plus the class weighting.

    Attributes: ``name``, ``reweight``, ``reduction``, ``params`` (resolved, defaults included),
    ``num_classes``, ``config`` (all of it as a plain dict, for records), ``needs_normed_classifier``.
    Buffers: ``class_counts`` (C,), ``reweight_weights`` (C,) — the current ``r`` — and, for DRW,
    ``cb_target`` (C,).
    """

    name = "base"
    needs_normed_classifier = False

    def __init__(self, class_counts, *, reweight: str = "none", reduction: str = "weighted_mean",
                 label_smoothing: float = 0.0, params: dict[str, Any] | None = None, counts_positive: bool = False):
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)
        if reweight not in REWEIGHTS:
            raise ValueError(f"unknown reweight {reweight!r}; valid choices: {', '.join(REWEIGHTS)}")
        if reduction not in REDUCTIONS:
            raise ValueError(f"unknown reduction {reduction!r}; valid choices: {', '.join(REDUCTIONS)}")
        self.reweight = reweight
        self.reduction = reduction
        self.params = dict(params or {})
        n = _counts(class_counts, positive=counts_positive or reweight in ("cb", "drw"))
        self.num_classes = int(n.shape[0])
        self.register_buffer("class_counts", torch.from_numpy(n).to(torch.float32))
        ones = torch.ones(self.num_classes, dtype=torch.float32)
        if reweight == "cb":
            self.register_buffer("reweight_weights", cb_weights(n, self.params["beta"]).to(torch.float32))
        else:
            self.register_buffer("reweight_weights", ones.clone())
        if reweight == "drw":
            self.register_buffer("cb_target", cb_weights(n, self.params["beta"]).to(torch.float32))

    # -- configuration -------------------------------------------------------------------------

    @property
    def config(self) -> dict[str, Any]:
        smoothing = {"label_smoothing": self.label_smoothing} if self.label_smoothing else {}
        return {"loss": self.name, "reweight": self.reweight, "reduction": self.reduction, **smoothing, **self.params}

    def extra_repr(self) -> str:
        p = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return f"num_classes={self.num_classes}, reweight={self.reweight}, reduction={self.reduction}" + (
            f", {p}" if p else "")

    # -- schedule hooks (called between iterations, never inside forward) ------------------------

    def set_epoch(self, epoch: int, total_epochs: int) -> None:
        """DRW: uniform weights before epoch ``round(drw_fraction · total)`` (0-based), CB weights from it on."""
        if self.reweight != "drw":
            return
        epoch, total_epochs = int(epoch), int(total_epochs)
        if total_epochs < 1 or epoch < 0:
            raise ValueError(f"need 0 <= epoch and total_epochs >= 1, got epoch={epoch}, total={total_epochs}")
        active = epoch >= drw_start_epoch(total_epochs, self.params["drw_fraction"])
        with torch.no_grad():
            if active:
                self.reweight_weights.copy_(self.cb_target)
            else:
                self.reweight_weights.fill_(1.0)

    def update_class_accuracy(self, acc) -> None:
        """CDB: recompute the weights from per-class accuracy ``acc`` (C,) in [0, 1]; no-op otherwise."""
        if self.reweight != "cdb":
            return
        a = torch.as_tensor(acc).detach()
        if a.shape != (self.num_classes,):
            raise ValueError(f"acc must have shape ({self.num_classes},), got {tuple(a.shape)}")
        a = a.to(device=self.reweight_weights.device, dtype=torch.float64)
        # one host check per update (once per epoch), never in forward
        if not bool(((a >= 0) & (a <= 1)).all()):
            raise ValueError(f"class accuracies must lie in [0, 1] (no NaN), got {a.tolist()}")
        with torch.no_grad():
            self.reweight_weights.copy_(cdb_weights(a, self.params["cdb_tau"]).to(torch.float32))

    @property
    def weights(self) -> torch.Tensor:
        """The current reweighting ``r`` (C,), a copy."""
        return self.reweight_weights.detach().clone()

    # -- forward --------------------------------------------------------------------------------

    def per_sample(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def sample_losses(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The per-sample loss under label smoothing ε: ``(1 − ε) ℓ(z, y) + ε · mean_c ℓ(z, c)``, the loss of the
        smoothed target distribution (every loss here is linear in it; for CE this is torch's ``label_smoothing``)."""
        losses = self.per_sample(logits, targets)
        if not self.label_smoothing:
            return losses
        every = torch.stack([self.per_sample(logits, torch.full_like(targets, c)) for c in range(self.num_classes)])
        return (1 - self.label_smoothing) * losses + self.label_smoothing * every.mean(0)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor, class_weights: torch.Tensor | None = None
                ) -> torch.Tensor:
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(f"logits must be (N, {self.num_classes}), got {tuple(logits.shape)}")
        z = logits.float()
        y = targets.long()
        losses = self.sample_losses(z, y)
        w = self.reweight_weights
        if class_weights is not None:
            cw = class_weights.detach().to(device=z.device, dtype=torch.float32)
            if cw.shape != (self.num_classes,):
                raise ValueError(f"class_weights must have shape ({self.num_classes},), got {tuple(cw.shape)}")
            w = w * cw
        a = w[y]
        num = (a * losses).sum()
        if self.reduction == "mean":
            return num / losses.shape[0]
        return num / a.sum().clamp_min(torch.finfo(torch.float32).tiny)


def _target_log_prob(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.log_softmax(z, dim=1).gather(1, y[:, None]).squeeze(1)


class CrossEntropyLoss(ClassWeightedLoss):
    name = "ce"

    def per_sample(self, z, y):
        return -_target_log_prob(z, y)


class FocalLoss(ClassWeightedLoss):
    """``−(1 − p_y)^γ log p_y`` (Lin et al. 2017); the class weights act as α_t."""

    name = "focal"

    def __init__(self, class_counts, **kw):
        super().__init__(class_counts, **kw)
        self.gamma = float(self.params["gamma"])
        if not (math.isfinite(self.gamma) and self.gamma >= 0):
            raise ValueError(f"gamma must be >= 0, got {self.gamma}")

    def per_sample(self, z, y):
        logp = _target_log_prob(z, y)
        if self.gamma == 0.0:  # a hyper-parameter, not a tensor value
            return -logp
        one_minus_p = (-torch.expm1(logp)).clamp_min(0.0)  # 1 − p_y, accurate near p_y = 1
        return -(one_minus_p ** self.gamma) * logp


class LDAMLoss(ClassWeightedLoss):
    """LDAM (Cao et al. 2019): ``CE(s · (z − m_y e_y), y)`` with ``m_c ∝ n_c^(−1/4)``, ``max m = max_m``."""

    name = "ldam"
    needs_normed_classifier = True

    def __init__(self, class_counts, **kw):
        super().__init__(class_counts, counts_positive=True, **kw)
        self.max_m = float(self.params["max_m"])
        self.s = float(self.params["s"])
        if not self.max_m > 0:
            raise ValueError(f"max_m must be > 0, got {self.max_m}")
        if not self.s > 0:
            raise ValueError(f"s must be > 0, got {self.s}")
        self.register_buffer("margins", ldam_margins(self.class_counts.double().cpu(), self.max_m).float())

    def per_sample(self, z, y):
        return -_target_log_prob(self.s * _minus_target_margin(z, y, self.margins), y)


def _minus_target_margin(z: torch.Tensor, y: torch.Tensor, margins: torch.Tensor) -> torch.Tensor:
    """``z`` with each row's target logit minus its class margin (scatter, not F.one_hot: no value check, no
    host sync)."""
    idx = y[:, None]
    return z.scatter(1, idx, z.gather(1, idx) - margins[y][:, None])


class _LogPriorLoss(ClassWeightedLoss):
    tau = 1.0

    def __init__(self, class_counts, **kw):
        super().__init__(class_counts, counts_positive=True, **kw)
        prior = self.class_counts.double() / self.class_counts.double().sum()
        self.register_buffer("log_prior", prior.log().float())

    def per_sample(self, z, y):
        return -_target_log_prob(z + self.tau * self.log_prior, y)


class BalancedSoftmaxLoss(_LogPriorLoss):
    """Balanced Softmax (Ren et al. 2020): ``CE(z + log π, y)``."""

    name = "balanced-softmax"


class LogitAdjustedLoss(_LogPriorLoss):
    """Logit-adjusted loss (Menon et al. 2021): ``CE(z + τ log π, y)``."""

    name = "logit-adjusted"

    def __init__(self, class_counts, **kw):
        super().__init__(class_counts, **kw)
        self.tau = float(self.params["tau"])
        if not math.isfinite(self.tau):
            raise ValueError(f"tau must be finite, got {self.tau}")


def general_ce(log_p: torch.Tensor, q: float) -> torch.Tensor:
    """The general cross-entropy family ``(1 − p^q)/q`` of ``log p`` (``−log p`` at q = 0), stable for p → 1."""
    if q == 0.0:  # a hyper-parameter, not a tensor value
        return -log_p
    return -torch.expm1(q * log_p) / q


def _check_q(q: float) -> float:
    q = float(q)
    if not (math.isfinite(q) and -1.0 <= q <= 1.0):
        raise ValueError(f"q must be in [-1, 1] (-1: sum-exponential, 0: CE, 1: MAE), got {q}")
    return q


class GLALoss(LogitAdjustedLoss):
    """Generalized Logit-Adjusted (Cortes, Mohri & Zhong 2025; form derived from the abstract, see the module doc):
    ``ℓ_q(softmax(z + τ log π)_y)``."""

    name = "gla"

    def __init__(self, class_counts, **kw):
        super().__init__(class_counts, **kw)
        self.q = _check_q(self.params["q"])

    def per_sample(self, z, y):
        return general_ce(_target_log_prob(z + self.tau * self.log_prior, y), self.q)


class GCALoss(ClassWeightedLoss):
    """Generalized Class-Aware weighted (Cortes, Mohri & Zhong 2025; form derived from the abstract, see the module
    doc): ``w_y ℓ_q(softmax(z − m_y e_y)_y)``, ``w_c ∝ 1/n_c`` (in ``reweight_weights``), ``m_c ∝ n_c^(−1/4)``."""

    name = "gca"

    def __init__(self, class_counts, **kw):
        if kw.get("reweight", "none") != "none":
            raise ValueError("gca has its own inverse-frequency class weights: use reweight='none'")
        super().__init__(class_counts, counts_positive=True, **kw)
        self.q = _check_q(self.params["q"])
        margin = float(self.params["margin_max"])
        if not (math.isfinite(margin) and margin >= 0):
            raise ValueError(f"margin_max must be >= 0, got {margin}")
        n = self.class_counts.double().cpu()
        w = 1.0 / n
        with torch.no_grad():
            self.reweight_weights.copy_((w / w.sum() * len(n)).float())
        self.register_buffer("margins", ldam_margins(n, margin).float())

    def per_sample(self, z, y):
        return general_ce(_target_log_prob(_minus_target_margin(z, y, self.margins), y), self.q)


_CLASSES = {
    "ce": CrossEntropyLoss,
    "focal": FocalLoss,
    "ldam": LDAMLoss,
    "balanced-softmax": BalancedSoftmaxLoss,
    "logit-adjusted": LogitAdjustedLoss,
    "gla": GLALoss,
    "gca": GCALoss,
}


def build_loss(name: str, class_counts, *, reweight: str = "none", reduction: str = "weighted_mean",
               label_smoothing: float = 0.0, **params) -> ClassWeightedLoss:
    """Build one of ``LOSSES`` with one of ``REWEIGHTS`` and one of ``REDUCTIONS``.

    ``params`` are the loss's and the reweighting's parameters (``LOSS_PARAMS``, ``REWEIGHT_PARAMS``);
    a parameter given as ``None`` takes its default; one that neither the loss nor the reweighting
    has is a ValueError.
    """
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid choices: {', '.join(LOSSES)}")
    if reweight not in REWEIGHTS:
        raise ValueError(f"unknown reweight {reweight!r}; valid choices: {', '.join(REWEIGHTS)}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; valid choices: {', '.join(REDUCTIONS)}")
    valid = {**LOSS_PARAMS[name], **REWEIGHT_PARAMS[reweight]}
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {unknown} for loss {name!r} with reweight {reweight!r}; "
            f"valid: {', '.join(valid) if valid else '(none)'}")
    resolved = {k: (params[k] if params.get(k) is not None else v) for k, v in valid.items()}
    if "beta" in resolved:
        resolved["beta"] = float(resolved["beta"])
        if not 0.0 <= resolved["beta"] < 1.0:
            raise ValueError(f"beta must be in [0, 1), got {resolved['beta']}")
    if "drw_fraction" in resolved:
        resolved["drw_fraction"] = float(resolved["drw_fraction"])
        if not 0.0 <= resolved["drw_fraction"] <= 1.0:
            raise ValueError(f"drw_fraction must be in [0, 1], got {resolved['drw_fraction']}")
    if "cdb_tau" in resolved:
        resolved["cdb_tau"] = _check_cdb_tau(resolved["cdb_tau"])
    for k in ("gamma", "max_m", "s", "tau", "q", "margin_max"):
        if k in resolved:
            resolved[k] = float(resolved[k])
    return _CLASSES[name](class_counts, reweight=reweight, reduction=reduction, label_smoothing=label_smoothing,
                          params=resolved)
