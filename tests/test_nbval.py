"""The smoke copies under nbval: ``reference/smoke/<notebook>.ipynb``, written by ``./run_all.sh --profile smoke
--publish`` (``runner.publish_executed_copy``), are re-run by ``./run_all.sh --test`` (``pytest --nbval-lax``, see
pyproject.toml), which compares every cell marked ``# NBVAL_CHECK_OUTPUT`` with its stored output.

Here: publishing writes a clean copy; the committed copies are those of the current notebooks and hold no path or
timing; each copy's run in this session wrote its figures and tables; a changed checked output fails on that cell."""

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import pytest
from nbval.plugin import get_sanitize_patterns
from semscale import cache, records, runner

SMOKE = runner.REFERENCE / "smoke"
COPIES = sorted(SMOKE.glob("*.ipynb"))
SANITIZE = Path(__file__).with_name("nbval_sanitize.cfg")
CHECK_OUTPUT = "NBVAL_CHECK_OUTPUT"
COLLECTED = time.time()  # pytest imports every test file before it runs any test, so before any notebook cell ran


def code_cells(notebook) -> list:
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def injected(cell) -> bool:
    return "injected-parameters" in cell.metadata.get("tags", [])


def write_notebook(path: Path, parameters: str, *bodies: str) -> None:
    cells = [nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]}),
             *map(nbformat.v4.new_code_cell, bodies)]
    notebook = nbformat.v4.new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, path)


def test_publish_in_the_smoke_profile_writes_a_clean_executed_copy(tmp_path):
    notebooks = tmp_path / "notebooks"
    (notebooks / "profiles").mkdir(parents=True)
    (notebooks / "profiles" / "smoke.yaml").write_text("{}\n")
    write_notebook(notebooks / "01_x.ipynb", "profile = 'default'\nout_dir = '.'",
                   "# NBVAL_CHECK_OUTPUT\nprint(out_dir)",
                   "# NBVAL_IGNORE_OUTPUT\nimport time\nprint(time.time())",
                   f"import pathlib\nprint(pathlib.Path.home() / 'data', {str(records.REPO / 'runs')!r})")
    (run,) = runner.run_study("smoke", results_root=tmp_path / "results", notebooks_dir=notebooks)
    assert run.ok, run.error
    copy = runner.publish(run, "smoke", tmp_path / "reference")
    assert copy == tmp_path / "reference" / "smoke" / "01_x.ipynb"
    assert sorted(p.name for p in copy.parent.iterdir()) == ["01_x.ipynb"]  # no table folder for a smoke run
    text = copy.read_text()
    assert str(tmp_path) not in text and str(Path.home()) + "/" not in text  # the checkout: see `paths` below
    notebook = nbformat.read(copy, as_version=4)
    cells = code_cells(notebook)
    assert [injected(cell) for cell in cells] == [False, True, False, False, False]
    injected_cell, checked, ignored, paths = cells[1:]
    assert 'out_dir = "../../results/smoke/01_x"' in injected_cell.source
    assert notebook.metadata.papermill.parameters.out_dir == "../../results/smoke/01_x"
    assert checked.outputs[0].text == "../../results/smoke/01_x\n"  # where nbval, run from reference/smoke, writes
    assert ignored.outputs == []
    assert paths.outputs[0].text == f"~/data {os.path.relpath(records.REPO, copy.parent)}/runs\n"
    assert not set(runner.RUN_METADATA) & set(notebook.metadata.papermill)
    assert all(not {"execution", "papermill"} & set(cell.metadata) for cell in notebook.cells)


def test_every_notebook_has_a_smoke_copy():
    assert [p.name for p in COPIES] == [p.name for p in runner.notebook_paths()], (
        "refresh the smoke copies: ./run_all.sh --profile smoke --publish")


