"""Collect the steps of ``scripts/gpu_figures.sh`` into one JSON and a Markdown block.

Each step of the script is an ``mmexp-bench`` run that wrote its own ``bench.json`` under
``<work>/<step>/``; the script records each step's exit status and time in
``<work>/steps.tsv``. This reads both and writes ``gpu_figures.json`` (the environment,
every figure, the goals of the speed work, each step's status and its whole ``bench.json``)
and ``gpu_figures.md`` (a block ready to paste into ``docs/benchmarks.md``).

    python scripts/gpu_figures_report.py --work /tmp/mmexp_gpu_figures --out "$OUT" --mode gpu
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# Goals of the speed work on a GPU: the framework costs at most 3 % of the plain loop's
# throughput, and the bf16 dual encoder reaches 40 % of the device's dense bf16 peak.
RATIO_GOAL, MFU_GOAL = 0.97, 0.40
# step name -> (what it measures, the suite of its bench.json); the script's step order.
STEPS: dict[str, tuple[str, str]] = {
    "throughput_default": ("default config (shapes, CNN + byte transformer)", "throughput"),
    "throughput_batch2": ("default config at batch 2 (framework cost alone)", "throughput"),
    "throughput_frozen": ("frozen ViT-S/16 + MiniLM-size towers, fusion + head", "throughput"),
    "dual_encoder": ("ViT-B/16 + BERT-base dual encoder, contrastive", "throughput"),
    "cache_speedup": ("frozen-tower fusion ablation without / with the cache", "feature_cache"),
}
RATIO_STEPS = ("throughput_default", "throughput_batch2", "throughput_frozen")
# Options that only place a step's files; left out of the commands shown in the docs.
PLACEMENT = ("hydra.run.dir=", "bench.output=")


def read_steps(work: Path) -> dict[str, dict[str, Any]]:
    """Status, exit code, seconds and time limit of each step from ``steps.tsv``."""
    steps: dict[str, dict[str, Any]] = {}
    table = work / "steps.tsv"
    lines = table.read_text().splitlines() if table.is_file() else []
    for line in lines:
        name, status, rc, seconds, limit = line.split("\t")
        steps[name] = {
            "status": status,
            "rc": None if rc == "-" else int(rc),
            "seconds": float(seconds),
            "timeout_s": int(limit),
            "log": f"logs/{name}.log",
        }
    return steps


def throughput_figures(data: dict[str, Any]) -> dict[str, Any]:
    """The ratio and its spread over repeats, both loops' rates, memory and MFU."""
    mmexp, plain = data["mmexp"], data["plain"]
    per_repeat = [m / p for m, p in zip(mmexp["repeats"], plain["repeats"], strict=True)]
    return {
        "batch_size": data["batch_size"],
        "precision": data["precision"],
        "compile": bool(data["speed_options"].get("compile")),
        "steps": data["steps"],
        "repeats": data["repeats"],
        "ratio": data["ratio"],
        "ratio_per_repeat": per_repeat,
        # what the framework adds to each step, from the medians of both loops
        "overhead_ms_per_step": mmexp["step_ms"] - plain["step_ms"],
        "flops_per_step": data["flops_per_step"],
        **{
            f"{loop}_{key}": row[key]
            for loop, row in (("mmexp", mmexp), ("plain", plain))
            for key in ("samples_per_s", "step_ms", "peak_memory_mib", "mfu", "final_loss")
        },
    }


def cache_figures(data: dict[str, Any]) -> dict[str, Any]:
    """Speedup, both sides' seconds and the largest monitored-metric difference."""
    monitor = data["monitor"]
    pairs = zip(data["without_cache"]["runs"], data["with_cache"]["runs"], strict=True)
    gaps = [
        abs(a[monitor] - b[monitor])
        for a, b in pairs
        if a[monitor] is not None and b[monitor] is not None
    ]
    return {
        "strategies": data["strategies"],
        "epochs": data["epochs"],
        "monitor": monitor,
        "seconds_without_cache": data["without_cache"]["seconds"],
        "seconds_with_cache": data["with_cache"]["seconds"],
        "speedup": data["speedup"],
        "max_metric_difference": max(gaps) if gaps else None,
    }


