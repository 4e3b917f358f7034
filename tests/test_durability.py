"""A write killed half way leaves the dataset readable, holding either nothing or whole samples."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import embedlens as el

WRITER = """
import sys, embedlens as el
ds = el.load_dataset("victim")
batch = int(sys.argv[1])
print("writing", flush=True)
for round in range(1000):
    ds.add_samples([el.Sample(f"/img/{round}_{i}.png", ground_truth=el.Classification(str(i % 10)),
                              score=float(i), boxes=el.Detections(detections=[el.Detection("a", [0, 0, 1, 1])]))
                    for i in range(batch)])
    print("round", round, flush=True)
"""


def _kill_after_first_line(args, seconds):
    proc = subprocess.Popen([sys.executable, "-c", WRITER, *args], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    time.sleep(seconds)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return proc


def test_sigkill_during_bulk_writes_leaves_whole_batches():
    el.Dataset("victim")
    batch = 20_000
    _kill_after_first_line([str(batch)], 1.5)
    ds = el.load_dataset("victim")
    n = len(ds)
    assert n % batch == 0, f"{n} samples is not a whole number of {batch}-sample transactions"
    if n:
        assert ds.count("ground_truth.label") == n
        assert ds.count("boxes.detections.label") == n
        assert ds.count_values("ground_truth.label") == {str(k): n // 10 for k in range(10)}
    # and it still takes writes
    ds.add_sample(el.Sample("/after.png", score=1.0))
    assert len(ds) == n + 1
    assert ds._db.scalar("PRAGMA integrity_check") == "ok"
