"""The command line: JSON on the last line, one-line errors with exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from tiny_algorithm import TinyProto

from metalearn_lib import cli
from metalearn_lib.algorithms import ALGORITHMS
from metalearn_lib.training import load_checkpoint


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "metalearn_lib", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


def test_evaluate_pixel_nn_prints_json(data_root):
    done = run_cli("evaluate", "pixel-nn", "--eval", "5w1s,20w1s", "--test-episodes", "50", "--quiet")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["command"] == "evaluate" and out["split"] == "lake"
    assert set(out["results"]) == {"5w1s", "20w1s"}
    assert out["results"]["5w1s"]["episodes"] == 50
    assert out["results"]["5w1s"]["accuracy"] > out["results"]["20w1s"]["accuracy"] > 5


def test_lake_runs_protocol_key(data_root):
    out = json.loads(run_cli("evaluate", "pixel-nn", "--protocol", "lake-runs").stdout.splitlines()[-1])
    assert list(out["results"]) == ["lake-runs"] and out["results"]["lake-runs"]["episodes"] == 20


@pytest.mark.parametrize("args,message", [
    (["evaluate", "pixel-nn", "--eval", "2000w1s"], "cannot draw 2000-way episodes"),
    (["evaluate", "pixel-nn", "--eval", "5w20s"], "cannot draw 20 shots"),
    (["evaluate", "pixel-nn", "--eval", "five-way"], "not an evaluation setting"),
    (["evaluate", "missing.pt"], "neither a checkpoint file"),
    (["evaluate", "pixel-nn", "--bogus"], "unrecognized arguments"),
    (["evaluate", "pixel-nn", "--test-episodes", "0"], "--test-episodes must be positive"),
    (["train", "nonsense", "--episodes", "1"], "unknown algorithm 'nonsense'"),
    (["train", "pixel-nn", "--episodes", "1"], "nothing to train"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_requests_are_one_line_exit_2(data_root, args, message):
    done = run_cli(*args)
    assert done.returncode == 2
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_missing_data_is_one_line_exit_2(tmp_path):
    done = run_cli("evaluate", "pixel-nn", env={"METALEARN_DATA": str(tmp_path)})
    assert done.returncode == 2 and "METALEARN_DATA" in done.stderr and "--download" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_train_then_evaluate_checkpoint(data_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(ALGORITHMS, TinyProto.name, TinyProto)
    out_dir = tmp_path / "run"
    code = cli.main(["train", "tiny-proto", "--episodes", "30", "--eval", "5w1s", "--test-episodes", "30",
                     "--val-every", "10", "--val-episodes", "10", "--out", str(out_dir), "--quiet"])
    assert code == 0
    trained = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # the JSON rounds to 0.1 s, which 30 tiny episodes can take less than: the checkpoint keeps the time
    assert trained["train"]["episodes"] == 30 and trained["train"]["seconds"] >= 0
    assert load_checkpoint(out_dir / "last.pt")["result"]["seconds"] > 0
    assert trained["results"]["5w1s"]["episodes"] == 30 and trained["queries"] == 5  # the algorithm's default
    assert (out_dir / "last.pt").exists() and (out_dir / "best.pt").exists()
    assert json.loads((out_dir / "result.json").read_text()) == trained

    assert cli.main(["evaluate", str(out_dir / "last.pt"), "--eval", "5w1s", "--test-episodes", "30", "--quiet"]) == 0
    evaluated = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert evaluated["algorithm"] == "tiny-proto" and evaluated["checkpoint_train"]["steps"] == 30
    assert evaluated["results"]["5w1s"] == trained["results"]["5w1s"]  # same weights, same test episodes

    assert cli.main(["train", "tiny-proto", "--eval", "5w1s"]) == 2
    assert "--episodes N or --time-budget" in capsys.readouterr().err
    assert cli.main(["train", "tiny-proto", "--episodes", "2", "--set", "width"]) == 2
    assert "--set expects KEY=VALUE" in capsys.readouterr().err


def test_fixed_head_defaults_to_its_own_ways(data_root, tmp_path, capsys):
    # MAML's head has train_ways outputs: without --eval, it is tested on what it can classify
    out_dir = tmp_path / "maml"
    assert cli.main(["train", "maml", "--episodes", "1", "--meta-batch", "1", "--train-ways", "3", "--test-episodes", "2",
                     "--set", "test_inner_steps=1", "--out", str(out_dir), "--quiet"]) == 0
    trained = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert sorted(trained["results"]) == ["3w1s", "3w5s"]
    assert cli.main(["evaluate", str(out_dir / "last.pt"), "--test-episodes", "2", "--quiet"]) == 0
    evaluated = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert sorted(evaluated["results"]) == ["3w1s", "3w5s"]
    # a metric method keeps the four standard settings
    assert cli.main(["evaluate", "pixel-nn", "--test-episodes", "2", "--quiet"]) == 0
    assert sorted(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["results"]) == \
        ["20w1s", "20w5s", "5w1s", "5w5s"]


def test_seed_fixes_initial_weights_and_tasks(data_root, tmp_path, monkeypatch, capsys):
    # --seed must fix the initial weights as well as the episodes: two runs with one seed agree exactly,
    # another seed differs (the weights are built before training starts, so the CLI seeds them itself)
    monkeypatch.setitem(ALGORITHMS, TinyProto.name, TinyProto)

    def run(*args: str) -> dict:
        assert cli.main([*args, "--quiet"]) == 0
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    sinusoid = ["train", "maml", "--dataset", "sinusoid", "--episodes", "3", "--test-episodes", "20"]
    first, again, other = (run(*sinusoid, "--seed", s)["results"] for s in ("3", "3", "4"))
    assert first == again and first != other
    omniglot = ["train", "tiny-proto", "--episodes", "3", "--eval", "5w1s", "--test-episodes", "5"]
    weights = []
    for i, seed in enumerate(("3", "3", "4")):
        run(*omniglot, "--seed", seed, "--out", str(tmp_path / str(i)))
        weights.append(load_checkpoint(tmp_path / str(i) / "last.pt")["state"])
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not all(torch.equal(weights[0][k], weights[2][k]) for k in weights[0])
