"""scripts/gpu_figures.sh: its GPU runs compose, its report, its towers, its CPU mode."""

import json
import subprocess
from pathlib import Path

import pytest
import torch

from mmexp.encoders.hf_text import HFTextEncoder
from scripts.gpu_figures_report import RATIO_STEPS, STEPS, collect, markdown
from scripts.gpu_figures_towers import SIZES_BY_NAME, vocabulary, write_tower
from tests.helpers.cli import REPO, cli_env
from tests.helpers.configs import compose_config

SCRIPT = REPO / "scripts" / "gpu_figures.sh"


def step_commands(env=None) -> dict[str, tuple[int, list[str]]]:
    """``{step: (time limit, overrides)}`` as ``gpu_figures.sh --commands`` prints them."""
    done = subprocess.run(
        ["bash", str(SCRIPT), "--commands"],
        capture_output=True,
        text=True,
        check=True,
        env=cli_env(env),
    )
    rows = [line.split("\t") for line in done.stdout.splitlines()]
    return {name: (int(limit), overrides) for name, limit, *overrides in rows}


def test_gpu_steps_compose_to_the_runs_they_name(tmp_path, data_dir):
    steps = step_commands({"GPU_FIGURES_WORK": str(tmp_path / "work")})
    assert list(steps) == list(STEPS)
    # every step's own limit fits the 8 minutes, setup left aside
    assert sum(limit for limit, _ in steps.values()) < 8 * 60
    cfgs = {
        name: compose_config("bench", overrides, tmp_path / name, data_dir)
        for name, (_, overrides) in steps.items()
    }
    for name, cfg in cfgs.items():
        assert cfg.trainer.accelerator == "gpu" and cfg.trainer.precision == "bf16-mixed", name
        if name in RATIO_STEPS or name == "dual_encoder":
            # mmexp-bench prefetches distinct_batches full batches of the training split
            needed = cfg.data.batch_size * cfg.bench.throughput.distinct_batches
            assert cfg.data.num_train >= needed, name
    assert cfgs["throughput_batch2"].data.batch_size == 2
    dual = cfgs["dual_encoder"]
    assert dual.objective.module._target_.endswith("ContrastivePretrainer")
    assert dual.model.encoders.image.name == "vit_base_patch16_224"
    assert dual.model.encoders.image.pretrained is False
    assert dual.model.encoders.text.name_or_path == str(tmp_path / "work" / "towers" / "base")
    assert dual.model.compile is True and dual.data.batch_size == 256
    for name in ("throughput_frozen", "cache_speedup"):
        encoders = cfgs[name].model.encoders
        assert encoders.image.name == "vit_small_patch16_224" and not encoders.image.pretrained
        assert encoders.image.freeze == encoders.text.freeze == "frozen"
        assert encoders.text.name_or_path.endswith("towers/minilm")
    assert cfgs["throughput_frozen"].feature_cache.enabled is True
    assert len(cfgs["cache_speedup"].bench.feature_cache.strategies) >= 2


def test_cpu_mode_commands_are_tiny(tmp_path):
    steps = step_commands({"GPU_FIGURES_CPU": "1", "GPU_FIGURES_WORK": str(tmp_path)})
    for name, (_, overrides) in steps.items():
        assert "trainer=cpu" in overrides and "model.compile=true" not in overrides, name
    assert "model.encoders.image.name=vit_tiny_patch16_224" in steps["dual_encoder"][1]


