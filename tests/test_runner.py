"""semscale.runner: the papermill runner (profiles, overrides, failures, headless kernels, publishing), the committed
notebooks and reference results (the smoke execution itself is nbval's, over reference/smoke/: tests/test_nbval.py)."""

import dataclasses
import json
import re

import nbformat
import pandas as pd
import pytest
from semscale import records, runner

NOTEBOOKS = runner.notebook_paths()


def test_there_are_notebooks():
    assert NOTEBOOKS, "no numbered notebooks found in notebooks/"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs_and_with_one_parameters_cell(path):
    nb = nbformat.read(path, as_version=4)
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code_cells), f"{path.name} has outputs: clear them before committing"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    parsed = set(runner.papermill.inspect_notebook(str(path)))
    assigned = {m.group(1) for m in re.finditer(r"^(\w+)\s*=", tagged[0].source, re.M)}
    assert assigned == parsed, f"papermill cannot parse {assigned - parsed} (a comment with '=' breaks it)"
    assert {"profile", "out_dir"} <= parsed


@pytest.mark.parametrize("profile", runner.PROFILES)
def test_profiles_name_real_notebooks_and_parameters(profile):
    assert set(runner.load_profile(profile)) <= {p.stem for p in NOTEBOOKS}


def write_notebook(path, parameters, body=""):
    cells = [nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]}), nbformat.v4.new_code_cell(body)]
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def test_profile_errors_name_what_is_valid(tmp_path):
    (tmp_path / "profiles").mkdir()
    write_notebook(tmp_path / "01_x.ipynb", "profile = 'default'\nout_dir = '.'\nsteps = 1")
    (tmp_path / "profiles" / "smoke.yaml").write_text("02_missing: {}\n")
    with pytest.raises(SystemExit, match="01_x"):
        runner.load_profile("smoke", tmp_path)
    (tmp_path / "profiles" / "smoke.yaml").write_text("01_x: {stepz: 2}\n")
    with pytest.raises(SystemExit, match="stepz.*steps"):
        runner.load_profile("smoke", tmp_path)
    with pytest.raises(SystemExit, match="smoke, default, gpu, paper"):
        runner.load_profile("fast", tmp_path)


def test_runner_goes_on_past_a_failing_notebook(tmp_path):
    notebooks = tmp_path / "notebooks"
    (notebooks / "profiles").mkdir(parents=True)
    write_notebook(notebooks / "01_fails.ipynb", "profile = 'default'\nout_dir = '.'", "raise ValueError('boom')")
    write_notebook(notebooks / "02_works.ipynb", "profile = 'default'\nout_dir = '.'", "open(out_dir + '/done.txt', 'w').write(profile)")
    (notebooks / "profiles" / "smoke.yaml").write_text("{}\n")
    runs = runner.run_study("smoke", results_root=tmp_path / "results", notebooks_dir=notebooks)
    assert [r.ok for r in runs] == [False, True]
    assert "boom" in runs[0].error
    assert (tmp_path / "results" / "smoke" / "02_works" / "done.txt").read_text() == "smoke"
    assert "1 ok, 1 failed" in runner.summary_text(runs)


def _two_notebooks(tmp_path):
    notebooks = tmp_path / "notebooks"
    (notebooks / "profiles").mkdir(parents=True)
    write_notebook(notebooks / "01_steps.ipynb", "profile = 'default'\nout_dir = '.'\nsteps = 1",
                   "open(out_dir + '/steps.txt', 'w').write(str(steps))")
    write_notebook(notebooks / "02_plain.ipynb", "profile = 'default'\nout_dir = '.'\nwidth = 3",
                   "open(out_dir + '/names.txt', 'w').write(' '.join(sorted(k for k in globals() if not k.startswith('_'))))")
    (notebooks / "profiles" / "smoke.yaml").write_text("{}\n")
    return notebooks


def test_unknown_param_is_an_error_before_any_notebook_runs(tmp_path):
    notebooks = _two_notebooks(tmp_path)
    results = tmp_path / "results"
    with pytest.raises(SystemExit, match=r"stepz.*steps.*width"):
        runner.run_study("smoke", overrides={"stepz": 2}, results_root=results, notebooks_dir=notebooks)
    assert not results.exists()
    # valid names are those of the selected notebooks only
    with pytest.raises(SystemExit, match=r"width"):
        runner.run_study("smoke", only="01", overrides={"width": 2}, results_root=results, notebooks_dir=notebooks)
    with pytest.raises(SystemExit, match=r"out_dir.*runner"):
        runner.run_study("smoke", overrides={"out_dir": "/tmp"}, results_root=results, notebooks_dir=notebooks)
    assert not results.exists()


