"""Feature-cache speedup: a frozen-encoder fusion ablation with and without the cache.

The same ablation (one training run per fusion strategy, through ``mmexp-train``'s own
``train``) runs twice in one process: once computing the frozen encoders in every step,
once with ``feature_cache.enabled=true`` starting from an empty cache directory, so the
cached side pays for building the cache in its first run. The ratio of the two total
times is the speedup a researcher sees on the whole ablation.
"""

from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from mmexp import CONFIG_DIR


def fusion_node(name: str) -> DictConfig:
    """The ``fusion`` config of ``conf/fusion/<name>.yaml``.

    Raises:
        ValueError: No such strategy config (listing the known ones).
    """
    path = Path(CONFIG_DIR) / "fusion" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ValueError(
            f"bench.feature_cache.strategies: unknown fusion {name!r}; choose from {known}"
        )
    return OmegaConf.load(path)  # type: ignore[return-value]


def ablation_job(
    cfg: DictConfig, strategy: str, cached: bool, cache_dir: Path, run_dir: Path
) -> DictConfig:
    """One job of the ablation: ``cfg`` with another fusion and the cache switched."""
    job = copy.deepcopy(cfg)
    with open_dict(job):
        job.fusion = fusion_node(strategy)
        job.feature_cache.enabled = cached
        job.feature_cache.dir = str(cache_dir)
        job.paths.output_dir = str(run_dir)
        # Local CSV files, as every run writes them (no W&B run per benchmark job).
        job.logger = OmegaConf.load(Path(CONFIG_DIR) / "logger" / "csv.yaml")
        job.test = True
    return job


def cache_speedup(cfg: DictConfig, strategies: Sequence[str]) -> dict[str, Any]:
    """Run the ablation without, then with the feature cache; times, metrics, ratio.

    Args:
        cfg: The composed config: frozen encoders, data, trainer (epochs) as for a run.
        strategies: Fusion config names, one training run each per side.
    """
    from mmexp.train import train  # the entry point's own training function

    for name in strategies:
        fusion_node(name)  # unknown names fail before anything runs
    monitor = str(cfg.monitor)
    sides: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        for side, cached in (("without_cache", False), ("with_cache", True)):
            runs = []
            start = time.perf_counter()
            for strategy in strategies:
                job = ablation_job(cfg, strategy, cached, root / "cache", root / side / strategy)
                begun = time.perf_counter()
                result = train(job)
                runs.append(
                    {
                        "fusion": strategy,
                        "seconds": time.perf_counter() - begun,
                        monitor: result["metrics"].get(monitor),
                        "test": {
                            k: v for k, v in result["metrics"].items() if k.startswith("test/")
                        },
                    }
                )
            sides[side] = {"seconds": time.perf_counter() - start, "runs": runs}
    return {
        "strategies": list(strategies),
        "epochs": int(cfg.trainer.max_epochs),
        "monitor": monitor,
        **sides,
        "speedup": sides["without_cache"]["seconds"] / sides["with_cache"]["seconds"],
    }
