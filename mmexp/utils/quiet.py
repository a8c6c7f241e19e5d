"""Silence third-party console messages that are known to be harmless in mmexp's runs.

Each message is matched by its text and by the module or logger that emits it, so any other
warning of the same libraries still shows.
"""

from __future__ import annotations

import logging
import re
import warnings

#: Loggers Lightning's ``rank_zero_info`` writes to (the last of them imported wins).
LIGHTNING_RANK_ZERO_LOGGERS = (
    "lightning_utilities.core.rank_zero",
    "lightning_fabric.utilities.rank_zero",
    "pytorch_lightning.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning.pytorch.utilities.rank_zero",
)

#: Lightning's ``rank_zero_info`` messages silenced (regexes matched at the start).
LIGHTNING_INFO = (
    r"💡 Tip: For seamless cloud logging and experiment tracking, try installing \[litlogger\]",
    r"💡 Tip: For seamless cloud uploads and versioning, try installing \[litmodels\]",
    r"Trainer already configured with model summary callbacks: .*RichModelSummary",
    r"Loading `train_dataloader` to estimate number of stepping batches\.",
)

#: ``(message regex, category, module regex)`` of the Python warnings silenced.
WARNINGS: tuple[tuple[str, type[Warning], str], ...] = (
    (
        r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        FutureWarning,
        r"(pytorch_lightning|lightning\.pytorch)\.utilities\._pytree\Z",
    ),
    (
        # Lightning's PossibleUserWarning, a UserWarning
        r"It is recommended to use `self\.log\('(train|val|test)/[^']*', \.\.\., sync_dist=True\)`",
        UserWarning,
        r"(pytorch_lightning|lightning\.pytorch)\.trainer\.connectors\.logger_connector\.result\Z",
    ),
)


class _DropMessages(logging.Filter):
    """Drop the records whose message matches one of ``patterns``."""

    def __init__(self, patterns: tuple[str, ...]) -> None:
        super().__init__()
        self.pattern = re.compile("|".join(f"(?:{p})" for p in patterns))

    def filter(self, record: logging.LogRecord) -> bool:
        return self.pattern.match(record.getMessage()) is None


_LIGHTNING_FILTER = _DropMessages(LIGHTNING_INFO)


def silence_known_noise() -> None:
    """Silence the third-party messages below, each harmless in an mmexp run.

    Called first thing by ``mmexp-train``, ``mmexp-eval`` and ``mmexp-bench``; calling it
    again adds nothing.

    Silenced:

    * Lightning's ``💡 Tip: ... try installing [litlogger]`` (every trainer not given a
      ``LitLogger``) and ``💡 Tip: ... try installing [litmodels]`` (a trainer adding its
      default checkpoint callback, as ``mmexp-eval``'s does): advertisements for a hosted
      service; mmexp logs to CSV and W&B (``logger=``) and keeps its checkpoints itself.
    * Lightning's ``Trainer already configured with model summary callbacks:
      [RichModelSummary]. Skipping setting a default ModelSummary callback``:
      ``callbacks/model_summary.yaml`` chose that summary on purpose.
    * Lightning's ``Loading `train_dataloader` to estimate number of stepping batches``:
      the warmup-cosine schedule asks the trainer for its number of steps, which Lightning
      counts from the training loader; nothing is loaded twice or differently.
    * ``torch.utils._pytree``'s FutureWarning ``isinstance(treespec, LeafSpec) is
      deprecated``, raised by Lightning's own ``pytorch_lightning.utilities._pytree``: a
      change for Lightning to make, nothing in the run depends on it.
    * Lightning's ``It is recommended to use self.log('<split>/...', ..., sync_dist=True)``
      in multi-process runs, for ``train/``, ``val/`` and ``test/`` values: every value
      mmexp's modules log per epoch is a torchmetrics result (reduced over processes by
      ``compute()``) or already summed by the strategy (``<split>/skipped_samples``);
      Lightning cannot tell such a tensor from a per-process one. Reducing them again is
      what mmexp avoids (a reduction from rank zero alone deadlocks). A custom module that
      logs a per-process value under these prefixes does not get this advice.

    Left as they are, because they are true about the run: the devices found (``GPU
    available``), ``Seed set to``, the ``srun`` hint on machines with SLURM (multi-process
    jobs without ``srun`` hang; mmexp's own route is ``launcher=slurm``), the loader's
    ``does not have many workers`` (the default shapes data decode PNG and WAV files per
    sample, which workers speed up), a logging interval longer than the epoch, and W&B's
    run folder and sync lines.
    """
    for message, category, module in WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    for name in LIGHTNING_RANK_ZERO_LOGGERS:
        logging.getLogger(name).addFilter(_LIGHTNING_FILTER)  # once: addFilter skips repeats