def environment(benches: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Device, date, Python, torch, CUDA and the code's commit."""
    import torch

    from mmexp.tracking.environment import git_state

    git = git_state(REPO)
    if git["sha"] is None:  # a copy of the working tree without .git (the GPU machine)
        git = {"sha": os.environ.get("MMEXP_GIT_SHA"), "dirty": None, "branch": None}
    cuda = torch.cuda.is_available()
    devices = [bench["device"] for bench in benches.values()]
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(0) if cuda else (devices or ["cpu"])[0],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "git": git,
        "packages": next(iter(benches.values()))["packages"] if benches else {},
    }


def goals(figures: dict[str, Any], mode: str) -> dict[str, Any]:
    """Each goal's measured value and whether it is met (``None`` off a GPU or unmeasured)."""
    checks: dict[str, tuple[float | None, float]] = {}
    for name in RATIO_STEPS:
        checks[f"{name}.ratio>={RATIO_GOAL}"] = (figures.get(name, {}).get("ratio"), RATIO_GOAL)
    mfu = figures.get("dual_encoder", {}).get("mmexp_mfu")
    checks[f"dual_encoder.mfu>={MFU_GOAL}"] = (mfu, MFU_GOAL)
    return {
        key: {
            "value": value,
            "goal": goal,
            "met": None if mode != "gpu" or value is None else value >= goal,
        }
        for key, (value, goal) in checks.items()
    }


def collect(
    work: Path, mode: str, frozen_cache: Path | None, started: float | None = None
) -> dict[str, Any]:
    """Everything ``gpu_figures.json`` holds.

    Args:
        work: The script's work folder (``steps.tsv``, ``<step>/bench.json``).
        mode: ``gpu``, or ``cpu`` for the tiny plumbing check (goals are not judged).
        frozen_cache: The feature-cache folder the frozen-tower throughput step was given.
        started: The script's start (Unix seconds): the total covers setup too; else the
            sum of the steps.
    """
    steps = read_steps(work)
    benches: dict[str, dict[str, Any]] = {}
    figures: dict[str, Any] = {}
    for name, (_, suite) in STEPS.items():
        path = work / name / "bench.json"
        if not path.is_file():
            continue
        bench = json.loads(path.read_text())
        benches[name] = bench
        steps.setdefault(name, {"status": "unrecorded"})["command"] = shown_command(bench, work)
        data = bench["suites"][suite]
        figures[name] = throughput_figures(data) if suite == "throughput" else cache_figures(data)
    if "throughput_frozen" in figures:
        # mmexp-bench's throughput suite reads the feature cache only where it builds one
        cached = frozen_cache is not None and frozen_cache.is_dir() and any(frozen_cache.iterdir())
        figures["throughput_frozen"]["inputs"] = (
            "cached features" if cached else "raw inputs (the frozen towers run in every step)"
        )
    return {
        "mode": mode,
        **environment(benches),
        "total_s": (
            time.time() - started
            if started is not None
            else sum(step.get("seconds", 0.0) for step in steps.values())
        ),
        "steps": steps,
        "figures": figures,
        "goals": goals(figures, mode),
        "bench": benches,
    }


def shown_command(bench: dict[str, Any], work: Path) -> str:
    """A step's command as the docs show it.

    The options that only place the step's files are left out, and the work folder (where
    the script writes the text towers) reads ``<work>``.
    """
    words = bench["command"].replace(str(work), "<work>").split()
    return " ".join(w for w in words if not w.startswith(PLACEMENT))


def _ratio(row: dict[str, Any]) -> str:
    spread = row["ratio_per_repeat"]
    return f"**{row['ratio']:.3f}x** ({min(spread):.3f}-{max(spread):.3f}, {len(spread)} repeats)"


