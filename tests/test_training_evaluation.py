"""The one trainer and the one evaluator."""

from __future__ import annotations

import math

import pytest
import torch
from tiny_algorithm import TinyProto

from metalearn_lib.algorithms import PixelNN
from metalearn_lib.data import lake_runs
from metalearn_lib.episodes import EpisodeSampler
from metalearn_lib.evaluation import evaluate, evaluate_lake_runs, mean_ci95, parse_setting
from metalearn_lib.training import TrainConfig, learning_rate, load_checkpoint, train


def quiet(**kwargs) -> TrainConfig:
    return TrainConfig(progress=False, log_every=5, **kwargs)


def test_mean_ci95_by_hand():
    mean, ci = mean_ci95([0.0, 1.0, 0.0, 1.0])
    assert mean == 0.5 and math.isclose(ci, 1.96 * math.sqrt((4 * 0.25 / 3) / 4))
    assert mean_ci95([0.7]) == (0.7, 0.0)
    with pytest.raises(ValueError):
        mean_ci95([])


def test_parse_setting():
    assert parse_setting("20w5s") == (20, 5)
    with pytest.raises(ValueError, match="WAYSwSHOTSs"):
        parse_setting("5-way")


def test_learning_rate_schedules():
    step = TrainConfig(steps=10, lr=1.0, schedule="step", step_size=2, gamma=0.5)
    assert [learning_rate(step, s, 0) for s in (0, 1, 2, 5)] == [1.0, 1.0, 0.5, 0.25]
    cosine = TrainConfig(steps=10, lr=1.0, schedule="cosine")
    assert learning_rate(cosine, 0, 0.0) == 1.0 and abs(learning_rate(cosine, 0, 1.0)) < 1e-12
    assert learning_rate(TrainConfig(steps=1, lr=0.3, schedule="constant"), 99, 0.9) == 0.3


@pytest.mark.parametrize("kwargs,message", [
    ({}, "say how long to train"), ({"steps": 0}, "steps must be positive"),
    ({"steps": 5, "schedule": "warm"}, "unknown schedule"), ({"time_budget": -1}, "positive number of seconds"),
    ({"steps": 5, "meta_batch": 0}, "meta_batch must be positive"), ({"steps": 5, "lr": 0}, "lr must be positive"),
])
def test_bad_training_configs(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs).check()


def test_training_learns_and_keeps_history(lake_train):
    torch.manual_seed(0)
    algo = TinyProto()
    sampler = EpisodeSampler(lake_train, 5, 1, 5, seed=0)
    result = train(algo, sampler, quiet(steps=60, meta_batch=2, lr=3e-3))
    assert result.steps == 60 and result.tasks == 120
    assert len(result.history["loss"]) == 12 and result.history["step"][-1] == 60
    assert result.history["loss"][-1] < result.history["loss"][0]


def test_time_budget_stops_training(lake_train):
    result = train(TinyProto(), EpisodeSampler(lake_train, 5, 1, 5), quiet(time_budget=1.0))
    assert 1.0 <= result.seconds < 5.0 and result.steps > 0


def test_best_by_validation_is_restored(lake_train, lake_test):
    torch.manual_seed(0)
    algo = TinyProto()
    val = EpisodeSampler(lake_test, 5, 1, 5, seed=3)
    result = train(algo, EpisodeSampler(lake_train, 5, 1, 5), quiet(steps=40, val_every=10, val_episodes=20), val_sampler=val)
    assert result.validation["step"] == [10, 20, 30, 40]
    assert result.best_val_accuracy == max(result.validation["accuracy"])
    assert result.best_step == result.validation["step"][result.validation["accuracy"].index(result.best_val_accuracy)]


def test_checkpoint_resume_equals_an_uninterrupted_run(lake_train, tmp_path):
    def run(steps, out, resume=False, seed_weights=True):
        torch.manual_seed(0)
        algo = TinyProto()
        sampler = EpisodeSampler(lake_train, 5, 1, 5, seed=0)
        train(algo, sampler, quiet(steps=steps, lr=3e-3, step_size=7, out_dir=str(out), resume=resume))
        return algo

    straight = run(20, tmp_path / "a")
    run(10, tmp_path / "b")
    resumed = run(20, tmp_path / "b", resume=True)
    for p, q in zip(straight.parameters(), resumed.parameters()):
        torch.testing.assert_close(p, q)
    blob = load_checkpoint(tmp_path / "b" / "last.pt")  # weights_only=True inside
    assert blob["algorithm"] == "tiny-proto" and blob["result"]["steps"] == 20
    assert blob["config"] == {"in_channels": 1, "image_size": 28, "dim": 16}


def test_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "none.pt")
    (tmp_path / "junk.pt").write_text("junk")
    with pytest.raises(ValueError, match="not a metalearn_lib checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")


def test_untrainable_algorithm_is_refused(lake_train):
    with pytest.raises(ValueError, match="nothing to train"):
        train(PixelNN(), EpisodeSampler(lake_train, 5, 1, 5), quiet(steps=1))


def test_evaluate_pixel_nn_on_real_omniglot(lake_test):
    result = evaluate(PixelNN(), lake_test, ways=5, shots=1, episodes=100, seed=0)
    assert result.episodes == 100 and 30 < result.accuracy < 60 and 0 < result.ci95 < 5
    again = evaluate(PixelNN(), lake_test, ways=5, shots=1, episodes=100, seed=0)
    assert again.accuracy == result.accuracy  # same seed, same test episodes
    with pytest.raises(ValueError, match="cannot draw 700-way"):
        evaluate(PixelNN(), lake_test, ways=700, shots=1)


def test_queries_are_capped_to_fit_the_class():
    # 20 images per class: 5 shots leave room for 15 queries, 19 shots for one
    from metalearn_lib.data import ClassImages
    classes = ClassImages.from_grouped(torch.rand(6, 20, 1, 4, 4), list("abcdef"))
    assert evaluate(PixelNN(), classes, ways=3, shots=19, queries=15, episodes=3).episodes == 3
    with pytest.raises(ValueError, match="cannot draw 20 shots"):
        evaluate(PixelNN(), classes, ways=3, shots=20, episodes=3)


def test_lake_runs_protocol(data_root):
    result = evaluate_lake_runs(PixelNN(), lake_runs())
    assert result.episodes == 20 and 5 < result.accuracy < 50  # far above chance (5%), far below people
