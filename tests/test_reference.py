"""The committed reference results: every table parses and every folder names its provenance."""

import dataclasses
import json

import pandas as pd
import pytest

from semscale import notebooks as runner
from semscale import records

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
    run = runner.NotebookRun("01_x", True, 1.5, tmp_path / "01_x.ipynb", outputs, params={"profile": "default", "seeds": 3})
    target = runner.publish(run, "default", tmp_path / "reference")
    (target / "FINDINGS.md").write_text("kept")
    (target / "stale.csv").write_text("x,y\n1,2\n")
    runner.publish(run, "default", tmp_path / "reference")
    assert sorted(p.name for p in target.iterdir()) == ["FINDINGS.md", "figure.png", "provenance.json", "table.csv"]
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
