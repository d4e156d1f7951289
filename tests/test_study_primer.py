"""Notebook 00's study functions (semscale.study.primer): the clouds, volumes, numerics, figures and the cloud
explorer over its option grid."""

import math
import warnings

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from figure_checks import check_controls, fixed_values, grid_sample, png
from matplotlib.figure import Figure
from semscale import data, scale
from semscale.study import primer
from semscale.study import taxonomy as tx

widgets = pytest.importorskip("ipywidgets")


# --- the primer -------------------------------------------------------------------------------------------------------


def test_gaussian_cloud_spans_k_directions_and_depends_on_its_generator_alone():
    cloud = primer.gaussian_cloud(200, 2.0, 5, 30, torch.Generator().manual_seed(1))
    assert cloud.shape == (200, 30) and cloud.dtype == torch.float64
    assert torch.linalg.matrix_rank(cloud - cloud.mean(0)) == 5
    assert cloud.std() == pytest.approx(2.0 * math.sqrt(5 / 30), rel=0.1)
    torch.testing.assert_close(primer.gaussian_cloud(200, 2.0, 5, 30, torch.Generator().manual_seed(1)), cloud)


def test_the_grid_the_nested_volumes_and_the_eps_ranking_are_tidy():
    gen = torch.Generator().manual_seed(0)
    grid = primer.volume_grid([0.5, 1.0], [1, 4], 60, 16, gen)
    assert list(grid.columns) == ["spread", "intrinsic_dim", "volume"] and len(grid) == 4
    assert grid.spread.tolist() == [0.5, 0.5, 1.0, 1.0]  # spread-major
    wide = grid.pivot(index="spread", columns="intrinsic_dim", values="volume").to_numpy()
    assert (np.diff(wide, axis=0) > 0).all() and (np.diff(wide, axis=1) > 0).all()  # more spread, more directions: more bits
    nested = primer.nested_volumes({"a": primer.gaussian_cloud(64, 1.0, 4, 16, gen)}, [2, 8, 64])
    assert nested.m.tolist() == [2, 8, 64] and nested.volume.is_monotonic_increasing
    pair = {"narrow": primer.gaussian_cloud(300, 3.0, 2, 64, gen), "broad": primer.gaussian_cloud(300, 0.6, 32, 64, gen)}
    curve = primer.eps_ranking(pair, [0.1, 100.0])
    assert curve.groupby("eps")["share of the pair"].sum().to_numpy() == pytest.approx([1.0, 1.0])
    share = curve.set_index(["eps", "class"])["share of the pair"]
    assert share[(0.1, "broad")] > 0.5 > share[(100.0, "broad")]  # directions win at small ε, variance at large ε


def test_half_log2_det_gives_the_volume_in_both_forms():
    z = primer.gaussian_cloud(20, 1.0, 8, 50, torch.Generator().manual_seed(2))
    c = z - z.mean(0)
    m, d = z.shape
    scatter = primer.half_log2_det(torch.eye(d, dtype=torch.float64) + d / m * c.T @ c)
    gram = primer.half_log2_det(torch.eye(m, dtype=torch.float64) + d / m * c @ c.T)
    assert scatter == pytest.approx(gram) and gram == pytest.approx(scale.volume(z))
    result, seconds = primer.timed(lambda: 7, repeats=2)
    assert result == 7 and seconds >= 0


def test_det_numerics_marks_the_overflow_of_the_naive_determinant():
    table = primer.det_numerics([16, 1024], 128, torch.Generator().manual_seed(0))
    assert list(table.d) == [16, 1024]
    small, large = table.iloc[0], table.iloc[1]
    assert small["naive det"] == pytest.approx(small["semscale.volume"])
    assert large["semscale.volume"] > 512 and np.isinf(large["naive det"])
    assert large["slogdet d×d"] == pytest.approx(large["slogdet m×m (Sylvester)"]) == pytest.approx(large["semscale.volume"])


def test_load_available_skips_what_cannot_be_loaded_and_falls_back_to_digits(monkeypatch, capsys):
    real_load = data.load

    def load(name, split, **kw):
        if name != "digits":
            raise data.DatasetError(f"no {name} here")
        return real_load(name, split, **kw)

    monkeypatch.setattr(data, "load", load)
    loaded = primer.load_available(["mnist"])
    assert list(loaded) == ["digits"] and "skipping mnist: no mnist here" in capsys.readouterr().out
    _, train, _ = tx.load_dataset("fashion-mnist")
    assert len(train.classes) == 10 and "falling back to scikit-learn's digits" in capsys.readouterr().out


