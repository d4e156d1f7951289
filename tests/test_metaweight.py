"""semscale.metaweight: Meta-Weight-Net's meta gradient and weighted step by hand, and an MWN+DSB run's resume."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_COUNTS, tiny_config
from semscale import build, metaweight, pipeline
from semscale.train import TrainingInterrupted, train


def test_mwn_meta_gradient_and_step_by_hand(tmp_path):
    """V's gradient through the one-step look-ahead, computed independently from per-sample gradients:
    θ' = θ − lr Σ_i ã_i g_i with ã = V(L)·c / Σ V(L)·c and g_i = ∇L_i(θ), so
    ∂meta/∂φ = Σ_i (∂ã_i/∂φ) · (−lr ⟨∇meta(θ'), g_i⟩)."""
    config = build.resolve(tiny_config(mwn=True, batch_size=8, mwn_meta_per_class=2), np.array(TINY_COUNTS))
    data = pipeline.load_run_data(config, torch.device("cpu"))
    run = build.build_run(config, data, torch.device("cpu"))
    assert run.mwn.meta_labels.bincount().tolist() == [2] * 10
    for group in run.optimizer.param_groups:
        group["lr"] = 0.05
    g = pipeline.epoch_generator(0, 1, torch.device("cpu"))
    ids = torch.arange(8) * 50
    x = pipeline.to_input(data.train_images[ids], data.mean, data.std)
    y = data.train_labels[ids]
    extra = torch.linspace(0.5, 2.0, 10)
    before, v_before, g_state = copy.deepcopy(run.model), copy.deepcopy(run.mwn.net), g.get_state()

    loss, _ = metaweight.weighted_step(run, ids, x, y, extra, g)

    # by hand: per-sample gradients of the batch loss under the current network (train mode, batch statistics)
    model = copy.deepcopy(before)
    params = list(model.parameters())
    losses = F.cross_entropy(model(x), y, reduction="none")
    grads = [torch.autograd.grad(losses[i], params, retain_graph=True) for i in range(8)]
    a = v_before(losses.detach()) * extra[y]
    a_tilde = a / a.sum()
    ahead = copy.deepcopy(before)
    with torch.no_grad():
        for k, p in enumerate(ahead.parameters()):
            p -= 0.05 * sum(a_tilde[i].detach() * grads[i][k] for i in range(8))
    g2 = torch.Generator()
    g2.set_state(g_state)
    pick = torch.randperm(20, generator=g2)[:8]
    x_meta = pipeline.to_input(pipeline.augment(run.mwn.meta_images[pick], config, g2), data.mean, data.std)
    meta = F.cross_entropy(ahead(x_meta), run.mwn.meta_labels[pick])
    meta_grads = torch.autograd.grad(meta, list(ahead.parameters()))
    s = torch.stack([-0.05 * sum((mg * gi).sum() for mg, gi in zip(meta_grads, grads[i])) for i in range(8)])
    expected = torch.autograd.grad((a_tilde * s).sum(), list(v_before.parameters()))
    for p, e in zip(run.mwn.net.parameters(), expected):
        assert torch.allclose(p.grad, e, rtol=1e-3, atol=1e-9)
    # the network's loss: Σ a L / Σ a with V after its step
    with torch.no_grad():
        l2 = F.cross_entropy(before(x), y, reduction="none")
        a2 = run.mwn.net(l2) * extra[y]
    assert loss.item() == pytest.approx(((a2 / a2.sum()) * l2).sum().item(), rel=1e-5)
    # V moved by its own optimiser (SGD 1e-5, Nesterov): a tiny step
    assert not torch.equal(run.mwn.net.linear2.bias, v_before.linear2.bias)


def test_mwn_with_dsb_resumes_bit_identically(tmp_path):
    cfg = dict(mwn=True, dsb=True, dsb_stage_epochs=1, epochs=2)
    straight = train(tiny_config(**cfg), tmp_path / "a")
    with pytest.raises(TrainingInterrupted):
        train(tiny_config(**cfg, stop_after_epoch=1), tmp_path / "b")
    resumed = train(tiny_config(**cfg), tmp_path / "b", resume=True)
    assert straight["final"] == resumed["final"] and straight["engine"]["mwn"]["meta_per_class"] == 10
    sa, sb = (torch.load(tmp_path / x / "model.pt") for x in "ab")
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
