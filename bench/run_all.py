"""Run every benchmark in bench/ (each prints its table and saves bench/results/<name>.json).

``.venv/bin/python bench/run_all.py [--quick]``; ``make bench`` runs the full versions.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

here = Path(__file__).parent
failed = []
for script in sorted(here.glob("bench_*.py")):
    print(f"\n=== {script.name} ===", flush=True)
    if subprocess.run([sys.executable, str(script), *sys.argv[1:]]).returncode:
        failed.append(script.name)
if failed:
    sys.exit(f"failed: {', '.join(failed)}")
