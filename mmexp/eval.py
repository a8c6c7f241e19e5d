"""``mmexp-eval``: test a checkpoint on the test split of the data it was trained on.

The checkpoint carries the resolved config of its run, so the model and data are rebuilt
from it; ``overrides`` changes parts of that config (e.g. the batch size or a data root).

With ``analysis=[contribution,emap,pid]`` the analyses of :mod:`mmexp.analysis` also run
and write ``analysis.json`` in the checkpoint's run folder. With ``robustness=<grid>`` the
checkpoint is scored under every condition of the grid
(modalities missing, perturbed) instead, and ``robustness.json`` / ``.csv`` are written in
the checkpoint's run folder (:mod:`mmexp.robustness`). With ``zeroshot=classify|retrieval``
the image and text towers are scored zero-shot instead of the plain test, into
``zeroshot.json`` (:mod:`mmexp.zeroshot`); with ``wiseft=grid`` a checkpoint finetuned with
``init=zeroshot_head`` is scored as weight-space ensembles with its zero-shot model
(:mod:`mmexp.zeroshot.wiseft`).

With ``ckpt_path=null`` no checkpoint is read: the run groups of the eval config (``data``,
``model``, ``objective``, ``init`` ..., those of ``conf/train.yaml``) build the model, whose
towers keep their pretrained weights (or the seed's, from scratch), and results land in the
eval folder. With a checkpoint those groups come from it, and overriding them on the command
line is refused (``overrides=[...]`` changes the checkpoint's config).

Examples:
    mmexp-eval ckpt_path=outputs/train/runs/<date>/checkpoints/last.ckpt
    mmexp-eval ckpt_path=... 'overrides=["data.eval_batch_size=256"]'
    mmexp-eval ckpt_path=... robustness=missing
    mmexp-eval ckpt_path=... 'analysis=[contribution,emap,pid]'
    mmexp-eval ckpt_path=outputs/train/multiruns/<date> robustness=missing   # every run
    mmexp-eval ckpt_path=... zeroshot=classify
    mmexp-eval ckpt_path=<finetuned with init=zeroshot_head> wiseft=grid
    mmexp-eval ckpt_path=null objective=contrastive init=<public towers> zeroshot=classify
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from pytorch_lightning.utilities import rank_zero_only

from mmexp import CONFIG_DIR
from mmexp.analysis.run import analysis_device, check_configured, run_configured
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
from mmexp.zeroshot.run import configured_mode, run_zeroshot
from mmexp.zeroshot.wiseft import flat_metrics as wiseft_metrics
from mmexp.zeroshot.wiseft import write_results as write_wiseft

#: The resolved config of the evaluated run, in the eval folder.
EVALUATED_RUN_CONFIG = "run_config.yaml"
#: What results name as the evaluated checkpoint of a model built from config.
FROM_CONFIG = "(built from config)"
#: Top-level keys of the run a checkpoint carries: with ``ckpt_path`` set they come from it.
RUN_KEYS = frozenset(
    {
        "data",
        "model",
        "fusion",
        "objective",
        "finetune",
        "init",
        "experiment",
        "seed",
        "pretrained_checkpoint",
        "feature_cache",
    }
)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Rebuild the run's model and data from a checkpoint (or config) and test or score it.

    Args:
        cfg: The composed config (``conf/eval.yaml``).

    Returns:
        The eval run record with the test metrics.
    """
    output_dir = Path(cfg.paths.output_dir)
    record = RunRecord(output_dir, cfg.task_name, None, list(cfg.get("tags") or []))
    metrics: dict[str, Any] = {}
    with recorded(record, metrics):
        refuse_run_overrides(cfg)
        run_cfg = resolve_run_config(cfg, "eval")
        # the modes' settings checked before anything is built
        zeroshot, wiseft = configured_mode(cfg), configured_mode(cfg, "wiseft")
        chosen = [name for name in ("robustness", "zeroshot", "wiseft") if cfg.get(name)]
        if len(chosen) > 1:
            raise ValueError(
                f"{' and '.join(chosen)} each replace the test; run them as separate "
                "mmexp-eval calls"
            )
        # The run as rebuilt, overrides applied; not config.yaml, which would make this
        # folder read as another training run with that run's axes (mmexp-table).
        save_resolved_config(run_cfg, output_dir, EVALUATED_RUN_CONFIG)
        run = assemble(run_cfg, "eval")
        # Analyses and zero-shot modes that cannot run on this model are named before the test.
        check_configured(cfg, run.module)
        if zeroshot is not None:
            zeroshot.check(run.module, run.datamodule)
        if wiseft is not None:
            wiseft.check(run.module, run_cfg)
        trainer = build_trainer(cfg)  # the eval config's trainer, callbacks and logger
        extra: dict[str, Any] = {}
        if cfg.get("robustness"):
            extra["robustness"] = score_robustness(cfg, run_cfg, run, trainer, metrics)
        elif zeroshot is not None:
            extra["zeroshot"] = score_zeroshot(cfg, run_cfg, run, zeroshot, trainer, metrics)
        elif wiseft is not None:
            extra["wiseft"] = score_wiseft(cfg, run_cfg, run, wiseft, trainer, metrics)
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
                evaluated_checkpoint(run_cfg) or FROM_CONFIG,
                trainer.loggers,
            )
        if rank_zero_only.rank != 0:
            return {"metrics": metrics}
        from_checkpoint = evaluated_checkpoint(run_cfg) is not None
        result = record.finish(
            metrics,
            checkpoint=run_cfg[EVAL_CHECKPOINT_KEY],
            source_run=run_cfg.paths.get("output_dir") if from_checkpoint else None,
            **extra,
        )
    print_summary(
        "mmexp eval: test metrics",
        result["metrics"],
        {"checkpoint": cfg.ckpt_path or FROM_CONFIG, "eval folder": output_dir},
    )
    return result


