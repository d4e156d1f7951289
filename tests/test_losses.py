"""Tests of semscale.losses against formulas written out in NumPy / math on a hand-made batch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from semscale.losses import (
    LOSSES,
    REDUCTIONS,
    REWEIGHTS,
    build_loss,
    cb_weights,
    cdb_weights,
    drw_start_epoch,
    ldam_margins,
)
from semscale.scale import dsb_weights

# 4 samples, 3 classes
LOGITS = np.array(
    [
        [2.0, 0.5, -1.0],
        [0.1, 0.2, 0.3],
        [-0.5, 1.5, 0.0],
        [1.0, -2.0, 3.0],
    ]
)
TARGETS = np.array([0, 2, 1, 2])
COUNTS = [50, 10, 2]


def z():
    return torch.tensor(LOGITS, dtype=torch.float32)


def y():
    return torch.tensor(TARGETS)


# ---------------------------------------------------------------------------------------------
# NumPy references


def np_log_softmax(x):
    x = np.asarray(x, dtype=np.float64)
    m = x.max(axis=1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=1, keepdims=True))


def np_ce(x, t):
    return -np_log_softmax(x)[np.arange(len(t)), t]


def reduce(L, a, reduction):
    L, a = np.asarray(L, float), np.asarray(a, float)
    if reduction == "weighted_mean":
        return float((a * L).sum() / a.sum())
    return float((a * L).sum() / len(L))


def np_cb(counts, beta):
    w = np.array([(1 - beta) / (1 - beta**n) for n in counts])
    return w / w.sum() * len(counts)


def close(a, b, tol=1e-5):
    return abs(float(a) - float(b)) <= tol * max(1.0, abs(float(b)))


# ---------------------------------------------------------------------------------------------
# CE


def test_ce_matches_formula_and_torch():
    loss = build_loss("ce", COUNTS)
    expected = np_ce(LOGITS, TARGETS).mean()
    assert close(loss(z(), y()), expected)
    assert close(loss(z(), y()), F.cross_entropy(z(), y()))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_ce_with_class_weights_both_reductions(reduction):
    a = np.array([0.5, 2.0, 1.5])
    loss = build_loss("ce", COUNTS, reduction=reduction)
    got = loss(z(), y(), class_weights=torch.tensor(a))
    expected = reduce(np_ce(LOGITS, TARGETS), a[TARGETS], reduction)
    assert close(got, expected)
    if reduction == "weighted_mean":
        assert close(got, F.cross_entropy(z(), y(), weight=torch.tensor(a, dtype=torch.float32)))
    else:
        # Σ a_y L / N by hand: a_y = [0.5, 1.5, 2.0, 1.5]
        L = np_ce(LOGITS, TARGETS)
        assert close(got, (0.5 * L[0] + 1.5 * L[1] + 2.0 * L[2] + 1.5 * L[3]) / 4)


def test_uniform_weights_make_reductions_equal():
    a = build_loss("ce", COUNTS, reduction="mean")(z(), y())
    b = build_loss("ce", COUNTS, reduction="weighted_mean")(z(), y())
    assert close(a, b)


# ---------------------------------------------------------------------------------------------
# Focal


def np_focal(x, t, gamma):
    logp = np_log_softmax(x)[np.arange(len(t)), t]
    p = np.exp(logp)
    return -((1 - p) ** gamma) * logp


@pytest.mark.parametrize("gamma", [0.0, 1.0, 2.0])
def test_focal_without_alpha(gamma):
    loss = build_loss("focal", COUNTS, gamma=gamma)
    assert close(loss(z(), y()), np_focal(LOGITS, TARGETS, gamma).mean())
    if gamma == 0.0:
        assert close(loss(z(), y()), np_ce(LOGITS, TARGETS).mean())


def test_focal_default_gamma_is_ldam_drw_value_and_matches_their_formula():
    loss = build_loss("focal", COUNTS)
    assert loss.gamma == 1.0
    # LDAM-DRW: focal_loss(CE_i, γ) = mean((1 − exp(−CE_i))^γ · CE_i) (no class weights)
    ce = np_ce(LOGITS, TARGETS)
    assert close(loss(z(), y()), np.mean((1 - np.exp(-ce)) ** 1.0 * ce))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_focal_with_alpha(reduction):
    gamma = 2.0
    alpha = np.array([0.25, 1.0, 3.0])
    loss = build_loss("focal", COUNTS, gamma=gamma, reduction=reduction)
    got = loss(z(), y(), class_weights=torch.tensor(alpha))
    # Lin et al.: FL = −α_t (1 − p_t)^γ log p_t
    assert close(got, reduce(np_focal(LOGITS, TARGETS, gamma), alpha[TARGETS], reduction))


def test_focal_with_cb_alpha():
    loss = build_loss("focal", COUNTS, gamma=1.0, reweight="cb", beta=0.99, reduction="mean")
    alpha = np_cb(COUNTS, 0.99)
    assert close(loss(z(), y()), reduce(np_focal(LOGITS, TARGETS, 1.0), alpha[TARGETS], "mean"))


# ---------------------------------------------------------------------------------------------
# LDAM


def ref_ldam(x, t, counts, max_m=0.5, s=30.0, weight=None):
    """LDAM-DRW's LDAMLoss written out: margins on the target logit, then scale by s, then CE."""
    m_list = 1.0 / np.sqrt(np.sqrt(np.asarray(counts, float)))
    m_list = m_list * (max_m / np.max(m_list))
    out = np.array(x, dtype=np.float64, copy=True)
    for i, c in enumerate(t):
        out[i, c] -= m_list[c]
    L = np_ce(s * out, t)
    a = np.ones(len(counts)) if weight is None else np.asarray(weight, float)
    return reduce(L, a[t], "weighted_mean"), m_list


