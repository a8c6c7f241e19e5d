"""``mmexp-eval``: test a checkpoint on the test split of the data it was trained on.

The checkpoint carries the resolved config of its run, so the model and data are rebuilt
from it; ``overrides`` changes parts of that config (e.g. the batch size or a data root).

Examples:
    mmexp-eval ckpt_path=outputs/train/runs/<date>/checkpoints/last.ckpt
    mmexp-eval ckpt_path=... 'overrides=["data.eval_batch_size=256"]'
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from mmexp import CONFIG_DIR
from mmexp.builders import build_data_and_model
from mmexp.config_check import check_config
from mmexp.finetune import prepare_finetune
from mmexp.lit.frozen_weights import (
    FROZEN_WEIGHTS_KEY,
    left_out_towers,
    restore_frozen_weights,
)
from mmexp.tracking.run_record import RunRecord
from mmexp.utils.checkpoints import load_checkpoint
from mmexp.utils.instantiate import build_trainer
from mmexp.utils.resolvers import register_resolvers
from mmexp.utils.summary import print_summary


def skip_pretrained_weights(run_cfg: DictConfig, keep: Iterable[str] = ()) -> None:
    """Build timm encoders without fetching pretrained weights: the checkpoint replaces them.

    Hugging Face encoders still read their config and weights from ``name_or_path``
    (the architecture is defined there), so that path must be reachable when evaluating.

    Args:
        run_cfg: The run's config, changed in place.
        keep: Modalities whose frozen weights the checkpoint left out
            (``model.save_frozen_weights=false``): built from their source as configured.
    """
    for modality, node in (run_cfg.model.get("encoders") or {}).items():
        if node is None or modality in keep:
            continue
        if "pretrained" in node:
            node.pretrained = False
        if "checkpoint_path" in node:
            node.checkpoint_path = None


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Rebuild the run's model and data from a checkpoint and test it.

    Args:
        cfg: The composed config (``conf/eval.yaml``).

    Returns:
        The eval run record with the test metrics.
    """
    output_dir = Path(cfg.paths.output_dir)
    record = RunRecord(output_dir, cfg.task_name, None, list(cfg.get("tags") or []))
    record.start()
    try:
        check_config(cfg)  # the eval config's trainer, callbacks and logger
        checkpoint = load_checkpoint(cfg.ckpt_path)
        run_cfg = OmegaConf.create(checkpoint["mmexp_config"])
        run_cfg.merge_with_dotlist(list(cfg.get("overrides") or []))
        # Frozen towers the checkpoint left out are rebuilt as in the run: from their
        # pretrained source, the finetuning source checkpoint, or the seed.
        left_out = left_out_towers(checkpoint)
        if run_cfg.get("seed") is not None:
            pl.seed_everything(run_cfg.seed, workers=True)
        finetuning = prepare_finetune(run_cfg, load_source=bool(left_out))
        skip_pretrained_weights(run_cfg, keep=left_out)
        datamodule, model = build_data_and_model(run_cfg)
        if finetuning is not None:  # the finetuned structure (adapters, linear probe head)
            finetuning.apply(model, load_weights=bool(left_out))
        restore_frozen_weights(
            checkpoint["state_dict"],
            checkpoint.get(FROZEN_WEIGHTS_KEY),
            model.state_dict(),
            origin=str(cfg.ckpt_path),
        )
        model.load_state_dict(checkpoint["state_dict"])
        trainer = build_trainer(cfg)
        trainer.test(model, datamodule=datamodule)
        metrics = dict(trainer.callback_metrics)
    except BaseException as error:
        record.fail(error)
        raise
    result = record.finish(
        metrics,
        checkpoint=str(Path(cfg.ckpt_path).resolve()),
        source_run=run_cfg.paths.get("output_dir"),
    )
    print_summary(
        "mmexp eval: test metrics",
        result["metrics"],
        {"checkpoint": cfg.ckpt_path, "eval folder": output_dir},
    )
    return result


register_resolvers()


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def main(cfg: DictConfig) -> None:
    """Console entry point."""
    evaluate(cfg)


if __name__ == "__main__":
    main()
