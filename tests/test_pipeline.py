"""semscale.pipeline: crops, flips and the epoch's generator; the samplers' draws and a re-sampled run's resume."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_COUNTS, tiny_config
from semscale import pipeline
from semscale.train import TrainingInterrupted, train

# --- augmentation and the epoch's generator --------------------------------------------------------------------


def test_random_crop_takes_a_window_of_the_zero_padded_image():
    images = torch.randint(1, 256, (64, 3, 6, 5), dtype=torch.uint8)
    out = pipeline.random_crop(images, 2, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    offsets = set()
    for i in range(len(images)):
        found = [(dy, dx) for dy in range(5) for dx in range(5) if torch.equal(out[i], padded[i, :, dy:dy + 6, dx:dx + 5])]
        assert found, f"image {i} is not a window of its padded image"
        offsets.add(found[0])
    assert len(offsets) > 10  # offsets differ between images
    again = pipeline.random_crop(images, 2, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


def test_random_flip_flips_about_half():
    images = torch.randint(0, 256, (200, 1, 4, 4), dtype=torch.uint8)
    out = pipeline.random_flip(images, torch.Generator().manual_seed(0))
    same = [torch.equal(o, x) for o, x in zip(out, images)]
    flipped = [torch.equal(o, x.flip(2)) for o, x in zip(out, images)]
    assert all(s or f for s, f in zip(same, flipped))
    assert 70 < sum(flipped) < 130


def test_epoch_generator_depends_on_seed_and_epoch_only():
    cpu = torch.device("cpu")

    def perm(seed, epoch):
        return torch.randperm(100, generator=pipeline.epoch_generator(seed, epoch, cpu))

    assert torch.equal(perm(0, 3), perm(0, 3))
    assert not torch.equal(perm(0, 3), perm(0, 4)) and not torch.equal(perm(0, 3), perm(1, 3))


# --- re-sampling ---------------------------------------------------------------------------------------------------


def test_sampling_probabilities_by_hand():
    labels = torch.tensor([0, 0, 0, 1])
    cb = pipeline.sampling_probabilities(labels, [3, 1], "class-balanced")
    assert torch.allclose(cb, torch.tensor([1 / 6, 1 / 6, 1 / 6, 1 / 2], dtype=torch.float64))
    sq = pipeline.sampling_probabilities(labels, [3, 1], "sqrt")
    z = 3 / math.sqrt(3) + 1
    assert torch.allclose(sq, torch.tensor([1 / math.sqrt(3) / z] * 3 + [1 / z], dtype=torch.float64))
    # per class: uniform (class-balanced), ∝ √n_c (sqrt)
    assert sq[:3].sum() / sq[3] == pytest.approx(math.sqrt(3))


class _Data:
    def __init__(self, labels, counts):
        self.train_labels, self.train_counts = labels, np.asarray(counts)


def test_epoch_order_fills_the_pool_first_then_draws_from_the_epoch_generator():
    labels = torch.tensor([0] * 30 + [1] * 3)
    d, c = _Data(labels, [30, 3]), tiny_config(sampler="class-balanced")
    g = pipeline.epoch_generator(0, 1, torch.device("cpu"))
    first = pipeline.epoch_order(d, c, 1, g, pool_kept=True)
    assert sorted(first.tolist()) == list(range(33))  # the plain permutation
    g1, g2 = (pipeline.epoch_generator(0, 2, torch.device("cpu")) for _ in range(2))
    drawn = pipeline.epoch_order(d, c, 2, g1, pool_kept=True)
    p = torch.tensor([1 / 60] * 30 + [1 / 6] * 3)
    assert torch.equal(drawn, torch.multinomial(p, 33, replacement=True, generator=g2))
    assert len(set(pipeline.epoch_order(d, c, 1, g, pool_kept=False).tolist())) < 33  # no pool: draws from epoch 1
    big = pipeline.epoch_order(_Data(labels, [30, 3]), c, 3, torch.Generator().manual_seed(0), pool_kept=True)
    assert len(big) == 33


def test_sampler_run_resumes_bit_identically_and_balances_the_draws(tmp_path):
    cfg = dict(sampler="sqrt", dsb=True, dsb_stage_epochs=1, epochs=3)
    straight = train(tiny_config(**cfg), tmp_path / "a")
    with pytest.raises(TrainingInterrupted):
        train(tiny_config(**cfg, stop_after_epoch=2), tmp_path / "b")
    resumed = train(tiny_config(**cfg), tmp_path / "b", resume=True)
    assert straight["final"] == resumed["final"]
    sa, sb = (torch.load(tmp_path / x / "model.pt") for x in "ab")
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    per_class = pd.read_csv(tmp_path / "a" / "per_class.csv")
    assert (per_class.train_accuracy <= 1).all()  # over the epoch's draws, not the class sizes
    assert "sqrt" in straight["engine"]["sampler"]


# --- the training subset ---------------------------------------------------------------------------------------------


def test_training_images_are_the_runs_training_data():
    cpu = torch.device("cpu")
    for fields, variant in ((dict(), "digits-lt10"), (dict(resize=16), "digits-lt10-16px"),
                            (dict(imbalance=1, train_per_class=20), "digits-m20")):
        config = tiny_config(**fields)
        chosen = pipeline.training_images(config)
        data = pipeline.load_data(config, cpu)
        assert chosen.variant == data.variant == variant and chosen.subset.sha256 == data.subset.sha256
        assert torch.equal(chosen.images, data.train_images) and torch.equal(chosen.labels, data.train_labels)
    assert np.bincount(pipeline.training_images(tiny_config()).labels.numpy()).tolist() == TINY_COUNTS
    assert pipeline.training_images(tiny_config(resize=16)).images.shape[-2:] == (16, 16)