def test_ldam_margins():
    m = ldam_margins(COUNTS, 0.5).numpy()
    assert np.isclose(m.max(), 0.5) and np.argmax(m) == 2  # the smallest class gets max_m
    expected = [0.5 * (2 / 50) ** 0.25, 0.5 * (2 / 10) ** 0.25, 0.5]
    np.testing.assert_allclose(m, expected, rtol=1e-12)
    loss = build_loss("ldam", COUNTS)
    np.testing.assert_allclose(loss.margins.numpy(), expected, rtol=1e-6)
    assert loss.needs_normed_classifier
    assert loss.s == 30.0 and loss.max_m == 0.5


def test_ldam_value_matches_reference():
    # cosine-like logits, as from a NormedLinear head
    x = np.tanh(LOGITS)
    loss = build_loss("ldam", COUNTS)
    expected, _ = ref_ldam(x, TARGETS, COUNTS)
    assert close(loss(torch.tensor(x, dtype=torch.float32), y()), expected)
    # other max_m / s, with DRW's CB weights switched on
    loss = build_loss("ldam", COUNTS, max_m=0.3, s=10, reweight="drw")
    loss.set_epoch(199, 200)
    expected, _ = ref_ldam(x, TARGETS, COUNTS, max_m=0.3, s=10, weight=np_cb(COUNTS, 0.9999))
    assert close(loss(torch.tensor(x, dtype=torch.float32), y()), expected)


def test_only_ldam_needs_normed_classifier():
    for name in LOSSES:
        assert build_loss(name, COUNTS).needs_normed_classifier == (name == "ldam")


# ---------------------------------------------------------------------------------------------
# Balanced Softmax, logit adjustment


def test_balanced_softmax():
    prior = np.array(COUNTS, float) / sum(COUNTS)
    expected = np_ce(LOGITS + np.log(prior), TARGETS).mean()
    assert close(build_loss("balanced-softmax", COUNTS)(z(), y()), expected)
    # the same with log n_c (Ren et al. write it with n_c; the constant cancels)
    assert close(expected, np_ce(LOGITS + np.log(np.array(COUNTS, float)), TARGETS).mean(), 1e-12)


@pytest.mark.parametrize("tau", [None, 0.0, 0.5, 2.0])
def test_logit_adjusted(tau):
    t = 1.0 if tau is None else tau
    prior = np.array(COUNTS, float) / sum(COUNTS)
    expected = np_ce(LOGITS + t * np.log(prior), TARGETS).mean()
    loss = build_loss("logit-adjusted", COUNTS, tau=tau)
    assert loss.tau == t
    assert close(loss(z(), y()), expected)


