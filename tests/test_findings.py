"""semscale.findings: every number marked in the README's Findings and the FINDINGS.md files is what the committed
reference CSVs give; marking, checking and rewriting."""

import pandas as pd
import pytest
from semscale import findings


def test_every_marked_number_agrees_with_the_reference_csvs():
    assert findings.differences() == []
    used = {name for path in findings.TEXTS for name, _ in findings.marked(path.read_text())}
    assert used, "no marked number in the README or a FINDINGS.md"


def test_a_number_that_drifted_from_its_csv_is_named_and_rewritten(tmp_path):
    root = tmp_path / "reference"
    (root / "04_imbalance_taxonomy").mkdir(parents=True)
    pd.DataFrame({"z": [0.5, -1.3421, 1.0]}).to_csv(root / "04_imbalance_taxonomy" / "monte_carlo_check.csv", index=False)
    text = tmp_path / "FINDINGS.md"
    text.write_text("largest deviation <!--n:04.max_z-->1.30<!--/n--> standard errors; <!--n:nope-->1<!--/n-->")
    assert findings.differences([text], root) == [
        "FINDINGS.md: 04.max_z: written '1.30', the CSVs give '1.34'",
        "FINDINGS.md: nope: no such number (semscale.findings.FACTS)"]
    text.write_text("largest deviation <!--n:04.max_z-->1.30<!--/n--> standard errors")
    assert findings.rewrite(text, root) == 1 and findings.differences([text], root) == []
    assert text.read_text() == "largest deviation <!--n:04.max_z-->1.34<!--/n--> standard errors"
    assert findings.rewrite(text, root) == 0


@pytest.mark.parametrize("x, text", [(1.8, "+1.80"), (-0.266, "−0.27"), (0.0, "+0.00")])
def test_signed_numbers_use_a_true_minus(x, text):
    assert findings.signed(x) == text and findings.interval(-1, 2, 1) == "[−1.0, +2.0]"
