"""mmexp-bench bench.suites=[robustness]: the one-pass grid against one pass per condition."""

import json

import pytest

from mmexp.bench.cli import run_bench
from mmexp.bench.robustness_speed import grid_node, train_checkpoint
from mmexp.robustness.keys import ROBUSTNESS_FILE
from tests.helpers.configs import compose_config

SMALL = [
    "data.num_train=32",
    "data.num_val=16",
    "data.num_test=16",
    "data.batch_size=16",
    "data.eval_batch_size=16",
    "trainer.accelerator=cpu",
    "bench.suites=[robustness]",
    "bench.robustness.epochs=1",
]
RATES = ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9", "1"]


def bench(tmp_path, data_dir, *overrides):
    cfg = compose_config("bench", [*SMALL, *overrides], tmp_path / "bench", data_dir)
    return run_bench(cfg)


def test_both_ways_score_every_condition_of_the_grid_alike(tmp_path, data_dir):
    results = bench(tmp_path, data_dir)
    measured = results["suites"]["robustness"]
    assert measured["grid"] == "missing" and measured["modalities"] == ["image", "text"]
    assert measured["trained"]["epochs"] == 1 and measured["checkpoint"] is None
    expected = ["clean", "subset:image", "subset:text"]
    expected += [f"missing:{m}@{rate}" for m in ("image", "text") for rate in RATES]
    assert list(measured["metrics"]) == expected
    assert measured["conditions"] == 23 and measured["test_samples"] == 16
    assert measured["one_pass"].keys() == measured["per_condition"].keys() == {"seconds", "passes"}
    assert (measured["one_pass"]["passes"], measured["per_condition"]["passes"]) == (1, 23)
    assert measured["one_pass"]["seconds"] > 0 and measured["trained"]["seconds"] > 0
    assert measured["speedup"] == pytest.approx(
        measured["per_condition"]["seconds"] / measured["one_pass"]["seconds"]
    )
    # The same module on the same batches: the same metrics, condition by condition.
    for name, pair in measured["metrics"].items():
        assert pair["one_pass"].keys() == pair["per_condition"].keys() >= {"acc", "loss"}, name
        for key, value in pair["one_pass"].items():
            assert value == pytest.approx(pair["per_condition"][key], abs=1e-6), (name, key)
    assert measured["max_abs_difference"] <= 1e-6
    # Conditions that differ do score differently (the comparison is not vacuous).
    assert len({pair["one_pass"]["loss"] for pair in measured["metrics"].values()}) > 2
    written = json.loads((tmp_path / "bench" / "bench.json").read_text())
    assert written["suites"]["robustness"]["speedup"] == measured["speedup"]
    # The one-pass side wrote its robustness.json to a scratch folder, not the bench's.
    assert not list((tmp_path / "bench").rglob(ROBUSTNESS_FILE))


def test_a_given_checkpoint_is_scored_and_noise_grids_are_refused(tmp_path, data_dir):
    cfg = compose_config("bench", SMALL, tmp_path / "b", data_dir)
    checkpoint, _ = train_checkpoint(cfg, 1, tmp_path / "run")
    given = [f"bench.robustness.ckpt_path={checkpoint}", "robustness=missing_cases"]
    results = bench(tmp_path / "c", data_dir, *given, "robustness.missing_rates=[1.0]")
    measured = results["suites"]["robustness"]
    assert measured["checkpoint"] == checkpoint and measured["trained"] is None
    assert measured["grid"] == "missing_cases"  # robustness=<grid> wins over bench.robustness.grid
    assert list(measured["metrics"]) == [
        "clean",
        "subset:image",
        "subset:text",
        "missing:text@1",
        "missing:image@1",
        "missing:both@1",
    ]
    assert measured["max_abs_difference"] <= 1e-6
    with pytest.raises(ValueError, match="noise conditions"):
        bench(tmp_path / "d", data_dir, given[0], "robustness=noise")
    with pytest.raises(ValueError, match="unknown grid 'nope'"):
        bench(tmp_path / "e", data_dir, "bench.robustness.grid=nope")


def test_grid_names_load_as_composed(tmp_path, data_dir):
    for name in ("missing", "missing_cases"):
        composed = compose_config("train", [f"robustness={name}"], tmp_path / name, data_dir)
        assert grid_node(name) == composed.robustness
