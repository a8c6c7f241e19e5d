"""``mmexp-train``: fit and test a model on the composed config.

Examples:
    mmexp-train                                    # embedded default (shapes, image+text)
    mmexp-train data.task=redundant seed=3
    mmexp-train experiment=shapes_synergy trainer.max_epochs=20
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig
from pytorch_lightning.utilities import rank_zero_only

from mmexp import CONFIG_DIR
from mmexp.assemble import assemble
from mmexp.fit import (
    fit_and_test,
    log_run_config,
    recorded,
    save_resolved_config,
)
from mmexp.lit.lightning_compat import close_experiments
from mmexp.resolve import resolve_run_config
from mmexp.search.pruning import pruned_epoch
from mmexp.tracking.run_record import RunRecord
from mmexp.tracking.sweep_jobs import run_job
from mmexp.utils.instantiate import build_trainer
from mmexp.utils.quiet import silence_known_noise
from mmexp.utils.resolvers import register_resolvers
from mmexp.utils.summary import print_summary


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit, then test the best checkpoint; always leave a run record.

    Args:
        cfg: The composed config (``conf/train.yaml``).

    Returns:
        The run record (``results.json`` contents) with the final metrics.
    """
    output_dir = Path(cfg.paths.output_dir)
    record = RunRecord(output_dir, cfg.task_name, cfg.get("seed"), list(cfg.get("tags") or []))
    metrics: dict[str, Any] = {}
    trainer = None
    try:
        with recorded(record, metrics):
            resolved = cfg  # saved as given if it is refused
            try:
                resolved = resolve_run_config(cfg, "train")
            finally:  # once: what the run is built from
                save_resolved_config(resolved, output_dir)
            run = assemble(resolved, report=record.payload)
            trainer = build_trainer(resolved)
            log_run_config(trainer, resolved, record)
            outcome = fit_and_test(trainer, run, metrics)
            if rank_zero_only.rank != 0:
                return {"metrics": metrics}
            pruned = pruned_epoch(trainer)
            if pruned is None:
                result = record.finish(metrics, **outcome)
            else:
                result = record.prune(metrics, pruned, **outcome)
    finally:  # after the record is written: closing W&B may take a while, or fail
        close_experiments(trainer)
    print_summary(
        f"mmexp {cfg.task_name}: final metrics",
        result["metrics"],
        {"run folder": output_dir, "best checkpoint": outcome["best_checkpoint"] or "-"},
    )
    return result


register_resolvers()


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | list[float | None] | None:
    """Console entry point; returns the optimized metric(s) for Hydra sweepers."""
    silence_known_noise()
    return run_job(cfg, train, resolve=lambda composed: resolve_run_config(composed, "train"))


if __name__ == "__main__":
    main()
