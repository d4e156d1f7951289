"""semscale.cache: a config's folder name and hash, what counts in them, finished and damaged runs, run locks, the
cache's root."""

import hashlib
import json
import shutil
import subprocess
import sys

import pytest
from conftest import TINY, tiny_config
from semscale import cache, sweep
from semscale.config import TrainConfig
from semscale.records import REPO
from semscale.train import train


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


def test_run_complete_needs_every_record_file_with_its_rows(tmp_path, finished):
    assert not cache.run_complete(tmp_path / "missing") and not cache.run_complete(tmp_path)
    (tmp_path / "run.json").write_text("{}")
    assert not cache.run_complete(tmp_path) and "does not record a complete run" in cache.inspect_run(tmp_path).problem
    assert cache.inspect_run(finished).complete and cache.inspect_run(finished).record["status"] == "complete"
    damages = {  # how a finished run's folder gets damaged -> what the check says
        "run.json cut off": (lambda f: _cut(f / "run.json", 0.5), "run.json cannot be read"),
        "per_class.csv deleted": (lambda f: (f / "per_class.csv").unlink(), "per_class.csv is missing"),
        "per_class.csv with 3 of 10 classes": (lambda f: _keep_lines(f / "per_class.csv", 4), "per_class.csv has 3 rows, expected 10"),
        "per_class.csv cut mid-row": (lambda f: _cut(f / "per_class.csv", 0.6), "per_class.csv"),
        "epochs.csv one epoch short": (lambda f: _keep_lines(f / "epochs.csv", 2), "epochs.csv has 1 rows, expected 2"),
        "pool_history.csv emptied": (lambda f: (f / "pool_history.csv").write_text(""), "pool_history.csv is cut off"),
    }
    for what, (damage, message) in damages.items():
        folder = tmp_path / what
        shutil.copytree(finished, folder)
        damage(folder)
        state = cache.inspect_run(folder)
        assert not state.complete and message in state.problem, (what, state)
    # a checkpoint.pt beside a complete record is a leftover, not an unfinished run; alone it must be an archive
    shutil.copytree(finished, tmp_path / "leftover")
    (tmp_path / "leftover" / "checkpoint.pt").write_bytes(b"garbage")
    assert cache.run_complete(tmp_path / "leftover")
    (tmp_path / "alone").mkdir()
    (tmp_path / "alone" / "checkpoint.pt").write_bytes(b"garbage")
    assert "no readable checkpoint" in cache.inspect_run(tmp_path / "alone").problem


def _cut(path, fraction):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def _keep_lines(path, n):
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:n]))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny run (two epochs, ten classes, pool kept)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    train(tiny_config(), out)
    return out


def test_runs_of_every_kind_written_by_this_code_are_complete(tmp_path, tiny):
    points = [tiny, {**tiny, "track_pool": False}, {**tiny, "record_drift": True},
              {**tiny, "second_stage": "crt", "stage2_epochs": 2}, {**tiny, "second_stage": "posthoc-la"}]
    done = sweep.run(points, tmp_path, threads=1, log=lambda line: None)
    assert all(r.status == "trained" for r in done), [r.error for r in done]
    for r in done:
        assert cache.inspect_run(r.path) == (True, r.record, None), r.name


def test_set_aside_damage_moves_damaged_runs_and_leftover_checkpoints_nothing_deleted(tmp_path, finished):
    shutil.copytree(finished, tmp_path / "run")
    assert cache.set_aside_damage(tmp_path / "run") is None  # a complete run stays
    (tmp_path / "run" / "checkpoint.pt").write_bytes(b"garbage")
    note = cache.set_aside_damage(tmp_path / "run")
    assert "checkpoint.pt left beside its complete record was moved aside" in note
    (leftover,) = (tmp_path / "run").glob("checkpoint.pt.leftover-*")
    assert leftover.read_bytes() == b"garbage" and cache.run_complete(tmp_path / "run")
    (tmp_path / "run" / "per_class.csv").unlink()
    note = cache.set_aside_damage(tmp_path / "run")
    assert note.startswith("run was damaged (per_class.csv is missing): moved aside to run.damaged-")
    (aside,) = tmp_path.glob("run.damaged-*")
    assert (aside / "run.json").exists() and (aside / "model.pt").exists() and list((tmp_path / "run").iterdir()) == []
    # a run's lock file stays in its folder: another process waiting for the lock waits for the same file
    lock = cache.run_lock(tmp_path / "run")
    with lock:
        (tmp_path / "run" / "run.json").write_text("{")
        assert cache.set_aside_damage(tmp_path / "run").startswith("run was damaged (run.json cannot be read")
        assert [p.name for p in (tmp_path / "run").iterdir()] == [".lock"] and lock.is_locked


HOLD = """
import sys, time
from semscale import cache
lock = cache.run_lock(sys.argv[1])
lock.acquire()
print("held", flush=True)
time.sleep(600)
"""


def test_a_run_locked_by_a_live_process_is_busy_and_a_dead_holders_lock_is_taken_over(tmp_path):
    out = tmp_path / cache.run_name(tiny_config())
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert sweep.train_one(tiny_config(), out, wait=False).status == "busy"
        assert [p.name for p in out.iterdir()] == [".lock"]  # nothing written while another process holds it
    finally:
        holder.kill()  # SIGKILL: no chance to release it; the OS does
        holder.wait()
    outcome = sweep.train_one(tiny_config(), out, wait=False)
    assert outcome.status == "trained" and cache.run_complete(out)


def test_runs_dir_is_semscale_runs_or_the_checkouts_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("SEMSCALE_RUNS", str(tmp_path / "elsewhere"))
    assert cache.runs_dir() == tmp_path / "elsewhere"
    monkeypatch.setenv("SEMSCALE_RUNS", "")
    assert cache.runs_dir() == REPO / "runs"
    monkeypatch.delenv("SEMSCALE_RUNS")
    assert cache.runs_dir() == REPO / "runs"
