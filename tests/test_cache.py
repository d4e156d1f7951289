"""semscale.cache: a config's folder name and hash, what counts in them, finished runs, the cache's root."""

import hashlib
import json

from conftest import TINY, tiny_config
from semscale import cache, sweep
from semscale.config import TrainConfig
from semscale.records import REPO


def test_the_same_config_lands_in_the_same_folder():
    config = TrainConfig(**TINY)
    from_dict = sweep.grid(TINY, seed=[0])[0].config()
    from_config = sweep.grid(config, seed=[0])[0].config()
    assert cache.run_name(config) == cache.run_name(from_dict) == cache.run_name(from_config)
    # how a run executes does not change what it computes
    assert cache.run_name(TrainConfig(**{**TINY, "progress": True, "device": "cpu", "eval_batch_size": 7})) == cache.run_name(config)
    name = cache.run_name(config)
    assert name.startswith("digits_lt10_cnn_ce_s0-") and len(name.split("-")[-1]) == 10
    assert cache.run_name(TrainConfig(**{**TINY, "lr": 0.04})) != name
    # a base TrainConfig's preset values are re-resolved when an axis changes the protocol
    sec3 = sweep.grid(TrainConfig(dataset="digits"), protocol=["paper-sec3"])[0].config()
    assert (sec3.optimizer, sec3.batch_size) == ("adam", 64)


def test_the_name_says_what_a_run_is_and_the_hash_is_over_the_canonical_config():
    config = tiny_config(sampler="sqrt", dsb=True, dsb_stage_epochs=1, epochs=3)
    # the name says what it is; the default configs keep their hash (older folders keep their names)
    assert "_sqrts_dsb_" in cache.run_name(config)
    assert cache.canonical(tiny_config()) == {k: v for k, v in cache.canonical(tiny_config()).items() if k not in ("sampler", "mwn")}
    assert "sampler" not in cache.canonical(tiny_config()) and "sampler" in cache.canonical(tiny_config(sampler="sqrt"))
    assert cache.run_name(tiny_config(mwn=True, loss="ce")).startswith("digits_lt10_cnn_ce_mwn_s0-")
    assert cache.run_name(tiny_config(reweight="drw", second_stage="crt", seed=2)).startswith("digits_lt10_cnn_ce-drw_crt_s2-")
    assert cache.run_name(tiny_config(imbalance=1, train_per_class=20)).startswith("digits_m20_cnn_")
    assert cache.run_name(tiny_config(imbalance=1)).startswith("digits_full_cnn_")
    expected = hashlib.sha256(json.dumps(cache.canonical(config), sort_keys=True).encode()).hexdigest()
    assert cache.config_hash(config) == expected and cache.run_name(config).endswith("-" + expected[:10])
    # the execution-only fields are not part of it
    assert not {"device", "progress", "eval_every", "checkpoint_every", "stop_after_epoch"} & set(cache.canonical(config))


def test_run_complete_needs_run_json_and_no_checkpoint(tmp_path):
    assert not cache.run_complete(tmp_path / "missing")
    assert not cache.run_complete(tmp_path)
    (tmp_path / "checkpoint.pt").write_bytes(b"")
    assert not cache.run_complete(tmp_path)  # interrupted
    (tmp_path / "run.json").write_text("{}")
    assert not cache.run_complete(tmp_path)  # a run.json beside a checkpoint: not finished
    (tmp_path / "checkpoint.pt").unlink()
    assert cache.run_complete(tmp_path)


def test_runs_dir_is_semscale_runs_or_the_checkouts_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("SEMSCALE_RUNS", str(tmp_path / "elsewhere"))
    assert cache.runs_dir() == tmp_path / "elsewhere"
    monkeypatch.setenv("SEMSCALE_RUNS", "")
    assert cache.runs_dir() == REPO / "runs"
    monkeypatch.delenv("SEMSCALE_RUNS")
    assert cache.runs_dir() == REPO / "runs"
