"""The tutorial notebooks in docs/tutorials run top to bottom, offline, on the built-in data.

They run in one home shared by this module, as a reader runs them one after the other: the MNIST sample
dataset and its default-model embeddings are made by the first and reused by the next. A cell that
raises fails the test with the cell's source and traceback. The committed files must keep the outputs
of a complete run, so they read like documentation."""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

import pytest

TUTORIALS = Path(__file__).resolve().parents[1] / "docs" / "tutorials"
sys.path.insert(0, str(TUTORIALS))
import run as tutorials  # noqa: E402  (docs/tutorials/run.py)

NOTEBOOKS = tutorials.notebooks()
# a fresh home embeds the 5,000 digits once (~1 min on 2 idle cores); a busy machine needs more than the
# suite's default 900 s for the first notebook
pytestmark = [pytest.mark.usefixtures("in_module_home"), pytest.mark.timeout(2400)]


def test_there_are_tutorials():
    assert [p.name for p in NOTEBOOKS][:2] == ["01_mnist_embeddings.ipynb", "02_brain_guide.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path):
    nb = tutorials.execute(path, write=False)
    code = [c for c in nb.cells if c.cell_type == "code"]
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_keeps_the_outputs_of_a_complete_run(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert [c["execution_count"] for c in code] == list(range(1, len(code) + 1)), \
        f"{path.name} was not saved from one complete run: python docs/tutorials/run.py {path.name}"
    outputs = [o for c in code for o in c["outputs"]]
    assert not [o for o in outputs if o["output_type"] == "error"]
    images = [o["data"]["image/png"] for o in outputs if "image/png" in o.get("data", {})]
    assert images, f"{path.name} has no plots saved"
    for png in images:
        assert base64.b64decode(png)[:8] == b"\x89PNG\r\n\x1a\n"
