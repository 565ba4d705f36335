"""keep_freed_memory: freed activations are reused, not faulted in again from the kernel."""

import json
import os
import subprocess
import sys

import pytest

from metalearn_lib.allocator import keep_freed_memory

# In a fresh process: hold six 8 MB tensors (a Conv-4 forward's activations on a 20-way episode are
# about that size), free them all, repeat; print the minor page faults per cycle, once steady.
CYCLE = """
import json, resource, torch
from metalearn_lib.allocator import keep_freed_memory
tuned = keep_freed_memory()
def cycle():
    blocks = [torch.empty(2_000_000).fill_(1.0) for _ in range(6)]
    del blocks
for _ in range(10):
    cycle()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    cycle()
print(json.dumps({"tuned": tuned, "faults": (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20}))
"""


def faults_per_cycle(keep: bool) -> dict:
    # glibc adapts its thresholds to what the process freed before (imports differ between machines),
    # so pin them to glibc's starting values (128 KiB) for both runs: the control then always unmaps.
    env = {**os.environ, "METALEARN_KEEP_FREED_MEMORY": "1" if keep else "0", "OMP_NUM_THREADS": "1",
           "MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}
    out = subprocess.run([sys.executable, "-c", CYCLE], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_keep_freed_memory_stops_page_faults() -> None:
    assert keep_freed_memory() is True
    assert keep_freed_memory() is True  # the first call decides
    plain, kept = faults_per_cycle(keep=False), faults_per_cycle(keep=True)
    assert plain["tuned"] is False and kept["tuned"] is True
    # Unmapped on free, every block is faulted in again on every cycle; with the tuning the heap keeps
    # them (keep_freed_memory's mallopt calls override the pinned values).
    assert plain["faults"] > 2000, plain
    assert kept["faults"] < 50, kept
