"""semscale.pool: DSB's stages, the pooled features, the pool's updates and scales, and the pool inside the trainer."""

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_config
from semscale import build, pipeline, scale
from semscale import train as engine
from semscale.build import Hooks
from semscale.pool import FeaturePool, pooled, stage


def test_stage_boundaries():
    assert [stage(e, 5) for e in range(1, 8)] == ["fill"] + ["refresh"] * 4 + ["weight"] * 2
    assert [stage(e, 1) for e in (1, 2, 3)] == ["fill", "weight", "weight"]
    assert [stage(e, 2) for e in (1, 2, 3)] == ["fill", "refresh", "weight"]
    with pytest.raises(ValueError, match="1-based"):
        stage(0, 5)


def test_pooled_averages_neighbouring_dimensions_and_detaches():
    x = torch.randn(6, 128, requires_grad=True)
    p = pooled(x)
    assert p.shape == (6, 64) and p.dtype == torch.float32 and not p.requires_grad
    torch.testing.assert_close(p, (x[:, 0::2] + x[:, 1::2]).detach() / 2)
    y = torch.randn(4, 64)
    assert torch.equal(pooled(y), y)
    assert pooled(torch.randn(3, 512, dtype=torch.bfloat16)).dtype == torch.float32


def _pool_and_features(n=90, num_classes=3, width=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % num_classes
    features = torch.randn(n, width, generator=g) + labels[:, None].float()
    return FeaturePool(labels, num_classes, alpha=2.0), features, labels


def test_update_stores_features_by_sample_id():
    pool, features, _ = _pool_and_features()
    order = torch.randperm(len(features), generator=torch.Generator().manual_seed(1))
    for ids in order.split(32):  # batches in shuffled order, the last one partial
        assert not pool.is_full()
        pool.update(ids, features[ids])
    assert pool.is_full()
    torch.testing.assert_close(pool.features, F.adaptive_avg_pool1d(features[:, None], 64)[:, 0], rtol=0, atol=0)


def test_scales_equal_the_scale_module_on_the_whole_pool():
    pool, features, labels = _pool_and_features()
    pool.update(torch.arange(len(labels)), features)
    got = pool.scales()
    z = pooled(features)
    volume = scale.class_volumes(z, labels, 3)
    s_prime, w, s = scale.imbalance(volume, scale.class_centers(z, labels, 3), 2.0)
    for name, want in (("volume", volume), ("S_prime", s_prime), ("W", w), ("S", s), ("weight", scale.dsb_weights(s))):
        torch.testing.assert_close(getattr(got, name), want, msg=name)
    assert got.weight.mean().item() == pytest.approx(1.0)


def test_state_dict_round_trip():
    pool, features, labels = _pool_and_features()
    pool.update(torch.arange(10), features[:10])
    other = FeaturePool(labels, 3)
    other.load_state_dict(pool.state_dict())
    assert torch.equal(other.features, pool.features) and torch.equal(other.filled, pool.filled)
    with pytest.raises(ValueError, match="shape"):
        FeaturePool(labels[:5], 3).load_state_dict(pool.state_dict())


# --- the pool inside the trainer (digits: 8x8 images, 539 in the long-tailed subset) -------------------------------


def _config(**kw):
    """The tiny config over three epochs in batches of 128."""
    return tiny_config(**{"epochs": 3, "batch_size": 128, **kw})


class ClassWeights(Hooks):
    """The DSB weights each iteration's loss used (None where it was not weighted)."""

    def __init__(self):
        self.calls = []

    def after_step(self, run, ids, class_weights):
        self.calls.append(None if class_weights is None else class_weights.clone())


def test_weighting_starts_after_the_stage_epochs_and_is_recomputed_every_iteration(tmp_path):
    seen = ClassWeights()
    engine.train(_config(dsb=True, dsb_stage_epochs=2), tmp_path, hooks=[seen])
    calls = seen.calls
    per_epoch = 5  # ceil(539 / 128)
    assert len(calls) == 3 * per_epoch
    assert all(w is None for w in calls[:2 * per_epoch])  # epochs 1..n: plain loss
    weighted = calls[2 * per_epoch:]
    assert all(w is not None and w.shape == (10,) for w in weighted)
    assert all(not torch.equal(a, b) for a, b in zip(weighted, weighted[1:]))  # a new S every iteration
    # the last iteration's weights come from the pool after its own update: the pool at the end of the epoch
    history = pd.read_csv(tmp_path / "pool_history.csv")
    final = history[history.epoch == 3].sort_values("class")
    torch.testing.assert_close(weighted[-1], torch.tensor(final.weight.to_numpy()), rtol=1e-12, atol=0)


def test_without_dsb_the_loss_is_never_weighted_but_the_pool_is_logged(tmp_path):
    seen = ClassWeights()
    engine.train(_config(epochs=2), tmp_path, hooks=[seen])
    calls = seen.calls
    assert len(calls) == 10 and all(w is None for w in calls)
    history = pd.read_csv(tmp_path / "pool_history.csv")
    assert sorted(history.epoch.unique()) == [1, 2] and history.S.notna().all()


def test_pool_holds_each_samples_pooled_feature_after_an_epoch():
    # lr = 0: the weights do not move, so every batch can be recomputed afterwards with the same model
    config = _config(lr=0.0, batch_size=100)
    device = torch.device("cpu")
    data = pipeline.load_data(config, device)
    run = build.build_run(build.resolve(config, data.train_counts), data, device)
    state = engine.new_epoch(run, 1)
    engine.train_epoch(run, state)
    assert run.pool.is_full()

    generator = pipeline.epoch_generator(config.seed, 1, device)  # replay the epoch's permutation and augmentation
    order = torch.randperm(len(data.train_labels), generator=generator)
    assert torch.equal(order, state.order)
    expected = torch.full_like(run.pool.features, float("nan"))
    with torch.no_grad():
        for ids in order.split(config.batch_size):
            x = pipeline.to_input(pipeline.augment(data.train_images[ids], config, generator), data.mean, data.std, run.memory_format)
            expected[ids] = pooled(run.model.features(x))
    torch.testing.assert_close(run.pool.features, expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(run.pool.labels, data.train_labels)