def refuse_run_overrides(cfg: DictConfig) -> None:
    """Refuse command-line overrides of the run's own keys when a checkpoint supplies them.

    Raises:
        ValueError: Naming the overrides, which would otherwise be silently ignored.
    """
    if cfg.ckpt_path is None or not HydraConfig.initialized():
        return
    given = list(HydraConfig.get().overrides.task)
    ignored = [o for o in given if re.split(r"[./=@]", o.lstrip("+~"), maxsplit=1)[0] in RUN_KEYS]
    if ignored:
        raise ValueError(
            f"ckpt_path={cfg.ckpt_path}: the run's data, model and objective come from the "
            f"checkpoint, so {ignored} would not apply; change its stored config with "
            "overrides=[key=value,...], or build the model from config with ckpt_path=null"
        )


def evaluated_checkpoint(run_cfg: DictConfig) -> str | None:
    """The checkpoint the run was rebuilt from; ``None`` for a model built from config."""
    path = run_cfg[EVAL_CHECKPOINT_KEY]
    return None if path is None else str(path)


def run_folder(run_cfg: DictConfig, fallback: Path) -> Path:
    """The evaluated checkpoint's run folder (holding its ``results.json``), else ``fallback``.

    Robustness, analysis and zero-shot results go there, so that ``mmexp-table`` finds them
    beside the run's own. A model built from config has no run folder: ``fallback``.
    """
    if evaluated_checkpoint(run_cfg) is None:
        return fallback
    checkpoint = Path(run_cfg[EVAL_CHECKPOINT_KEY]).resolve()
    for folder in (checkpoint.parent.parent, Path(run_cfg.paths.get("output_dir") or "")):
        if (folder / RESULTS_FILE).is_file():
            return folder
    return fallback


def mode_folder(node: DictConfig, run_cfg: DictConfig, fallback: Path) -> Path:
    """Where a mode's JSON goes: its ``output_dir``, else the checkpoint's run folder."""
    chosen = node.get("output_dir")
    return Path(chosen) if chosen else run_folder(run_cfg, fallback)


def robustness_folder(cfg: DictConfig, run_cfg: DictConfig) -> Path:
    """Where ``robustness.json`` goes: ``robustness.output_dir``, else the checkpoint's run."""
    return mode_folder(cfg.robustness, run_cfg, Path(cfg.paths.output_dir))


def score_zeroshot(
    cfg: DictConfig,
    run_cfg: DictConfig,
    run: Any,
    mode: Any,
    trainer: Any,
    metrics: dict[str, Any],
) -> dict[str, Any]:
    """Run the zero-shot mode; its flat ``zeroshot/...`` metrics (and a test's) into ``metrics``."""

    def test() -> dict[str, Any]:
        trainer.test(run.module, datamodule=run.datamodule)
        metrics.update(trainer.callback_metrics)
        return dict(trainer.callback_metrics)

    folder = mode_folder(cfg.zeroshot, run_cfg, Path(cfg.paths.output_dir))
    record, flat = run_zeroshot(
        mode,
        run,
        folder,
        evaluated_checkpoint(run_cfg),
        test,
        trainer.loggers,
        analysis_device(cfg),
    )
    metrics.update(flat)
    return record


def score_wiseft(
    cfg: DictConfig,
    run_cfg: DictConfig,
    run: Any,
    mode: Any,
    trainer: Any,
    metrics: dict[str, Any],
) -> dict[str, Any]:
    """Score the WiSE-FT grid; its flat ``wiseft/<alpha>/<metric>`` metrics into ``metrics``."""
    result = mode.run(
        run,
        lambda: build_test_trainer(cfg),
        Path(run_cfg.paths.data_dir) / "wandb_artifacts",
        analysis_device(cfg),
    )
    payload = {"format": 1, "checkpoint": evaluated_checkpoint(run_cfg), **result}
    flat = wiseft_metrics(payload)
    metrics.update(flat)
    files: dict[str, str] = {}
    if rank_zero_only.rank == 0:
        files = write_wiseft(mode_folder(cfg.wiseft, run_cfg, Path(cfg.paths.output_dir)), payload)
        for logger in trainer.loggers:
            logger.log_metrics(flat)
            logger.save()
    return {"files": files, "alphas": [row["alpha"] for row in payload["rows"]]}


def score_robustness(
    cfg: DictConfig, run_cfg: DictConfig, run: Any, trainer: Any, metrics: dict[str, Any]
) -> dict[str, Any]:
    """Score the checkpoint under ``cfg.robustness``; the clean condition's metrics as test's."""
    folder = robustness_folder(cfg, run_cfg)
    payload = evaluate_robustness(
        run,
        cfg.robustness,
        folder,
        evaluated_checkpoint(run_cfg) or FROM_CONFIG,
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
