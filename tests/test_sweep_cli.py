"""Train there, render here: the command line builds the notebook's own points, stops at a deadline and resumes,
packs and unpacks, and a render-only sweep trains nothing."""

from __future__ import annotations

import ast
import json
import subprocess
import sys

import papermill
import pytest
from conftest import TINY
from semscale import profiles, results, sweep, sweep_cli
from semscale.cache import run_name
from semscale.study import longtail as lt


@pytest.mark.parametrize("path", profiles.notebook_paths(), ids=lambda p: p.stem)
def test_the_parameters_cell_reads_as_papermill_reads_it(path):
    ours = profiles.default_parameters(path)
    theirs = papermill.inspect_notebook(str(path))
    assert list(ours) == list(theirs)
    assert all(ours[name] == ast.literal_eval(p["default"]) for name, p in theirs.items())


def test_a_profile_overrides_the_defaults_and_a_wrong_name_is_named():
    params = profiles.parameters("03", "gpu")
    assert params["model"] == "resnet32" and params["epochs"] == 200 and params["profile"] == "gpu"
    assert params["drift_method"] == "CE"  # not in the profile: the notebook's default
    with pytest.raises(SystemExit, match="has no parameter"):
        profiles.parameters("03", "gpu", {"epoch": 3})


def test_the_gpu_grid_puts_the_primary_test_first_and_shares_its_runs():
    grids = lt.grids(profiles.parameters("03", "gpu"))
    assert list(grids)[0] == "primary"
    primary = [p.config() for p in grids["primary"]]
    assert {(c.loss, c.dsb, c.seed, c.epochs, c.model) for c in primary} == \
        {("ce", dsb, seed, 200, "resnet32") for dsb in (False, True) for seed in (0, 1, 2)}
    main = {run_name(p.config()) for p in grids["main"]}
    assert {run_name(c) for c in primary} <= main  # the main table reads the same runs


def _tiny_grids(stem, params):
    return {"only": sweep.grid({**TINY, "epochs": 150}, seed=[0, 1])}  # a few seconds per run


def test_a_deadline_stops_the_sweep_with_checkpoints_and_the_same_command_resumes(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep_cli, "study_grids", _tiny_grids)
    lines = []
    params = {"profile": "test", "jobs": 1, "threads": 1}
    assert sweep_cli.train("03_long_tailed_dsb", params, tmp_path, deadline=1.5, log=lines.append) is False
    assert any(line.startswith("deadline of 1.5 s reached") for line in lines)
    assert list(tmp_path.glob("*/checkpoint.pt")) and len(list(tmp_path.glob("*/run.json"))) < 2
    lines.clear()
    assert sweep_cli.train("03_long_tailed_dsb", params, tmp_path, log=lines.append) is True
    assert any("resumed" in line for line in lines)
    assert len(results.collect(tmp_path).runs) == 2


def test_a_render_only_sweep_reads_back_what_is_cached_and_refuses_to_train(tmp_path, monkeypatch):
    points = sweep.grid({**TINY, "epochs": 1}, seed=[0, 1])
    sweep.run(points[:1], tmp_path, log=lambda line: None)
    monkeypatch.setenv(sweep.RENDER_ONLY, "1")
    assert [r.status for r in sweep.run(points[:1], tmp_path, log=lambda line: None)] == ["cached"]
    with pytest.raises(sweep.RunsMissing, match="1 run.*python -m semscale.sweep"):
        sweep.run(points, tmp_path, log=lambda line: None)


def test_pack_and_unpack_on_the_command_line(tmp_path, capsys):
    sweep.run(sweep.grid({**TINY, "epochs": 1}, seed=[0]), tmp_path / "there", log=lambda line: None)
    assert sweep_cli.main(["pack", "--root", str(tmp_path / "there"), "--out", str(tmp_path / "packed")]) == 0
    assert sweep_cli.main(["unpack", *map(str, (tmp_path / "packed").glob("*.tar.gz")), "--root", str(tmp_path / "here")]) == 0
    assert capsys.readouterr().out.strip().endswith("1 added")
    with pytest.raises(SystemExit):
        sweep_cli.main(["unpack", str(tmp_path / "nothing.tar.gz"), "--root", str(tmp_path / "here")])


BLOCKED = ("papermill", "nbformat", "nbclient", "jupyter_client", "ipykernel", "IPython", "ipywidgets", "submitit", "zmq")
WITHOUT_JUPYTER = f"""
import sys
class Blocker:  # as if none of the notebook machinery were installed (a bare GPU host)
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ImportError(f"{{name}} is blocked")
sys.meta_path.insert(0, Blocker())
from semscale import profiles, sweep, sweep_cli, transfer
sweep_cli.study_grids("03_long_tailed_dsb", profiles.parameters("03", "gpu"))
(result,) = sweep.run([{{**{TINY!r}, "epochs": 1}}], sys.argv[1], log=lambda line: None)
print(result.status)
"""


def test_the_training_path_runs_without_any_notebook_machinery(tmp_path):
    """tqdm.auto would use IPython and ipywidgets where they are installed; here none of them can be imported."""
    done = subprocess.run([sys.executable, "-c", WITHOUT_JUPYTER, str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "trained"


def test_the_gpu_rehearsal_trains_packs_unpacks_and_renders_notebook_03_without_training(tmp_path, capsys):
    assert sweep_cli.main(["--profile", "gpu", "--notebook", "03", "--rehearse", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "unpacked: 9 added" in out and "without training" in out
    stacks = [json.loads(p.read_text()).get("stack") for p in (tmp_path / "there").glob("*/run.json")]
    assert any(s and s["members"] > 1 for s in stacks)  # trained as the GPU trains: in stacks
    assert (tmp_path / "results" / "gpu" / "03_long_tailed_dsb" / "selection_rules.csv").exists()