def test_sample_volumes_and_the_pixel_scale_agreement_on_digits():
    real = {"digits": data.load("digits", "train")}
    measured, table = primer.measure_sample_volumes(real, 40, seed=0)
    assert (table.samples == 40).all() and table.S_prime.max() == 1.0
    assert len(measured["digits"].labels) == 400
    by_scale = primer.pixel_scale_volumes(measured)
    assert sorted(by_scale.pixel_scale.unique()) == [1.0, 255.0] and set(by_scale["rank"]) == set(range(1, 11))
    correlations, rankings = primer.pixel_scale_agreement(by_scale)
    assert -1 <= correlations.spearman_rho.iloc[0] <= 1 and len(rankings) == 10


CLOUD_CONTROLS = dict(seed=0, d=16)  # a small ambient dimension keeps the grid test fast


def test_the_cloud_explorers_controls_read_in_words():
    controls = primer.cloud_explorer_controls(**CLOUD_CONTROLS)
    check_controls(controls)
    assert controls["intrinsic_dim"].max == 16 and controls["m"].max == primer.EXPLORER_MAX_SAMPLES


def test_the_cloud_explorer_draws_every_setting_of_its_grid_on_fixed_axes():
    controls = primer.cloud_explorer_controls(**CLOUD_CONTROLS)
    limits = set()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for setting in grid_sample(controls, 40) + [dict(spread=4.0, intrinsic_dim=16, m=2), dict(spread=1.0, intrinsic_dim=1, m=300)]:
            fig = primer.cloud_explorer(**setting, **fixed_values(controls))
            assert isinstance(fig, Figure), setting
            left, right = fig.axes[:2]
            assert "Vol =" in left.get_title(), setting
            limits.add((left.get_xlim(), left.get_ylim(), right.get_xlim(), right.get_ylim()))
    assert len(limits) == 1  # the same axes for every setting: a change of σ shows as a change of size


def test_the_cloud_explorer_draws_the_same_cloud_for_the_same_setting_and_scales_it_with_sigma():
    one = primer.cloud_explorer(1.0, 4, 100, seed=3, d=16)
    assert png(one) == png(primer.cloud_explorer(1.0, 4, 100, seed=3, d=16))
    twice = primer.cloud_explorer(2.0, 4, 100, seed=3, d=16)
    points = [f.axes[0].collections[0].get_offsets() for f in (one, twice)]
    np.testing.assert_allclose(points[1], 2 * points[0], atol=1e-9)


def test_the_cloud_explorer_says_what_is_flat_or_impossible():
    assert "a line" in primer.cloud_explorer(1.0, 1, 50, d=16).axes[0].get_title()
    assert "two points" in primer.cloud_explorer(1.0, 8, 2, d=16).axes[0].get_title()
    for bad in [dict(spread=1.0, intrinsic_dim=20, m=10), dict(spread=1.0, intrinsic_dim=2, m=1), dict(spread=0.0, intrinsic_dim=2, m=10)]:
        fig = primer.cloud_explorer(**bad, d=16)
        assert "Cannot draw" in fig.axes[0].texts[0].get_text(), bad


def test_the_primers_figures_draw():
    gen = torch.Generator().manual_seed(0)
    clouds = {s: primer.gaussian_cloud(50, s, 2, 2, gen) for s in [2.0, 1.0]}
    grid = primer.volume_grid([0.5, 1.0], [1, 2], 50, 8, gen)
    numerics = primer.det_numerics([8, 32], 16, gen)
    curve = primer.eps_ranking({"a": clouds[1.0], "b": clouds[2.0]}, [0.5, 2.0])
    figures = [primer.plot_clouds(clouds, grid, 8, 50), primer.plot_numerics(numerics), primer.plot_eps_ranking(curve),
               primer.plot_nested_volumes(primer.nested_volumes({"a": clouds[1.0]}, [2, 10, 50]), 2)]
    for fig in figures:
        assert png(fig)
        plt.close(fig)