def test_a_value_of_the_wrong_type_is_an_error_before_any_notebook_runs(tmp_path):
    notebooks = _two_notebooks(tmp_path)
    results = tmp_path / "results"
    with pytest.raises(SystemExit, match=r"--param steps='ten' for 01_steps: steps must be an integer like the notebook's default 1, got 'ten'"):
        runner.run_study("smoke", overrides={"steps": "ten"}, results_root=results, notebooks_dir=notebooks)
    with pytest.raises(SystemExit, match=r"width must be an integer like the notebook's default 3, got \[3\]"):
        runner.check_overrides(runner.notebook_paths(notebooks), {"width": [3]})
    (notebooks / "profiles" / "smoke.yaml").write_text("01_steps: {steps: 2.5}\n")
    with pytest.raises(SystemExit, match=r"smoke.yaml: 01_steps: steps must be an integer .* got 2.5"):
        runner.run_study("smoke", results_root=results, notebooks_dir=notebooks)
    assert not results.exists()
    runner.check_overrides(runner.notebook_paths(notebooks), {"steps": None, "width": 4})  # None and the right type pass


def test_a_malformed_profile_names_the_file_and_the_line(tmp_path):
    notebooks = _two_notebooks(tmp_path)
    (notebooks / "profiles" / "smoke.yaml").write_text("01_steps:\n  steps: 2\n 02_plain: {width: 3\n")
    with pytest.raises(SystemExit, match=r"profiles/smoke.yaml: not valid YAML at line 3, column 2"):
        runner.load_profile("smoke", notebooks)
    (notebooks / "profiles" / "smoke.yaml").write_text("- 01_steps\n")
    with pytest.raises(SystemExit, match="smoke.yaml: a profile maps each notebook's stem to a mapping"):
        runner.load_profile("smoke", notebooks)


def test_param_goes_only_to_notebooks_that_have_it(tmp_path):
    notebooks = _two_notebooks(tmp_path)
    runs = runner.run_study("smoke", overrides={"steps": 5}, results_root=tmp_path / "results", notebooks_dir=notebooks)
    assert [r.ok for r in runs] == [True, True], [r.error for r in runs]
    out = tmp_path / "results" / "smoke"
    assert (out / "01_steps" / "steps.txt").read_text() == "5"
    names = (out / "02_plain" / "names.txt").read_text().split()
    assert "width" in names and "steps" not in names  # not injected where it is no parameter


def test_runner_kernel_is_headless_and_quiet(tmp_path, monkeypatch, capfd):
    """SEMSCALE_HEADLESS in the kernel; the kernel on IPC sockets, so its log has no warning about unencrypted TCP."""
    monkeypatch.delenv("SEMSCALE_HEADLESS", raising=False)
    notebooks = tmp_path / "notebooks"
    (notebooks / "profiles").mkdir(parents=True)
    write_notebook(notebooks / "01_env.ipynb", "profile = 'default'\nout_dir = '.'",
                   "import os\nopen(out_dir + '/headless.txt', 'w').write(repr(os.environ.get('SEMSCALE_HEADLESS')))")
    (notebooks / "profiles" / "smoke.yaml").write_text("{}\n")
    (run,) = runner.run_study("smoke", results_root=tmp_path / "results", notebooks_dir=notebooks)
    assert run.ok, run.error
    assert (run.outputs / "headless.txt").read_text() == "'1'"
    assert "SEMSCALE_HEADLESS" not in runner.os.environ  # restored afterwards
    out, err = capfd.readouterr()
    assert "running 01_env.ipynb" in out and "WARNING" not in out + err, err


def test_a_live_run_draws_widgets_and_names_every_output_with_an_error_or_a_warning(tmp_path, monkeypatch):
    monkeypatch.setenv("SEMSCALE_HEADLESS", "1")  # the test command's; a live run takes it away from its kernel
    notebooks = tmp_path / "notebooks"
    (notebooks / "profiles").mkdir(parents=True)
    write_notebook(notebooks / "01_live.ipynb", "profile = 'default'\nout_dir = '.'\ninteractive = False",
                   "import os, warnings\nprint(interactive, os.environ.get('SEMSCALE_HEADLESS'))\n"
                   "warnings.warn('a warning a reader would see')")
    (notebooks / "profiles" / "smoke.yaml").write_text("{}\n")
    (run,) = runner.run_study("smoke", results_root=tmp_path / "results", notebooks_dir=notebooks, live=True)
    assert run.ok and run.executed.parent.name == "smoke-live"
    executed = nbformat.read(run.executed, as_version=4)
    assert executed.cells[-1].outputs[0].text == "True None\n"
    assert len(run.problems) == 1 and "cell 2: stderr:" in run.problems[0] and "a warning a reader would see" in run.problems[0]
    assert "1 output(s) with an error or a warning" in runner.summary_text([run])
    (headless,) = runner.run_study("smoke", results_root=tmp_path / "results", notebooks_dir=notebooks)
    assert nbformat.read(headless.executed, as_version=4).cells[-1].outputs[0].text == "False 1\n"


