"""semscale.records: atomic result files (a full disk named as such) and the provenance every result carries."""

import json
import os

import pandas as pd
import pytest
import torch
from semscale import records


def test_json_and_csv_round_trip(tmp_path):
    records.write_json_atomic(tmp_path / "a" / "run.json", {"seed": 1, "path": tmp_path})
    assert json.loads((tmp_path / "a" / "run.json").read_text())["seed"] == 1
    frame = pd.DataFrame({"x": [1, 2], "y": [0.5, float("nan")]})
    records.write_csv_atomic(tmp_path / "t.csv", frame)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "t.csv"), frame)


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "state.pt"
    records.save_torch_atomic(target, {"old": True})
    with pytest.raises(Exception):
        records.save_torch_atomic(target, {"tensor": torch.zeros(1000), "unpicklable": lambda: None})
    assert torch.load(target) == {"old": True}
    assert os.listdir(tmp_path) == ["state.pt"]


def test_provenance_names_commit_packages_and_device():
    info = records.provenance()
    assert info["git_commit"]
    assert info["packages"]["torch"] != "not installed"
    assert info["device"].startswith("cpu")


@pytest.fixture
def full_disk(tmp_path, monkeypatch):
    """Every atomic write goes to /dev/full, which answers every write with ENOSPC, as a full disk does."""
    def to_dev_full(dir, prefix, suffix):
        tmp = tmp_path / f"{prefix}x{suffix}"
        tmp.touch()
        return os.open("/dev/full", os.O_WRONLY), str(tmp)

    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full (Linux)")
    monkeypatch.setattr(records.tempfile, "mkstemp", to_dev_full)


def test_a_full_disk_is_named_with_the_file_not_torchs_unexpected_pos(tmp_path, full_disk):
    target = tmp_path / "run" / "checkpoint.pt"
    with pytest.raises(records.DiskFull, match=f"disk full at {target}") as error:
        records.save_torch_atomic(target, {"weights": torch.zeros(10_000)})
    assert isinstance(error.value, OSError) and "unexpected pos" not in str(error.value)
    with pytest.raises(records.DiskFull, match="disk full at .*run.json"):
        records.write_json_atomic(tmp_path / "run" / "run.json", {"status": "complete"})
    assert not list((tmp_path / "run").iterdir()) and not list(tmp_path.glob("*.tmp"))  # nothing half written
