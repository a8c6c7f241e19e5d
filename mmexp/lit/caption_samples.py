"""Save a captioning test's generations beside its scores, and log a sample of them.

Every generation goes to ``captions/test.jsonl`` (``id``, ``image``, ``references``,
``prediction``), the file a reader of a caption table opens to see what the numbers mean;
the first few go to loggers that take tables (W&B), with their images.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_only

log = logging.getLogger(__name__)


def image_file(datamodule: Any, stage: str, index: int) -> Path | None:
    """The image file of sample ``index`` of a split, when the data set reads files."""
    dataset = getattr(datamodule, "datasets", {}).get(stage)
    rows = getattr(dataset, "rows", None)
    if rows is None or not 0 <= index < len(rows):
        return None
    column = getattr(dataset, "columns", {}).get("image", "image")
    value = rows[index].get(column)
    root = getattr(dataset, "root", None)
    if not isinstance(value, str) or root is None:
        return None
    path = Path(root) / value
    return path if path.is_file() else None


class CaptionSamples(Callback):
    """After a captioning test, write every generation and log the first ``logged``.

    Reads the module's ``test_generations`` (a list of ``{"id", "references",
    "prediction"}``); does nothing for modules that generate no text.

    Args:
        dirpath: Folder of ``test.jsonl`` (the run folder's ``captions``).
        logged: Generations sent to the loggers as the ``test/captions`` table.
    """

    def __init__(self, dirpath: str, logged: int = 50) -> None:
        self.dirpath = Path(dirpath)
        self.logged = logged

    @rank_zero_only
    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Write the file and log the table."""
        generations: Sequence[Mapping[str, Any]] | None = getattr(
            pl_module, "test_generations", None
        )
        if not generations:
            return
        rows = [
            {**sample, "image": _relative(image_file(trainer.datamodule, "test", sample["id"]))}
            for sample in generations
        ]
        self.dirpath.mkdir(parents=True, exist_ok=True)
        path = self.dirpath / "test.jsonl"
        with path.open("w", encoding="utf-8") as file:
            for row in rows:
                file.write(json.dumps(row) + "\n")
        log.info("%d test captions written to %s", len(rows), path)
        for logger in trainer.loggers:
            if hasattr(logger, "log_table"):
                logger.log_table(
                    key="test/captions",
                    columns=["id", "image", "references", "prediction"],
                    data=[_table_row(row) for row in rows[: self.logged]],
                )


def _relative(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _table_row(row: Mapping[str, Any]) -> list[Any]:
    image: Any = row["image"]
    if image is not None:
        try:
            import wandb

            image = wandb.Image(image)
        except ImportError:  # a logger with tables but without W&B: keep the path
            pass
    return [row["id"], image, " | ".join(row["references"]), row["prediction"]]
