"""``mmexp-eval``: test a checkpoint on the test split of the data it was trained on.

The checkpoint carries the resolved config of its run, so the model and data are rebuilt
from it; ``overrides`` changes parts of that config (e.g. the batch size or a data root).

With ``analysis=[contribution,emap,pid]`` the analyses of :mod:`mmexp.analysis` also run
and write ``analysis.json`` in the checkpoint's run folder. With ``robustness=<grid>`` the
checkpoint is scored under every condition of the grid
(modalities missing, perturbed) instead, and ``robustness.json`` / ``.csv`` are written in
the checkpoint's run folder (:mod:`mmexp.robustness`).

Examples:
    mmexp-eval ckpt_path=outputs/train/runs/<date>/checkpoints/last.ckpt
    mmexp-eval ckpt_path=... 'overrides=["data.eval_batch_size=256"]'
    mmexp-eval ckpt_path=... robustness=missing
    mmexp-eval ckpt_path=... 'analysis=[contribution,emap,pid]'
    mmexp-eval ckpt_path=outputs/train/multiruns/<date> robustness=missing   # every run
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig
from pytorch_lightning.utilities import rank_zero_only

from mmexp import CONFIG_DIR
from mmexp.analysis.run import check_configured, run_configured
from mmexp.assemble import assemble
from mmexp.eval_runs import evaluate_each
from mmexp.fit import recorded, save_resolved_config
from mmexp.resolve import EVAL_CHECKPOINT_KEY, resolve_run_config
from mmexp.robustness.evaluate import evaluate_robustness
from mmexp.robustness.keys import ROBUSTNESS_FILE
from mmexp.tracking.run_record import RESULTS_FILE, RunRecord
from mmexp.utils.instantiate import build_test_trainer, build_trainer
from mmexp.utils.quiet import silence_known_noise
from mmexp.utils.resolvers import register_resolvers
from mmexp.utils.summary import print_summary

#: The resolved config of the evaluated run, in the eval folder.
EVALUATED_RUN_CONFIG = "run_config.yaml"


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Rebuild the run's model and data from a checkpoint and test it.

    Args:
        cfg: The composed config (``conf/eval.yaml``).

    Returns:
        The eval run record with the test metrics.
    """
    output_dir = Path(cfg.paths.output_dir)
    record = RunRecord(output_dir, cfg.task_name, None, list(cfg.get("tags") or []))
    metrics: dict[str, Any] = {}
    with recorded(record, metrics):
        run_cfg = resolve_run_config(cfg, "eval")
        # The run as rebuilt, overrides applied; not config.yaml, which would make this
        # folder read as another training run with that run's axes (mmexp-table).
        save_resolved_config(run_cfg, output_dir, EVALUATED_RUN_CONFIG)
        run = assemble(run_cfg, "eval")
        # Analyses that cannot run on this checkpoint are named before the test.
        check_configured(cfg, run.module)
        trainer = build_trainer(cfg)  # the eval config's trainer, callbacks and logger
        extra: dict[str, Any] = {}
        if cfg.get("robustness"):
            extra["robustness"] = score_robustness(cfg, run_cfg, run, trainer, metrics)
        else:
            # verbose=False: the figures are in mmexp's summary below, printed once
            trainer.test(run.module, datamodule=run.datamodule, verbose=False)
            metrics.update(trainer.callback_metrics)
        if cfg.get("analysis") and rank_zero_only.rank == 0:
            extra["analysis"] = run_configured(
                cfg,
                run.module,
                run.datamodule,
                run_folder(run_cfg, Path(cfg.paths.output_dir)),
                str(run_cfg[EVAL_CHECKPOINT_KEY]),
                trainer.loggers,
            )
        if rank_zero_only.rank != 0:
            return {"metrics": metrics}
        result = record.finish(
            metrics,
            checkpoint=run_cfg[EVAL_CHECKPOINT_KEY],
            source_run=run_cfg.paths.get("output_dir"),
            **extra,
        )
    print_summary(
        "mmexp eval: test metrics",
        result["metrics"],
        {"checkpoint": cfg.ckpt_path, "eval folder": output_dir},
    )
    return result


def run_folder(run_cfg: DictConfig, fallback: Path) -> Path:
    """The evaluated checkpoint's run folder (holding its ``results.json``), else ``fallback``.

    Robustness and analysis results go there, so that ``mmexp-table`` finds them beside the
    run's own.
    """
    checkpoint = Path(run_cfg[EVAL_CHECKPOINT_KEY]).resolve()
    for folder in (checkpoint.parent.parent, Path(run_cfg.paths.get("output_dir") or "")):
        if (folder / RESULTS_FILE).is_file():
            return folder
    return fallback


def robustness_folder(cfg: DictConfig, run_cfg: DictConfig) -> Path:
    """Where ``robustness.json`` goes: ``robustness.output_dir``, else the checkpoint's run."""
    chosen = cfg.robustness.get("output_dir")
    return Path(chosen) if chosen else run_folder(run_cfg, Path(cfg.paths.output_dir))


def score_robustness(
    cfg: DictConfig, run_cfg: DictConfig, run: Any, trainer: Any, metrics: dict[str, Any]
) -> dict[str, Any]:
    """Score the checkpoint under ``cfg.robustness``; the clean condition's metrics as test's."""
    folder = robustness_folder(cfg, run_cfg)
    payload = evaluate_robustness(
        run,
        cfg.robustness,
        folder,
        str(run_cfg[EVAL_CHECKPOINT_KEY]),
        lambda: build_test_trainer(cfg),
        trainer.loggers,
    )
    clean = payload.get("conditions", {}).get("clean", {}).get("metrics", {})
    metrics.update({f"test/{key}": value for key, value in clean.items()})
    return {"file": str(folder / ROBUSTNESS_FILE), "conditions": len(payload.get("conditions", {}))}


register_resolvers()


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def main(cfg: DictConfig) -> None:
    """Console entry point: one checkpoint, or every run below a folder."""
    silence_known_noise()
    if Path(str(cfg.ckpt_path)).is_dir():
        records = evaluate_each(cfg, evaluate)
        if any(record.get("status") == "failed" for record in records):
            raise SystemExit(1)
        return
    evaluate(cfg)


if __name__ == "__main__":
    main()
