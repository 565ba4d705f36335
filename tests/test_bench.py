"""The MAML bench's timing: implementations take turns on a CPU, and each reports its median step."""

from __future__ import annotations

import pytest

from metalearn_lib import bench
from metalearn_lib.bench import Setting, run_interleaved, time_rounds


def test_time_rounds_takes_turns():
    calls = []
    seconds = time_rounds({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, rounds=3)
    assert calls == ["a", "b"] * 3
    assert {k: len(v) for k, v in seconds.items()} == {"a": 3, "b": 3}
    assert all(s >= 0 for v in seconds.values() for s in v)


def test_interleaved_rows_on_cpu(monkeypatch):
    import torch

    real = bench.prepare

    def prepare(impl, *args, **kwargs):
        if impl == "higher":
            raise ImportError("No module named 'higher'")
        return real(impl, *args, **kwargs)

    monkeypatch.setattr(bench, "prepare", prepare)
    setting = Setting(ways=2, shots=1, meta_batch=2, steps=1, first_order=True)
    rows = run_interleaved(["metalearn_lib", "learn2learn", "higher"], setting, torch.device("cpu"), rounds=3)
    by_impl = {row["impl"]: row for row in rows}
    assert by_impl["higher"]["error"].startswith("not installed")
    for impl in ("metalearn_lib", "learn2learn"):
        row = by_impl[impl]
        assert row["setting"] == "2w1s-mb2-1step-first" and row["rounds"] == 3
        low, high = row["range"]
        assert 0 < low <= row["tasks_per_s"] <= high
    assert by_impl["metalearn_lib"]["vectorize"] is False   # the loop on a CPU


def test_cpu_rows_record_task_threads():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        setting = Setting(ways=2, shots=1, meta_batch=2, steps=1, first_order=True)
        rows = run_interleaved(["metalearn_lib", bench.SERIAL_IMPL], setting, torch.device("cpu"), rounds=1)
    finally:
        torch.set_num_threads(threads)
    # two tasks at once on two torch threads; -serial runs them one by one with the threads in each operation
    assert {row["impl"]: row["task_threads"] for row in rows} == {"metalearn_lib": 2, bench.SERIAL_IMPL: 1}


@pytest.mark.parametrize("rounds", [0])
def test_no_rounds_is_an_error(rounds):
    with pytest.raises(ValueError, match="at least one"):
        time_rounds({"a": lambda: None}, rounds=rounds)


@pytest.mark.parametrize("flag", [True, False])
def test_cli_bench_sets_and_records_cudnn_benchmark(monkeypatch, capsys, flag):
    import json

    import torch

    from metalearn_lib.cli import main

    seen = {}

    def fake_bench(device, **kwargs):
        seen["benchmark"] = torch.backends.cudnn.benchmark
        return [{"impl": "metalearn_lib", "setting": "s", "tasks_per_s": 1.0}]

    monkeypatch.setattr(bench, "bench_maml", fake_bench)
    before = torch.backends.cudnn.benchmark
    try:
        assert main(["bench", "maml", "--device", "cpu", "--steps", "1"] + (["--cudnn-benchmark"] if flag else [])) == 0
    finally:
        torch.backends.cudnn.benchmark = before
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert seen["benchmark"] is flag and out["cudnn_benchmark"] is flag
    assert out["threads"] == torch.get_num_threads()   # what every implementation was given