def test_logit_adjusted_tau1_is_balanced_softmax():
    a = build_loss("logit-adjusted", COUNTS)(z(), y())
    b = build_loss("balanced-softmax", COUNTS)(z(), y())
    assert close(a, b)


# ---------------------------------------------------------------------------------------------
# CB, DRW


@pytest.mark.parametrize("beta", [0.9, 0.99, 0.9999])
def test_cb_weights_values(beta):
    w = cb_weights(COUNTS, beta).numpy()
    expected = np_cb(COUNTS, beta)
    np.testing.assert_allclose(w, expected, rtol=1e-12)
    assert np.isclose(w.sum(), 3.0)
    assert w[0] < w[1] < w[2]


def test_cb_weights_by_hand():
    # β = 0.5, n = [1, 2]: (1−β)/(1−β^n) = [1, 2/3] → normalised to sum 2: [1.2, 0.8]
    np.testing.assert_allclose(cb_weights([1, 2], 0.5).numpy(), [1.2, 0.8], rtol=1e-12)


def test_cb_loss_is_weighted_ce():
    loss = build_loss("ce", COUNTS, reweight="cb")
    w = torch.tensor(np_cb(COUNTS, 0.9999), dtype=torch.float32)
    np.testing.assert_allclose(loss.weights.numpy(), w.numpy(), rtol=1e-6)
    assert close(loss(z(), y()), F.cross_entropy(z(), y(), weight=w))
    loss.set_epoch(0, 200)  # no-op for cb
    np.testing.assert_allclose(loss.weights.numpy(), w.numpy(), rtol=1e-6)


@pytest.mark.parametrize("total,start", [(200, 160), (10, 8), (5, 4), (1, 1), (3, 2)])
def test_drw_switching_epoch(total, start):
    assert drw_start_epoch(total) == start
    loss = build_loss("ce", COUNTS, reweight="drw")
    cb = np_cb(COUNTS, 0.9999)
    for epoch in range(total):
        loss.set_epoch(epoch, total)
        expected = cb if epoch >= start else np.ones(3)
        np.testing.assert_allclose(loss.weights.numpy(), expected, rtol=1e-6)


def test_drw_loss_value_switches():
    loss = build_loss("ce", COUNTS, reweight="drw", beta=0.99)
    np.testing.assert_allclose(loss.weights.numpy(), np.ones(3))  # uniform before any set_epoch
    loss.set_epoch(159, 200)
    assert close(loss(z(), y()), np_ce(LOGITS, TARGETS).mean())
    loss.set_epoch(160, 200)
    cb = np_cb(COUNTS, 0.99)
    assert close(loss(z(), y()), reduce(np_ce(LOGITS, TARGETS), cb[TARGETS], "weighted_mean"))
    loss.set_epoch(3, 200)  # going back (e.g. a new run) restores uniform weights
    np.testing.assert_allclose(loss.weights.numpy(), np.ones(3))


