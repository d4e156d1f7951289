"""Run records between machines: pack leaves the weights behind, unpack never overwrites a complete run."""

from __future__ import annotations

import io
import tarfile

import pandas as pd
import pytest
from conftest import TINY
from semscale import cache, results, sweep, transfer
from semscale.study import bias, marginal


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("there")
    points = sweep.grid({**TINY, "epochs": 1}, seed=[0, 1, 2])
    sweep.run(points, root, log=lambda line: None)
    return root, points


def test_packed_runs_travel_without_weights_and_read_back_complete(trained, tmp_path):
    root, points = trained
    (unfinished := root / "digits_unfinished").mkdir(exist_ok=True)  # no record: not packed
    archives = transfer.pack(root, tmp_path / "packed")
    with tarfile.open(archives[0]) as tar:
        names = tar.getnames()
    assert names and not any(n.endswith(".pt") or n.endswith(".lock") for n in names)
    assert {n.split("/")[0] for n in names} == {cache.run_name(p.config()) for p in points}

    here = tmp_path / "here"
    assert set(transfer.unpack(archives, here).values()) == {"added"}
    back = sweep.run(points, here, log=lambda line: None)  # the cache reads them back: nothing is trained
    assert [r.status for r in back] == ["cached"] * 3
    assert results.collect(back).runs.top1.tolist() == results.collect(sweep.cached(points, root)).runs.top1.tolist()
    assert unfinished.name not in {n.split("/")[0] for n in names}


def test_archives_stay_under_their_size_and_hold_whole_runs(trained, tmp_path):
    root, points = trained
    one = len(transfer.pack(root, tmp_path / "one")[0].read_bytes())
    archives = transfer.pack(root, tmp_path / "split", max_bytes=one * 2 // 3)
    assert len(archives) >= 2 and all(a.stat().st_size <= one * 2 // 3 for a in archives)
    runs = [{n.split("/")[0] for n in tarfile.open(a).getnames()} for a in archives]
    assert sum(map(len, runs)) == 3 and set().union(*runs) == {cache.run_name(p.config()) for p in points}
    with pytest.raises(ValueError, match="alone take"):
        transfer.pack(root, tmp_path / "tiny", max_bytes=100)


def test_unpack_keeps_a_complete_run_and_sets_an_unfinished_one_aside(trained, tmp_path):
    root, points = trained
    archives = transfer.pack(root, tmp_path / "packed")
    here = tmp_path / "here"
    first, second = (cache.run_name(p.config()) for p in points[:2])
    transfer.unpack(archives, here)
    (here / first / "marker.txt").write_text("mine")  # a complete run here: kept as it is
    for name in (here / second).iterdir():  # an unfinished one: only a checkpoint
        if name.name != cache.LOCK_FILE:
            name.unlink()
    (here / second / "checkpoint.pt").write_bytes(b"not really")
    outcome = transfer.unpack(archives, here)
    assert outcome[first] == "kept" and (here / first / "marker.txt").read_text() == "mine"
    assert outcome[second] == "replaced" and cache.run_complete(here / second)
    aside = [p for p in here.iterdir() if p.name.startswith(f"{second}.replaced-")]
    assert len(aside) == 1 and (aside[0] / "checkpoint.pt").read_bytes() == b"not really"


def test_an_archive_with_anything_but_run_records_is_refused(tmp_path):
    bad = tmp_path / "bad.tar.gz"
    with tarfile.open(bad, "w:gz") as tar:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    with pytest.raises(ValueError, match="no record file of a run"):
        transfer.unpack([bad], tmp_path / "root")
    assert not (tmp_path / "escape.txt").exists()


def test_unpacked_records_without_weights_give_notebooks_01_and_02_their_feature_measures(trained, tmp_path):
    root, points = trained
    here = tmp_path / "here"
    transfer.unpack(transfer.pack(root, tmp_path / "packed"), here)
    assert not list(here.glob("*/model.pt"))
    name = cache.run_name(points[0].config())
    pd.testing.assert_frame_equal(bias.feature_measures(here / name).drop(columns="run"),
                                  bias.feature_measures(root / name).drop(columns="run"))
    runs = results.collect(here).runs.assign(dataset="digits", m=0, subset_seed=0)
    volumes = marginal.feature_volume_curves(runs)
    assert len(volumes) == 3 * 10 and (volumes.feature_volume_pooled > 0).all() and (volumes.full_dim == 128).all()
