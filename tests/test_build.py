"""semscale.build: the learning-rate schedules, the data-dependent defaults (resolve), the seeded network, a run."""

import numpy as np
import pytest
import torch
from conftest import TINY_COUNTS, tiny_config
from semscale import build, pipeline
from semscale.config import ConfigError, TrainConfig
from semscale.train import train

# --- learning-rate schedules ------------------------------------------------------------------------------------


def test_ldam_schedule_at_200_epochs_is_ldams():
    c = TrainConfig(dataset="cifar10", epochs=200, lr=0.1)
    lr = {e: build.learning_rate(c, e) for e in (1, 2, 5, 6, 160, 161, 180, 181, 200)}
    assert lr[1] == pytest.approx(0.02) and lr[2] == pytest.approx(0.04) and lr[5] == pytest.approx(0.1)
    assert lr[6] == lr[160] == 0.1
    assert lr[161] == lr[180] == pytest.approx(1e-3)
    assert lr[181] == lr[200] == pytest.approx(1e-5)


def test_ldam_schedule_scales_to_the_run_length():
    assert build.ldam_milestones(200) == (5, 160, 180)
    assert build.ldam_milestones(10) == (0, 8, 9)
    c = TrainConfig(dataset="cifar10", epochs=10, lr=0.1)
    assert [build.learning_rate(c, e) for e in range(1, 11)] == pytest.approx([0.1] * 8 + [1e-3, 1e-5])
    c100 = TrainConfig(dataset="cifar10", epochs=100, lr=0.3)
    assert build.ldam_milestones(100) == (3, 80, 90)
    assert build.learning_rate(c100, 1) == pytest.approx(0.1) and build.learning_rate(c100, 81) == pytest.approx(3e-3)


def test_exponential_and_cosine_schedules():
    exp = TrainConfig(dataset="cifar10", optimizer="adam", lr=0.01, schedule="exponential", epochs=50)
    assert build.learning_rate(exp, 1) == 0.01
    assert build.learning_rate(exp, 11) == pytest.approx(0.01 * 0.98 ** 10)
    cos = TrainConfig(dataset="cifar10", lr=0.2, schedule="cosine", epochs=10)
    assert build.learning_rate(cos, 1) == pytest.approx(0.2)
    assert build.learning_rate(cos, 6) == pytest.approx(0.1)
    assert 0 < build.learning_rate(cos, 10) < 0.01
    # the cosine schedule is cosine_lr, which the second stages use too
    assert [build.learning_rate(cos, e) for e in range(1, 11)] == [build.cosine_lr(0.2, e, 10) for e in range(1, 11)]


# --- resolve: the data-dependent defaults ------------------------------------------------------------------------


def test_resolve_fills_the_normed_classifier_and_dsb_alpha_from_the_loss_and_the_data():
    lt, balanced = np.asarray(TINY_COUNTS), np.full(10, 50)
    plain = build.resolve(tiny_config(), lt)
    assert (plain.normed_classifier, plain.dsb_alpha) == (False, 2.0)  # α = 2 on long-tailed data (PAPER.md §2)
    assert build.resolve(tiny_config(), balanced).dsb_alpha == 1.0  # and 1 on balanced data
    assert build.resolve(tiny_config(loss="ldam"), lt).normed_classifier is True  # LDAM's cosine head
    # explicit values are kept
    chosen = build.resolve(tiny_config(loss="ldam", normed_classifier=False, dsb_alpha=3.0), balanced)
    assert (chosen.normed_classifier, chosen.dsb_alpha) == (False, 3.0)
    assert build.resolve(plain, balanced) == plain  # resolving twice changes nothing


def test_dsb_with_a_single_image_class_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"at least 2 training images per class.*class\(es\) \[9\]"):
        build.resolve(tiny_config(dsb=True), np.array([5] * 9 + [1]))
    build.resolve(tiny_config(), np.array([5] * 9 + [1]))  # without DSB the class is fine
    with pytest.raises(ConfigError, match="at least 2 training images per class"):
        train(tiny_config(epochs=3, imbalance=100, dsb=True, dsb_stage_epochs=1), tmp_path)


def test_resolve_device_refuses_cuda_where_there_is_none():
    assert build.resolve_device("cpu") == torch.device("cpu")
    assert build.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            build.resolve_device("cuda")


# --- the network and the run -------------------------------------------------------------------------------------


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_build_network_is_seeded_by_the_config_alone():
    cpu = torch.device("cpu")
    config = build.resolve(tiny_config(seed=3), np.asarray(TINY_COUNTS))
    first = _weights(build.build_network(config, 10, 1, cpu))
    torch.manual_seed(12345)  # whatever the global generator held before
    torch.rand(7)
    again = _weights(build.build_network(config, 10, 1, cpu))
    assert first.keys() == again.keys() and all(torch.equal(first[k], again[k]) for k in first)
    other = _weights(build.build_network(build.resolve(tiny_config(seed=4), np.asarray(TINY_COUNTS)), 10, 1, cpu))
    assert not torch.equal(first["classifier.weight"], other["classifier.weight"])
    # the seed does not depend on what else the run does: another loss, the same initial weights
    focal = build.resolve(tiny_config(seed=3, loss="focal", focal_gamma=1.0), np.asarray(TINY_COUNTS))
    assert torch.equal(build.build_network(focal, 10, 1, cpu).classifier.weight, first["classifier.weight"])


def test_build_run_assembles_what_the_config_asks_for():
    cpu = torch.device("cpu")
    config = tiny_config(dsb=True, reweight="cdb")
    data = pipeline.load_run_data(config, cpu)
    run = build.build_run(build.resolve(config, data.train_counts), data, cpu)
    assert run.num_batches == 9 and run.total_steps == 18  # 539 images in batches of 64, two epochs
    assert run.pool is not None and run.pool.alpha == 2.0 and run.mwn is None and run.lookahead is None
    assert run.loss.reweight == "cdb" and run.hooks == []
    assert isinstance(run.optimizer, torch.optim.SGD) and run.precision == "fp32"
    run.set_learning_rate(0.01)
    assert [g["lr"] for g in run.optimizer.param_groups] == [0.01]
    assert run.dsb_weights(False) is None
    no_pool = build.build_run(build.resolve(tiny_config(track_pool=False), data.train_counts), data, cpu)
    assert no_pool.pool is None