def test_drw_fraction_param():
    loss = build_loss("ce", COUNTS, reweight="drw", drw_fraction=0.5)
    loss.set_epoch(4, 10)
    np.testing.assert_allclose(loss.weights.numpy(), np.ones(3))
    loss.set_epoch(5, 10)
    np.testing.assert_allclose(loss.weights.numpy(), np_cb(COUNTS, 0.9999), rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# CDB


def np_cdb(acc, tau="dynamic", eps=0.01):
    acc = np.asarray(acc, float)
    d = 1 - acc
    if tau == "dynamic":  # official code, ImageNet-LT/loss/CDBSoftmaxLoss.py
        b = (1 - d.min()) / (1 - d.max() + eps) - 1
        tau = 2 / (1 + math.exp(-b))
    elif tau == "dynamic-v1":  # official code, CIFAR-LT/losses/cdb_loss.py
        b = (1 - d.min()) / (1 - d.max() + eps)
        tau = 1 / (1 + math.exp(-b))
    w = d**tau
    return w / w.sum() * len(w)


def test_cdb_uniform_before_first_update():
    loss = build_loss("ce", COUNTS, reweight="cdb")
    np.testing.assert_allclose(loss.weights.numpy(), np.ones(3))
    assert close(loss(z(), y()), np_ce(LOGITS, TARGETS).mean())


@pytest.mark.parametrize("tau", ["dynamic", "dynamic-v1", 1.5, 0.0])
def test_cdb_weights_after_update(tau):
    acc = [0.9, 0.5, 0.2]
    loss = build_loss("ce", COUNTS, reweight="cdb", cdb_tau=tau)
    loss.update_class_accuracy(torch.tensor(acc))
    expected = np_cdb(acc, tau)
    np.testing.assert_allclose(loss.weights.numpy(), expected, rtol=1e-6)
    assert close(loss(z(), y()), reduce(np_ce(LOGITS, TARGETS), expected[TARGETS], "weighted_mean"))


def test_cdb_dynamic_tau_by_hand():
    # A = [0.9, 0.5, 0.2]: b = 0.9 / 0.21 − 1 = 3.2857..., τ = 2σ(b) = 1.9281...
    acc = np.array([0.9, 0.5, 0.2])
    b = 0.9 / (0.2 + 0.01) - 1
    tau = 2 / (1 + math.exp(-b))
    assert 1.92 < tau < 1.93
    d = np.array([0.1, 0.5, 0.8])
    w = d**tau
    np.testing.assert_allclose(cdb_weights(acc).numpy(), w / w.sum() * 3, rtol=1e-12)
    # equal accuracies: τ ≈ 1 and uniform weights
    np.testing.assert_allclose(cdb_weights([0.6, 0.6, 0.6]).numpy(), np.ones(3), rtol=1e-12)


def test_cdb_all_perfect_keeps_uniform_and_zero_weight_batch_is_zero():
    loss = build_loss("ce", COUNTS, reweight="cdb")
    loss.update_class_accuracy([1.0, 1.0, 1.0])
    np.testing.assert_allclose(loss.weights.numpy(), np.ones(3))
    # classes 0 and 2 perfect -> weight 0; a batch of only those classes gives 0, not NaN
    loss.update_class_accuracy([1.0, 0.5, 1.0])
    np.testing.assert_allclose(loss.weights.numpy(), [0.0, 3.0, 0.0])
    out = loss(z()[[0, 1, 3]], torch.tensor([0, 2, 2]))
    assert out.item() == 0.0


def test_cdb_update_validates():
    loss = build_loss("ce", COUNTS, reweight="cdb")
    with pytest.raises(ValueError):
        loss.update_class_accuracy([0.5, 0.5])
    with pytest.raises(ValueError):
        loss.update_class_accuracy([0.5, float("nan"), 0.5])
    with pytest.raises(ValueError):
        loss.update_class_accuracy([0.5, 1.5, 0.5])
    # no-op for the other reweightings
    other = build_loss("ce", COUNTS, reweight="cb")
    before = other.weights
    other.update_class_accuracy([0.1, 0.2, 0.3])
    assert torch.equal(other.weights, before)


# ---------------------------------------------------------------------------------------------
# DSB class weights multiply the loss's own reweighting


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_dsb_class_weights_multiply_cb(reduction):
    S = torch.tensor([40.0, 25.0, 10.0], dtype=torch.float64)
    dsb = dsb_weights(S)  # float64, mean 1
    cb = np_cb(COUNTS, 0.9999)
    a = cb * dsb.numpy()
    loss = build_loss("ce", COUNTS, reweight="cb", reduction=reduction)
    got = loss(z(), y(), class_weights=dsb)
    assert got.dtype == torch.float32
    assert close(got, reduce(np_ce(LOGITS, TARGETS), a[TARGETS], reduction))
    if reduction == "weighted_mean":
        assert close(got, F.cross_entropy(z(), y(), weight=torch.tensor(a, dtype=torch.float32)))


def test_dsb_class_weights_with_ldam_and_drw():
    x = np.tanh(LOGITS)
    dsb = dsb_weights(torch.tensor([3.0, 2.0, 1.0]))
    loss = build_loss("ldam", COUNTS, reweight="drw")
    loss.set_epoch(170, 200)
    expected, _ = ref_ldam(x, TARGETS, COUNTS, weight=np_cb(COUNTS, 0.9999) * dsb.numpy())
    assert close(loss(torch.tensor(x, dtype=torch.float32), y(), class_weights=dsb), expected)


def test_class_weights_shape_checked():
    loss = build_loss("ce", COUNTS)
    with pytest.raises(ValueError):
        loss(z(), y(), class_weights=torch.ones(4))
    with pytest.raises(ValueError):
        loss(torch.zeros(4, 5), y())


# ---------------------------------------------------------------------------------------------
# GLA and GCA (Cortes, Mohri & Zhong 2025; forms derived from the abstract)


def _np_log_softmax(x):
    x = x - x.max(1, keepdims=True)
    return x - np.log(np.exp(x).sum(1, keepdims=True))


def test_gla_by_hand():
    prior = np.array(COUNTS, float) / sum(COUNTS)
    logp = _np_log_softmax(LOGITS + 0.7 * np.log(prior))[np.arange(len(TARGETS)), TARGETS]
    p = np.exp(logp)
    for q in (0.5, 1.0, -1.0):
        expected = ((1 - p ** q) / q).mean()
        assert close(build_loss("gla", COUNTS, q=q, tau=0.7)(z(), y()), expected)
    assert close(build_loss("gla", COUNTS, q=1.0, tau=0.7)(z(), y()), (1 - p).mean())  # MAE
    assert close(build_loss("gla", COUNTS, q=-1.0, tau=0.7)(z(), y()), (1 / p - 1).mean())  # sum-exponential
    # q = 0 is the logit-adjusted loss
    assert close(build_loss("gla", COUNTS, q=0.0, tau=0.7)(z(), y()), build_loss("logit-adjusted", COUNTS, tau=0.7)(z(), y()), 1e-6)
    with pytest.raises(ValueError, match="q must be in"):
        build_loss("gla", COUNTS, q=1.5)


def test_gca_by_hand():
    n = np.array(COUNTS, float)
    w = (1 / n) / (1 / n).sum() * len(n)
    m = n ** -0.25 * (0.4 / (n ** -0.25).max())
    x = LOGITS.copy()
    x[np.arange(len(TARGETS)), TARGETS] -= m[TARGETS]
    p = np.exp(_np_log_softmax(x)[np.arange(len(TARGETS)), TARGETS])
    per_sample = (1 - p ** 0.5) / 0.5
    a = w[TARGETS]
    loss = build_loss("gca", COUNTS, q=0.5, margin_max=0.4)
    assert close(loss(z(), y()), (a * per_sample).sum() / a.sum())
    # composes with DSB-style extra class weights: they multiply
    extra = np.array([1.0, 0.5, 2.0])
    a2 = (w * extra)[TARGETS]
    assert close(loss(z(), y(), class_weights=torch.tensor(extra)), (a2 * per_sample).sum() / a2.sum())
    # no margin, q = 0: inverse-frequency weighted CE
    ce = -_np_log_softmax(LOGITS)[np.arange(len(TARGETS)), TARGETS]
    assert close(build_loss("gca", COUNTS, q=0.0, margin_max=0.0)(z(), y()), (a * ce).sum() / a.sum())


# ---------------------------------------------------------------------------------------------
# gradients, dtypes, devices, compile


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("reweight", REWEIGHTS)
def test_gradient_flows(name, reweight):
    if name == "gca" and reweight != "none":
        with pytest.raises(ValueError, match="its own inverse-frequency"):
            build_loss(name, COUNTS, reweight=reweight)
        return
    loss = build_loss(name, COUNTS, reweight=reweight)
    loss.set_epoch(9, 10)
    loss.update_class_accuracy([0.9, 0.5, 0.2])
    x = torch.tensor(np.tanh(LOGITS), dtype=torch.float32, requires_grad=True)
    out = loss(x, y(), class_weights=torch.tensor([1.0, 0.5, 2.0]))
    assert out.ndim == 0 and torch.isfinite(out)
    out.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_bf16_logits_computed_in_float32():
    loss = build_loss("focal", COUNTS, gamma=2.0)
    out = loss(z().to(torch.bfloat16), y())
    assert out.dtype == torch.float32
    expected = np_focal(torch.tensor(LOGITS).to(torch.bfloat16).double().numpy(), TARGETS, 2.0).mean()
    assert close(out, expected, 1e-5)


def test_weights_are_buffers():
    loss = build_loss("ldam", COUNTS, reweight="drw")
    keys = set(loss.state_dict())
    assert {"class_counts", "reweight_weights", "cb_target", "margins"} <= keys
    loss.set_epoch(199, 200)
    fresh = build_loss("ldam", COUNTS, reweight="drw")
    fresh.load_state_dict(loss.state_dict())
    assert torch.equal(fresh.weights, loss.weights)
    moved = fresh.to(torch.float64)  # buffers follow .to() (device moves work the same way)
    assert moved.reweight_weights.dtype == torch.float64
    assert build_loss("logit-adjusted", COUNTS).log_prior.shape == (3,)


def test_in_place_updates_keep_buffer_storage():
    # a captured CUDA graph / compiled forward keeps reading the same storage
    loss = build_loss("ce", COUNTS, reweight="drw")
    ptr = loss.reweight_weights.data_ptr()
    loss.set_epoch(199, 200)
    assert loss.reweight_weights.data_ptr() == ptr
    loss = build_loss("ce", COUNTS, reweight="cdb")
    ptr = loss.reweight_weights.data_ptr()
    loss.update_class_accuracy([0.9, 0.5, 0.2])
    assert loss.reweight_weights.data_ptr() == ptr


def test_compiles_without_graph_breaks():
    # fullgraph=True fails on .item(), data-dependent Python branching and other graph breaks
    loss = build_loss("ldam", COUNTS, reweight="drw")
    compiled = torch.compile(loss, backend="eager", fullgraph=True)
    x = torch.tensor(np.tanh(LOGITS), dtype=torch.float32)
    cw = torch.tensor([1.0, 0.5, 2.0])
    assert close(compiled(x, y(), cw), loss(x, y(), cw))
    loss.set_epoch(199, 200)  # in-place buffer update is seen by the compiled module
    assert close(compiled(x, y(), cw), loss(x, y(), cw))
    focal = build_loss("focal", COUNTS, reweight="cdb", reduction="mean")
    assert close(torch.compile(focal, backend="eager", fullgraph=True)(z(), y()), focal(z(), y()))


# ---------------------------------------------------------------------------------------------
# bad input


def test_bad_names_raise_listing_choices():
    with pytest.raises(ValueError, match="valid choices: ce, focal, ldam"):
        build_loss("nope", COUNTS)
    with pytest.raises(ValueError, match="none, cb, drw, cdb"):
        build_loss("ce", COUNTS, reweight="nope")
    with pytest.raises(ValueError, match="weighted_mean, mean"):
        build_loss("ce", COUNTS, reduction="sum")
    with pytest.raises(ValueError, match="valid: gamma"):
        build_loss("focal", COUNTS, tau=1.0)
    with pytest.raises(ValueError, match="unknown parameter"):
        build_loss("ce", COUNTS, gamma=2.0)
    with pytest.raises(ValueError, match="unknown parameter"):
        build_loss("ce", COUNTS, reweight="none", beta=0.99)
    with pytest.raises(ValueError):
        build_loss("ce", COUNTS, reweight="cdb", cdb_tau="sometimes")
    with pytest.raises(ValueError):
        build_loss("ce", COUNTS, reweight="cb", beta=1.0)
    with pytest.raises(ValueError):
        build_loss("focal", COUNTS, gamma=-1)


def test_none_params_take_defaults():
    loss = build_loss("focal", COUNTS, reweight="cb", gamma=None, beta=None)
    assert loss.params == {"gamma": 1.0, "beta": 0.9999}
    assert loss.config == {"loss": "focal", "reweight": "cb", "reduction": "weighted_mean", "gamma": 1.0, "beta": 0.9999}


def test_counts_validation():
    # losses that use the counts need every class present; plain CE does not
    for name in ("ldam", "balanced-softmax", "logit-adjusted"):
        with pytest.raises(ValueError, match="class count"):
            build_loss(name, [5, 0, 3])
    with pytest.raises(ValueError, match="class count"):
        build_loss("ce", [5, 0, 3], reweight="cb")
    assert torch.isfinite(build_loss("ce", [5, 0, 3])(z(), y()))
    with pytest.raises(ValueError):
        build_loss("ce", [5, -1, 3])
    with pytest.raises(ValueError):
        build_loss("ce", [])