def measured(ratio_repeats, plain_repeats, steps=10, batch=4, mfu=None):
    """A throughput suite as mmexp-bench writes it, from each loop's samples/s per repeat."""
    rates = {"mmexp": ratio_repeats, "plain": plain_repeats}
    rows = {
        name: {
            "name": name,
            "samples_per_s": sorted(rate)[len(rate) // 2],
            "step_ms": 1000 * batch / sorted(rate)[len(rate) // 2],
            "peak_memory_mib": 512.0,
            "final_loss": 0.5,
            "repeats": rate,
            "mfu": mfu,
        }
        for name, rate in rates.items()
    }
    return {
        "precision": "bf16-mixed",
        "batch_size": batch,
        "steps": steps,
        "warmup_steps": 2,
        "repeats": len(ratio_repeats),
        "flops_per_step": 10**9,
        "peak_flops": 989e12,
        "speed_options": {"compile": mfu is not None},
        **rows,
        "ratio": rows["mmexp"]["samples_per_s"] / rows["plain"]["samples_per_s"],
    }


def write_bench(work: Path, step: str, suite: str, data: dict) -> None:
    folder = work / step
    folder.mkdir(parents=True)
    bench = {
        "date": "2026-12-01",
        "device": "NVIDIA H200",
        "command": f"mmexp-bench trainer=gpu x={work}/towers/base hydra.run.dir={folder} "
        f"bench.output={folder}/bench.json",
        "git": {"sha": "0" * 40},
        "packages": {"torch": "2.11.0"},
        "suites": {suite: data},
    }
    (folder / "bench.json").write_text(json.dumps(bench))


def test_report_reads_steps_judges_goals_and_names_failures(tmp_path):
    work = tmp_path / "work"
    write_bench(work, "throughput_default", "throughput", measured([98.0, 99.0, 97.0], [100.0] * 3))
    write_bench(work, "dual_encoder", "throughput", measured([50.0], [51.0], mfu=0.31))
    runs = [{"fusion": f, "seconds": 1.0, "val/acc": acc} for f, acc in (("a", 0.5), ("b", 0.7))]
    cached = [
        dict(run, **{"val/acc": run["val/acc"] + d})
        for run, d in zip(runs, (0.0, 0.25), strict=True)
    ]
    cache = {
        "strategies": ["a", "b"],
        "epochs": 2,
        "monitor": "val/acc",
        "without_cache": {"seconds": 30.0, "runs": runs},
        "with_cache": {"seconds": 6.0, "runs": cached},
        "speedup": 5.0,
    }
    write_bench(work, "cache_speedup", "feature_cache", cache)
    (work / "steps.tsv").write_text(
        "throughput_default\tok\t0\t20\t50\nthroughput_batch2\ttimeout\t124\t40\t40\n"
        "throughput_frozen\tfailed\t1\t3\t50\ndual_encoder\tok\t0\t90\t160\n"
        "cache_speedup\tok\t0\t70\t120\n"
    )
    results = collect(work, "gpu", frozen_cache=tmp_path / "never_built")
    default = results["figures"]["throughput_default"]
    assert default["ratio_per_repeat"] == pytest.approx([0.98, 0.99, 0.97])
    assert default["ratio"] == pytest.approx(0.98)
    assert default["overhead_ms_per_step"] == pytest.approx(1000 * 4 / 98 - 1000 * 4 / 100)
    assert results["figures"]["cache_speedup"]["max_metric_difference"] == pytest.approx(0.25)
    assert results["steps"]["throughput_batch2"]["status"] == "timeout"
    assert results["total_s"] == 20 + 40 + 3 + 90 + 70
    goals = results["goals"]
    assert goals["throughput_default.ratio>=0.97"]["met"] is True
    assert goals["dual_encoder.mfu>=0.4"] == {"value": 0.31, "goal": 0.4, "met": False}
    assert goals["throughput_batch2.ratio>=0.97"]["met"] is None  # not measured
    block = markdown(results)
    assert "timeout (`logs/throughput_batch2.log`)" in block
    assert "failed (`logs/throughput_frozen.log`)" in block
    assert "**0.980x** (0.970-0.990, 3 repeats)" in block and "**5.0x**" in block
    assert "mmexp-bench trainer=gpu x=<work>/towers/base\n" in block  # no placement options
    assert collect(work, "cpu", None)["goals"]["throughput_default.ratio>=0.97"]["met"] is None


def test_text_towers_have_the_published_sizes_and_read_captions(tmp_path):
    # bert-base-uncased and all-MiniLM-L6-v2 as published: 109,482,240 and 22,713,216
    from transformers import BertConfig, BertModel

    for size, params in (("base", 109_482_240), ("minilm", 22_713_216)):
        with torch.device("meta"):
            model = BertModel(BertConfig(**SIZES_BY_NAME[size]))
        assert sum(p.numel() for p in model.parameters()) == params, size
    words = vocabulary(30522)
    assert len(words) == len(set(words)) == 30522
    folder = write_tower("tiny", tmp_path / "tiny")
    encoder = HFTextEncoder(out_dim=8, name_or_path=str(folder))  # the hub-name loading path
    tokens = encoder.tokenizer.tokenize("a small red circle at the top left")
    assert tokens == ["a", "small", "red", "circle", "at", "the", "top", "left"]  # no [UNK]
    with pytest.raises(ValueError, match="choose from"):
        write_tower("huge", tmp_path / "huge")


@pytest.mark.slow
def test_cpu_mode_runs_every_step_into_one_json_and_markdown(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    done = subprocess.run(
        ["bash", str(SCRIPT), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=900,
        env=cli_env({"OUT": str(out), "GPU_FIGURES_WORK": str(work), "PYTHONPATH": None}),
    )
    assert done.returncode == 0, done.stdout[-3000:]
    results = json.loads((out / "gpu_figures.json").read_text())
    assert results["mode"] == "cpu" and results["device"].startswith("cpu")
    assert results["torch"] == torch.__version__ and "cuda" in results and results["date"]
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True)
    assert results["git"]["sha"] == head.stdout.decode().strip()
    assert {name: step["status"] for name, step in results["steps"].items()} == dict.fromkeys(
        STEPS, "ok"
    )
    for name, (_, suite) in STEPS.items():
        written = json.loads((work / name / "bench.json").read_text())
        assert results["bench"][name] == written
        if suite == "throughput":
            assert results["figures"][name]["ratio"] == written["suites"][suite]["ratio"]
    cache = results["figures"]["cache_speedup"]
    assert cache["speedup"] == pytest.approx(
        cache["seconds_without_cache"] / cache["seconds_with_cache"]
    )
    assert cache["max_metric_difference"] == 0  # the cache changes nothing learnt
    assert all(goal["met"] is None for goal in results["goals"].values())
    block = (out / "gpu_figures.md").read_text()
    assert block.strip() in done.stdout  # printed too
    for name in RATIO_STEPS:
        assert f"| {name} |" in block
    commands = block.split("```bash\n")[1].split("```")[0].splitlines()
    assert len(commands) == len(STEPS)
    assert all(
        c.startswith("mmexp-bench trainer=cpu") and "hydra.run.dir" not in c for c in commands
    )
    # what the device tool brings back: 8 files at most
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == sorted(
        ["gpu_figures.json", "gpu_figures.md", "logs/setup.log"]
        + [f"logs/{name}.log" for name in STEPS]
    )