def _number(value: float | None, fmt: str, scale: float = 1.0) -> str:
    return "-" if value is None else format(value * scale, fmt)


def markdown(results: dict[str, Any]) -> str:
    """The block for ``docs/benchmarks.md``: environment, tables, goals, commands."""
    gpu = results["mode"] == "gpu"
    git = results["git"]
    title = "GPU figures" if gpu else "CPU check of scripts/gpu_figures.sh (tiny sizes, no figures)"
    lines = [
        f"### {results['date'][:10]}, {results['device']}, {title}",
        "",
        f"`bash scripts/gpu_figures.sh`, {results['total_s']:.0f} s in all; torch "
        f"{results['torch']}, CUDA {results['cuda']}, Python {results['python']}, commit "
        f"{(git['sha'] or 'unknown')[:10]}{' (uncommitted changes)' if git['dirty'] else ''}.",
        "",
        "| step | measures | batch | precision | mmexp samples/s | plain samples/s "
        "| ms/step mmexp / plain | peak MiB | MFU | mmexp / plain |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    figures, steps = results["figures"], results["steps"]
    for name, (what, suite) in STEPS.items():
        if suite != "throughput":
            continue
        row = figures.get(name)
        if row is None:
            status = steps.get(name, {}).get("status", "not run")
            lines.append(f"| {name} | {what} | | | | | | | | {status} (`logs/{name}.log`) |")
            continue
        compiled = ", compiled" if row["compile"] else ""
        lines.append(
            f"| {name} | {what} | {row['batch_size']} | {row['precision']}{compiled} "
            f"| {row['mmexp_samples_per_s']:.1f} | {row['plain_samples_per_s']:.1f} "
            f"| {row['mmexp_step_ms']:.2f} / {row['plain_step_ms']:.2f} "
            f"| {_number(row['mmexp_peak_memory_mib'], '.0f')} "
            f"| {_number(row['mmexp_mfu'], '.1f', 100)}{'%' if row['mmexp_mfu'] else ''} "
            f"| {_ratio(row)} |"
        )
    if "inputs" in figures.get("throughput_frozen", {}):
        lines += ["", f"throughput_frozen trained on {figures['throughput_frozen']['inputs']}."]
    cache = figures.get("cache_speedup")
    if cache is not None:
        lines += [
            "",
            f"Feature cache: {len(cache['strategies'])} strategies x {cache['epochs']} epochs, "
            f"{cache['seconds_without_cache']:.1f} s without, {cache['seconds_with_cache']:.1f} s "
            f"with (building included): **{cache['speedup']:.1f}x**, largest "
            f"{cache['monitor']} difference {_number(cache['max_metric_difference'], '.2g')}.",
        ]
    else:
        status = steps.get("cache_speedup", {}).get("status", "not run")
        lines += ["", f"Feature cache: {status} (`logs/cache_speedup.log`)."]
    lines += ["", "Goals:", ""]
    for key, goal in results["goals"].items():
        met = {True: "met", False: "not met", None: "not judged"}[goal["met"]]
        lines.append(f"- `{key}`: {_number(goal['value'], '.3f')} ({met})")
    lines += ["", "Commands (the script writes the text towers and picks the sizes):", ""]
    lines += ["```bash"]
    lines += [steps[name]["command"] for name in STEPS if "command" in steps.get(name, {})]
    lines += ["```", ""]
    return "\n".join(lines)


def main() -> None:
    """Command line: write ``gpu_figures.json`` and ``gpu_figures.md`` into ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--mode", choices=("gpu", "cpu"), required=True)
    parser.add_argument("--frozen-cache", type=Path, default=None)
    parser.add_argument("--started", type=float, default=None, help="Unix seconds")
    args = parser.parse_args()
    results = collect(args.work, args.mode, args.frozen_cache, args.started)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_figures.json").write_text(json.dumps(results, indent=2) + "\n")
    block = markdown(results)
    (args.out / "gpu_figures.md").write_text(block)
    print(block)


if __name__ == "__main__":
    main()