@pytest.mark.parametrize("copy", COPIES, ids=lambda p: p.stem)
def test_smoke_copy_is_current_checked_and_clean(copy):
    notebook, source = nbformat.read(copy, as_version=4), nbformat.read(runner.NOTEBOOKS / copy.name, as_version=4)
    ran = [(cell.get("id"), cell.source) for cell in code_cells(notebook) if not injected(cell)]
    assert ran == [(cell.get("id"), cell.source) for cell in code_cells(source)], (
        f"notebooks/{copy.name} changed since its copy: ./run_all.sh --profile smoke --only {copy.stem} --publish")
    (parameters,) = [cell for cell in code_cells(notebook) if injected(cell)]
    assert "profile = \"smoke\"" in parameters.source
    checked = [cell for cell in code_cells(notebook) if runner.has_marker(cell.source, CHECK_OUTPUT)]
    assert len(checked) >= 3 and all(cell.outputs for cell in checked), "at least three checked cells, each with output"
    assert not [o for cell in code_cells(notebook) for o in cell.outputs if o.output_type == "error"]
    text = copy.read_text()
    for path in {str(records.REPO), str(Path.home()), tempfile.gettempdir() + "/", str(cache.runs_dir())}:
        assert path not in text, f"{copy.name} names {path}: mark its cell # NBVAL_IGNORE_OUTPUT or print it relative"
    assert not set(runner.RUN_METADATA) & set(notebook.metadata.get("papermill", {}))
    assert all(not {"execution", "papermill"} & set(cell.metadata) for cell in notebook.cells)


@pytest.mark.parametrize("copy", COPIES, ids=lambda p: p.stem)
def test_smoke_copy_wrote_its_figures_and_tables(copy, request):
    """On the outputs of this session's nbval run of the copy: every figure as PNG and PDF, and tables."""
    cells = [item for item in request.session.items if item.path == copy]
    if not cells:
        pytest.skip(f"{copy.name} does not run in this session (it runs under nbval: ./run_all.sh --test)")
    assert request.session.items.index(cells[-1]) < request.session.items.index(request.node), (
        "reference/smoke must run before tests/ (pyproject.toml's testpaths)")
    notebook = nbformat.read(copy, as_version=4)
    out_dir = (copy.parent / notebook.metadata.papermill.parameters.out_dir).resolve()
    written = {p.name for p in out_dir.glob("*") if p.stat().st_mtime >= COLLECTED}
    figures = sorted(name for name in written if name.endswith(".png"))
    assert figures, f"{copy.stem} wrote no figure to {out_dir}"
    assert all(name[:-4] + ".pdf" in written for name in figures)
    assert any(name.endswith(".csv") for name in written), f"{copy.stem} wrote no table to {out_dir}"


def test_sanitize_file_holds_patterns_nbval_reads():
    patterns = get_sanitize_patterns(SANITIZE.read_text())
    assert len(patterns) == 3 and all(re.compile(regex) for regex, _ in patterns)


def test_a_changed_checked_output_fails_on_exactly_that_cell(tmp_path):
    """Change the last digit of the first checked output of the primer's copy: nbval fails that cell, shows the
    stored and the new value, and passes the next checked cell (the copy is cut after it, to keep this test short)."""
    notebook = nbformat.read(SMOKE / "00_semantic_scale_primer.ipynb", as_version=4)
    cells = code_cells(notebook)
    first, second = [i for i, cell in enumerate(cells) if runner.has_marker(cell.source, CHECK_OUTPUT)][:2]
    notebook.cells = notebook.cells[: notebook.cells.index(cells[second]) + 1]
    (result,) = [o for o in cells[first].outputs if o.output_type == "execute_result"]
    stored = result.data["text/plain"]
    changed = re.sub(r"\d(?=\D*$)", lambda digit: str((int(digit.group()) + 1) % 10), stored)
    assert changed != stored
    result.data["text/plain"] = changed
    copy = tmp_path / "reference" / "smoke" / "00_semantic_scale_primer.ipynb"  # out_dir ../../results: in tmp_path
    copy.parent.mkdir(parents=True)
    nbformat.write(notebook, copy)
    command = [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "--nbval-sanitize-with",
               str(SANITIZE), "-p", "no:cacheprovider", "--rootdir", str(tmp_path), "--color=no", "-rf", str(copy)]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "SEMSCALE_HEADLESS": "1"})
    assert done.returncode == 1, done.stdout + done.stderr
    failed = re.findall(r"^FAILED (\S+::Cell \d+)", done.stdout, re.M)
    assert failed == [f"reference/smoke/{copy.name}::Cell {first}"], done.stdout
    assert "mismatch 'text/plain'" in done.stdout and f"1 failed, {second} passed" in done.stdout, done.stdout
    value = re.compile(r"\S+$")
    assert value.search(changed).group() in done.stdout and value.search(stored).group() in done.stdout, done.stdout
