"""``mmexp-bench``: measure a config against baselines run in the same process.

Examples:
    mmexp-bench                                          # throughput + loading, default data
    mmexp-bench trainer=gpu model.compile=true bench.suites=[throughput]
    mmexp-bench 'bench.loading.workers=[0,2,4,8]' bench.suites=[loading]
    mmexp-bench bench.suites=[robustness] bench.robustness.ckpt_path=<run>/checkpoints/last.ckpt

Every figure is a ratio against a baseline measured in the same run (the plain PyTorch
loop, reading with zero workers), so results from different machines are comparable as
ratios and the absolute numbers carry their device and date with them.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from mmexp import CONFIG_DIR
from mmexp.assemble import assemble
from mmexp.bench.cache_speedup import cache_speedup
from mmexp.bench.loading import loading_throughput
from mmexp.bench.throughput import ThroughputBenchmark, prefetch
from mmexp.bench.timing import device_name
from mmexp.data.feature_cache import with_feature_cache
from mmexp.resolve import resolve_run_config
from mmexp.tracking.environment import git_state, package_versions
from mmexp.utils.quiet import silence_known_noise
from mmexp.utils.resolvers import register_resolvers

log = logging.getLogger(__name__)
SUITES = ("throughput", "loading", "feature_cache", "robustness")


def bench_device(cfg: DictConfig) -> torch.device:
    """The device ``trainer.accelerator`` selects (``auto``: a GPU when there is one)."""
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("trainer.accelerator=gpu but no CUDA device is visible")
        return torch.device("cuda", 0)
    return torch.device("cpu")


def run_bench(cfg: DictConfig) -> dict[str, Any]:
    """Run the suites in ``bench.suites``; write and return the results.

    Raises:
        ValueError: An unknown suite name (listing the known ones).
    """
    suites = list(cfg.bench.suites)
    unknown = sorted(set(suites) - set(SUITES))
    if unknown:
        raise ValueError(f"bench.suites: unknown {unknown}; choose from {list(SUITES)}")
    device = bench_device(cfg)
    cfg = resolve_run_config(cfg, "bench")
    run = assemble(cfg, "bench")
    datamodule, module = run.datamodule, run.module
    results: dict[str, Any] = {
        "date": dt.date.today().isoformat(),
        "device": device_name(device),
        "command": " ".join(["mmexp-bench", *sys.argv[1:]]),
        "git": git_state(),
        "packages": package_versions(("torch", "pytorch-lightning", "timm", "transformers")),
        "suites": {},
    }
    if "throughput" in suites:
        options = cfg.bench.throughput
        # feature_cache.enabled: both loops train on the frozen towers' stored outputs (only
        # what follows them runs), as mmexp-train does; the entries are built here if missing.
        source = with_feature_cache(cfg, module, datamodule)
        source.setup("fit")
        batches = prefetch(source.train_dataloader(), int(options.distinct_batches), device)
        benchmark = ThroughputBenchmark(
            cfg, module, batches, device, int(options.warmup_steps), int(options.steps)
        )
        results["suites"]["throughput"] = {
            **benchmark.run(int(options.repeats)),
            "feature_cache": source is not datamodule,
        }
    if "loading" in suites:
        options = cfg.bench.loading
        results["suites"]["loading"] = loading_throughput(
            cfg, module, list(options.workers), int(options.batches), options.pin_memory
        )
    if "feature_cache" in suites:
        results["suites"]["feature_cache"] = cache_speedup(
            cfg, list(cfg.bench.feature_cache.strategies)
        )
    if "robustness" in suites:
        # Imported here: the evaluation stack needs scipy and matplotlib, which the other
        # suites do not (a GPU machine may lack them; scripts/gpu_figures.sh).
        from mmexp.bench.robustness_speed import robustness_speed

        results["suites"]["robustness"] = robustness_speed(cfg, cfg.bench.robustness)
    output = Path(cfg.bench.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    print_results(results, output)
    return results


def print_results(results: dict[str, Any], output: Path) -> None:
    """Tables of the measured suites, ratios last."""
    console = Console()
    suites = results["suites"]
    if "throughput" in suites:
        data = suites["throughput"]
        cached = ", cached features" if data.get("feature_cache") else ""
        table = Table(
            title=f"training throughput on {results['device']} "
            f"({data['precision']}, batch {data['batch_size']}{cached})",
            title_justify="left",
        )
        for column in ("loop", "samples/s", "ms/step", "peak MiB", "MFU", "last loss"):
            table.add_column(column, justify="right")
        for name in ("plain", "mmexp"):
            row = data[name]
            memory = row["peak_memory_mib"]
            table.add_row(
                name,
                f"{row['samples_per_s']:.1f}",
                f"{row['step_ms']:.2f}",
                "-" if memory is None else f"{memory:.0f}",
                "-" if row["mfu"] is None else f"{100 * row['mfu']:.1f}%",
                f"{row['final_loss']:.5f}",
            )
        console.print(table)
        spread = data["ratio_per_repeat"]
        console.print(
            f"[bold]mmexp / plain[/bold]: {data['ratio']:.3f}x (median of {len(spread)} "
            f"alternating repeats; per repeat {min(spread):.3f}-{max(spread):.3f})"
        )
    if "loading" in suites:
        data = suites["loading"]
        table = Table(title=f"training loader, batch {data['batch_size']}", title_justify="left")
        for column in ("workers", "samples/s", "per worker", "first batch s", "speedup"):
            table.add_column(column, justify="right")
        for row in data["rows"]:
            table.add_row(
                str(row["workers"]),
                f"{row['samples_per_s']:.1f}",
                f"{row['samples_per_s_per_worker']:.1f}",
                f"{row['first_batch_s']:.2f}",
                f"{row['speedup']:.2f}x",
            )
        console.print(table)
        if "throughput" in suites:
            _warn_if_starved(console, suites)
    if "feature_cache" in suites:
        _print_cache_speedup(console, suites["feature_cache"])
    if "robustness" in suites:
        _print_robustness_speed(console, suites["robustness"])
    console.print(f"[bold]results[/bold]: {output}")


def _print_cache_speedup(console: Console, data: dict[str, Any]) -> None:
    monitor = data["monitor"]
    table = Table(
        title=f"frozen-encoder ablation, {len(data['strategies'])} strategies x "
        f"{data['epochs']} epochs",
        title_justify="left",
    )
    for column in ("fusion", "s without", "s with", f"{monitor} without", f"{monitor} with"):
        table.add_column(column, justify="right")
    for plain, cached in zip(
        data["without_cache"]["runs"], data["with_cache"]["runs"], strict=True
    ):
        table.add_row(
            plain["fusion"],
            f"{plain['seconds']:.1f}",
            f"{cached['seconds']:.1f}",
            _number(plain[monitor]),
            _number(cached[monitor]),
        )
    table.add_row(
        "total",
        f"{data['without_cache']['seconds']:.1f}",
        f"{data['with_cache']['seconds']:.1f}",
        "",
        "",
    )
    console.print(table)
    console.print(f"[bold]feature cache speedup[/bold]: {data['speedup']:.1f}x")


def _print_robustness_speed(console: Console, data: dict[str, Any]) -> None:
    table = Table(
        title=f"robustness grid {data['grid']}: {data['conditions']} conditions, "
        f"{data['test_samples']} test samples, {'+'.join(data['modalities'])}",
        title_justify="left",
    )
    for column in ("way", "test passes", "seconds"):
        table.add_column(column, justify="right")
    table.add_row("one pass (probe)", "1", f"{data['one_pass']['seconds']:.2f}")
    table.add_row(
        "one pass per condition",
        str(data["per_condition"]["passes"]),
        f"{data['per_condition']['seconds']:.2f}",
    )
    console.print(table)
    console.print(
        f"[bold]one-pass speedup[/bold]: {data['speedup']:.1f}x (largest metric difference "
        f"{data['max_abs_difference']:.2g})"
    )


def _number(value: Any) -> str:
    return "-" if value is None else f"{float(value):.4f}"


def _warn_if_starved(console: Console, suites: dict[str, Any]) -> None:
    # A loader slower than the training step leaves the device idle between steps.
    consumed = suites["throughput"]["mmexp"]["samples_per_s"]
    fastest = max(suites["loading"]["rows"], key=lambda row: row["samples_per_s"])
    if fastest["samples_per_s"] < consumed:
        console.print(
            f"[yellow]the loader delivers at most {fastest['samples_per_s']:.0f} "
            f"samples/s ({fastest['workers']} workers) but training consumes "
            f"{consumed:.0f}: training will wait on data[/yellow]"
        )


register_resolvers()


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="bench")
def main(cfg: DictConfig) -> None:
    """Console entry point."""
    silence_known_noise()
    log.debug("config:\n%s", OmegaConf.to_yaml(cfg))
    run_bench(cfg)


if __name__ == "__main__":
    main()
