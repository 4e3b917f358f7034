"""Execute the tutorial notebooks top to bottom and save their outputs in place.

    .venv/bin/python docs/tutorials/run.py                 # every notebook here, outputs written back
    .venv/bin/python docs/tutorials/run.py 01_mnist_embeddings.ipynb
    .venv/bin/python docs/tutorials/run.py --check         # run them, write nothing (what the tests do)

Each notebook runs in a fresh kernel of this interpreter (so ``.venv/bin/python`` runs them against the
installed embedlens), with ``docs/tutorials`` as its working folder. Datasets and embeddings go to
``$EMBEDLENS_HOME`` as usual, so a second run reuses what the first stored. A cell that raises stops the
run with the cell and its traceback, and the notebook file is left as it was.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: Seconds one cell may run (the slowest, embedding 5,000 digits with the default model, takes ~1-2 min).
CELL_TIMEOUT = 900

# The kernel inherits this: plotly figures are stored as their JSON (rendered by Jupyter and VS Code)
# rather than with 3.5 MB of plotly.js each.
KERNEL_ENV = {"PLOTLY_RENDERER": "plotly_mimetype"}
# Progress bars print as text here: tqdm's notice that the frontend could draw them as widgets is noise.
QUIET = "import warnings; warnings.filterwarnings('ignore', message='IProgress not found')"


def notebooks(names: list[str] | None = None) -> list[Path]:
    """The notebooks named (file names or paths), or every ``*.ipynb`` here in name order."""
    if not names:
        return sorted(HERE.glob("*.ipynb"))
    return [Path(n) if Path(n).exists() else HERE / n for n in names]


def execute(path: Path, write: bool = True, timeout: int = CELL_TIMEOUT):
    """Run ``path`` in a fresh kernel; with ``write``, save it with its new outputs. Returns the notebook.

    Raises ``nbclient.exceptions.CellExecutionError`` (naming the cell) when a cell fails.
    """
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    saved = {k: os.environ.get(k) for k in KERNEL_ENV}
    os.environ.update({k: os.environ.get(k, v) for k, v in KERNEL_ENV.items()})
    try:
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                                resources={"metadata": {"path": str(path.parent)}},
                                extra_arguments=[f"--IPKernelApp.exec_lines={QUIET}"])
        client.execute()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    squash_progress(nb)
    if write:
        nbformat.write(nb, path)
    return nb


def squash_progress(nb) -> None:
    """Keep only the final state of progress bars: a bar redraws its line with ``\\r`` (each redraw
    arriving as its own output), and a notebook would otherwise store every redraw."""
    for cell in nb.cells:
        merged: list = []
        for out in cell.get("outputs", []):
            prev = merged[-1] if merged else None
            if (out.get("output_type") == "stream" and prev is not None and prev.get("output_type") == "stream"
                    and prev.get("name") == out.get("name")):
                prev["text"] += out["text"]
            else:
                merged.append(out)
        for out in merged:
            if out.get("output_type") == "stream" and "\r" in out["text"]:
                out["text"] = "\n".join(line.rstrip("\r").rsplit("\r", 1)[-1] for line in out["text"].split("\n"))
        if "outputs" in cell:
            cell["outputs"] = merged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", help="notebooks to run (default: every one in docs/tutorials)")
    parser.add_argument("--check", action="store_true", help="run them but do not write the outputs back")
    parser.add_argument("--timeout", type=int, default=CELL_TIMEOUT, help="seconds one cell may run")
    args = parser.parse_args(argv)
    for path in notebooks(args.notebooks):
        start = time.perf_counter()
        execute(path, write=not args.check, timeout=args.timeout)
        print(f"{path.name}: ran in {time.perf_counter() - start:.0f} s{'' if args.check else ', outputs saved'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
