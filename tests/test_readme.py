"""The README's example is code that runs, not prose that rots."""

import json
import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README.md has no python example"
    namespace = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    scores = namespace["scores"]
    assert set(scores) >= {"rmse", "test_ll", "coverage_90"}
    assert "rmse" in capsys.readouterr().out
    # The same seeds give the example's golden figures (tests/test_golden.py says why they moved in the redesign).
    golden = json.loads((README.parent / "tests" / "golden" / "after.json").read_text())["readme"]
    for name, value in golden.items():
        np.testing.assert_allclose(float(scores[name]), value, rtol=2e-5, err_msg=name)


def test_ci_runs_the_readme_test_command():
    readme = README.read_text()
    ci = (README.parent / ".ci" / "run").read_text()
    command = re.search(r'pip install -e "\.\[test\]" && (python -m pytest[^\n`]*)', readme).group(1).strip()
    assert command in ci