def test_output_problems_reads_errors_stderr_and_the_outputs_widgets_hold():
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("text"),
        nbformat.v4.new_code_cell("1", outputs=[nbformat.v4.new_output("stream", name="stdout", text="fine\n"),
                                                 nbformat.v4.new_output("stream", name="stderr", text="")]),
        nbformat.v4.new_code_cell("2", outputs=[nbformat.v4.new_output("error", ename="ValueError", evalue="boom", traceback=[])])])
    notebook.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {"a": {
        "model_name": "OutputModel", "state": {"outputs": [{"output_type": "stream", "name": "stderr",
                                                            "text": "UserWarning: in a callback\nmore"}]}}}}}
    assert runner.output_problems(notebook) == ["cell 2: ValueError: boom", "widget OutputModel: stderr: UserWarning: in a callback"]


# --- publishing and the committed reference results ----------------------------------------------------------------


FOLDERS = sorted(p for p in runner.REFERENCE.glob("*/*") if p.is_dir())


def test_reference_folders_are_named_by_profile_and_notebook():
    stems = {p.stem for p in runner.notebook_paths()}
    for folder in FOLDERS:
        assert folder.parent.name in runner.PROFILES and folder.name in stems, folder


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_reference_tables_parse_and_carry_provenance(folder):
    provenance = json.loads((folder / "provenance.json").read_text())
    for key in ("git_commit", "packages", "device", "parameters"):
        assert provenance.get(key), f"{folder}/provenance.json lacks {key}"
    assert provenance["packages"].get("torch")
    tables = sorted(folder.glob("*.csv"))
    assert tables, f"{folder} holds no table"
    for table in tables:
        frame = pd.read_csv(table)
        assert len(frame) and len(frame.columns) > 1, table
    assert (folder / "FINDINGS.md").read_text().strip(), f"{folder} has no FINDINGS.md"


def test_publish_copies_tables_and_figures_with_provenance(tmp_path):
    outputs = tmp_path / "results" / "01_x"
    outputs.mkdir(parents=True)
    pd.DataFrame({"a": [1], "b": [2]}).to_csv(outputs / "table.csv", index=False)
    (outputs / "figure.png").write_bytes(b"png")
    (outputs / "figure.pdf").write_bytes(b"pdf")
    executed = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        f"# NBVAL_IGNORE_OUTPUT\nprint('{outputs}')", outputs=[nbformat.v4.new_output("stream", name="stdout", text=f"{outputs}\n")])])
    nbformat.write(executed, tmp_path / "01_x.ipynb")
    run = runner.NotebookRun("01_x", True, 1.5, tmp_path / "01_x.ipynb", outputs, params={"profile": "default", "seeds": 3})
    target = runner.publish(run, "default", tmp_path / "reference")
    (target / "FINDINGS.md").write_text("kept")
    (target / "stale.csv").write_text("x,y\n1,2\n")
    runner.publish(run, "default", tmp_path / "reference")
    assert sorted(p.name for p in target.iterdir()) == ["01_x.ipynb", "FINDINGS.md", "figure.png", "provenance.json", "table.csv"]
    copy = nbformat.read(target / "01_x.ipynb", as_version=4)  # every output kept for a reader, paths relative
    assert copy.cells[0].outputs[0].text == "../../../results/01_x\n"
    provenance = json.loads((target / "provenance.json").read_text())
    assert provenance["parameters"] == {"profile": "default", "seeds": 3} and provenance["minutes"] == 1.5
    assert provenance["git_commit"] == records.git_commit()  # no provenance taken by a run: the current one
    # a run's own provenance (taken before it ran) is what gets published, not the state after copying its files
    taken = {**records.provenance(), "git_commit": "0" * 40, "source_sha256": "f" * 64}
    runner.publish(dataclasses.replace(run, provenance=taken), "default", tmp_path / "reference")
    provenance = json.loads((target / "provenance.json").read_text())
    assert provenance["git_commit"] == "0" * 40 and provenance["source_sha256"] == "f" * 64
    with pytest.raises(ValueError, match="only a successful run"):
        runner.publish(runner.NotebookRun("01_x", False, 0, outputs, outputs, "boom"), "default", tmp_path)
