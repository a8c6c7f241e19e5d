"""mmexp-bench: both loops train the same model, ratios and loader rates are written."""

import json

import pytest

from mmexp.bench.cli import run_bench
from tests.helpers.cli import run_cli
from tests.helpers.configs import compose_config
from tests.helpers.frozen_towers import FROZEN_TOWERS

SMALL = [
    "data.num_train=128",
    "data.num_val=32",
    "data.num_test=32",
    "data.batch_size=16",
    "trainer.accelerator=cpu",
    "bench.throughput.warmup_steps=2",
    "bench.throughput.steps=4",
    "bench.throughput.repeats=1",
    "bench.throughput.distinct_batches=3",
]


def bench(tmp_path, data_dir, *overrides):
    cfg = compose_config("bench", [*SMALL, *overrides], tmp_path / "bench", data_dir)
    return run_bench(cfg)


@pytest.mark.parametrize("objective", ["classify", "contrastive"])
def test_both_loops_train_the_same_model_to_the_same_loss(tmp_path, data_dir, objective):
    results = bench(tmp_path, data_dir, f"objective={objective}", "bench.suites=[throughput]")
    measured = results["suites"]["throughput"]
    plain, mmexp = measured["plain"], measured["mmexp"]
    # Same weights, batches, dropout masks, optimizer and schedule: the last loss agrees,
    # which is what makes the ratio a measure of the framework alone.
    assert mmexp["final_loss"] == pytest.approx(plain["final_loss"], rel=1e-5)
    assert measured["ratio"] == pytest.approx(mmexp["samples_per_s"] / plain["samples_per_s"])
    assert measured["flops_per_step"] > 0
    assert measured["peak_flops"] is None and mmexp["mfu"] is None  # no known peak on CPUs
    written = json.loads((tmp_path / "bench" / "bench.json").read_text())
    assert written["suites"]["throughput"]["ratio"] == measured["ratio"]
    assert written["device"].startswith("cpu") and written["git"]["sha"]


def test_throughput_on_cached_features_trains_the_same_fusion_and_head(
    tmp_path, data_dir, bert_dir, vit_weights
):
    towers = [o for o in FROZEN_TOWERS if not o.startswith(("data.", "trainer."))]
    results = bench(
        tmp_path,
        data_dir,
        *towers,
        f"model.encoders.text.name_or_path={bert_dir}",
        f"model.encoders.image.checkpoint_path={vit_weights}",
        "feature_cache.enabled=true",
        f"feature_cache.dir={tmp_path / 'cache'}",
        "bench.suites=[throughput]",
        "bench.throughput.repeats=2",
    )
    measured = results["suites"]["throughput"]
    assert measured["feature_cache"] is True
    # The cache was built for the run: both loops read stored tower outputs.
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "cache").iterdir()) == [
        "image",
        "image",
        "image",
        "text",
        "text",
        "text",
    ]
    plain, mmexp = measured["plain"], measured["mmexp"]
    assert mmexp["final_loss"] == pytest.approx(plain["final_loss"], rel=1e-5)
    # One ratio per alternating repeat; the reported ratio is the ratio of the medians.
    assert measured["ratio_per_repeat"] == pytest.approx(
        [m / p for m, p in zip(mmexp["repeats"], plain["repeats"], strict=True)]
    )


def test_loader_rates_per_worker_count(tmp_path, data_dir):
    results = bench(
        tmp_path,
        data_dir,
        "bench.suites=[loading]",
        "bench.loading.workers=[0,2]",
        "bench.loading.batches=3",
    )
    rows = results["suites"]["loading"]["rows"]
    assert [row["workers"] for row in rows] == [0, 2]
    assert all(row["samples"] == 3 * 16 and row["samples_per_s"] > 0 for row in rows)
    assert rows[0]["speedup"] == 1.0
    assert rows[1]["samples_per_s_per_worker"] == pytest.approx(rows[1]["samples_per_s"] / 2)


def test_unknown_suite_and_unreproducible_precision_are_refused(tmp_path, data_dir):
    with pytest.raises(ValueError, match=r"bench.suites: unknown \['speed'\]"):
        bench(tmp_path, data_dir, "bench.suites=[speed]")
    with pytest.raises(ValueError, match="trainer.precision='bf16-true' is not benchmarked"):
        bench(tmp_path, data_dir, "bench.suites=[throughput]", "trainer.precision=bf16-true")


@pytest.mark.slow
def test_console_script_prints_the_ratio(tmp_path, data_dir):
    out = run_cli(
        "bench.cli",
        *SMALL,
        "bench.loading.workers=[0]",
        "bench.loading.batches=2",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
        env={"WANDB_MODE": "disabled", "MMEXP_DATA_DIR": str(data_dir)},
    )
    assert "mmexp / plain" in out.stdout and "training loader" in out.stdout
    assert (tmp_path / "run" / "bench.json").is_file()
