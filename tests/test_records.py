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
