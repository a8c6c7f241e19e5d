"""LightningModule for captioning: encoders -> (fusion) -> memory -> decoder -> text.

Training is teacher forcing with label smoothing on the target captions (the ``text``
modality, tokenized by the decoder's own processor); validation and test generate a caption
per image and score it against all of that image's references with the COCO caption
toolkit (:mod:`mmexp.metrics.captioning`).

Batches: ``text`` holds the target captions tokenized (``input_ids``, ``attention_mask``,
``truncated``) and, at evaluation, ``references`` the raw reference captions of every
sample. Caption data sets evaluate grouped batches (every image once, with all its captions
as targets and ``group`` mapping each caption to its image), manifests one caption per
sample; both carry ``index``, the sample's position in its split, which identifies an image
in the gathered scores.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.optim import Optimizer
from torchmetrics import MeanMetric

from mmexp.decoders.base import CaptionDecoder, DecodingOptions, Memory
from mmexp.encoders.base import ModalityEncoder
from mmexp.encoders.processors import ModalityProcessor
from mmexp.fusion.base import FusionStrategy
from mmexp.lit.caption_memory import CaptionMemory, memory_dim
from mmexp.lit.common import EpochMeans, MultimodalModule, log_training_step, log_validation
from mmexp.metrics.caption_accumulator import CaptionMetrics, unique_items

#: The modality a captioner generates; the others condition it.
TARGET = "text"


def gathered(items: list[Any]) -> list[Any]:
    """Every process's items (this one's alone outside ``torch.distributed``)."""
    if not (dist.is_available() and dist.is_initialized()):
        return items
    parts: list[list[Any] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, items)
    return [item for part in parts for item in part or []]


class MultimodalCaptioner(MultimodalModule):
    """Generate the caption of a sample from its other modalities.

    Args:
        encoders: One encoder per conditioning modality (every data modality but ``text``).
        decoder: Partial decoder constructor taking ``memory_dim``
            (:class:`~mmexp.decoders.base.CaptionDecoder`).
        optimizer: Partial optimizer constructor taking ``params``.
        scheduler: Optional partial schedule constructor taking ``(optimizer, total_steps)``.
        conditioning: What the decoder reads (:mod:`mmexp.lit.caption_memory`).
        fusion: The fusion strategy of the fused conditionings.
        label_smoothing: Label smoothing of the teacher-forced cross-entropy.
        decoding: How validation and test captions are generated.
        val_metrics: Caption metrics scored every validation epoch (``bleu`` gives
            BLEU-1..4; METEOR's Java start costs seconds per epoch).
        test_metrics: Caption metrics of the test.
        on_missing_java: Without a Java runtime (METEOR, SPICE): ``raise`` when the module
            is built, before any training, saying what to install; ``partial`` scores the
            other metrics and logs which were left out.
        monitor: Validation metric whose best value is tracked as ``<monitor>_best``.
        monitor_mode: ``"max"`` or ``"min"``.
        run_config: See :class:`~mmexp.lit.common.MultimodalModule`.
        save_frozen_weights: See :class:`~mmexp.lit.common.MultimodalModule`.

    Raises:
        ValueError: A conditioning the parts cannot give (named by its key).
    """

    carried = (*MultimodalModule.carried, "train_means")

    def __init__(
        self,
        encoders: Mapping[str, ModalityEncoder],
        decoder: Callable[..., CaptionDecoder],
        optimizer: Callable[..., Optimizer],
        scheduler: Callable[..., Any] | None = None,
        conditioning: str = "tokens",
        fusion: FusionStrategy | None = None,
        label_smoothing: float = 0.1,
        decoding: DecodingOptions | None = None,
        val_metrics: Sequence[str] = ("bleu", "rouge_l", "cider"),
        test_metrics: Sequence[str] = ("bleu", "meteor", "rouge_l", "cider"),
        on_missing_java: str = "raise",
        monitor: str = "val/cider",
        monitor_mode: str = "max",
        run_config: Mapping[str, Any] | None = None,
        save_frozen_weights: bool = True,
    ) -> None:
        super().__init__(
            encoders, optimizer, scheduler, monitor, monitor_mode, run_config, save_frozen_weights
        )
        if not 0 <= label_smoothing < 1:
            raise ValueError(
                f"objective.module.label_smoothing must be in [0, 1), got {label_smoothing}"
            )
        width = next(iter(encoders.values())).out_dim
        self.memory = CaptionMemory(conditioning, list(encoders), width, fusion)
        self.decoder = decoder(memory_dim=memory_dim(conditioning, width, fusion))
        if not isinstance(self.decoder, CaptionDecoder):
            raise TypeError(
                f"objective.module.decoder built {type(self.decoder).__name__}, not a "
                "mmexp.decoders.base.CaptionDecoder"
            )
        self.label_smoothing = label_smoothing
        self.decoding = decoding or DecodingOptions()
        #: The last test's generations, ``{"id", "references", "prediction"}`` each.
        self.test_generations: list[dict[str, Any]] = []
        self.train_means = EpochMeans(("loss", "truncated"))
        self.val_loss = MeanMetric()
        self.val_metrics = CaptionMetrics("val/", val_metrics, on_missing_java=on_missing_java)
        self.test_metrics = CaptionMetrics("test/", test_metrics, on_missing_java=on_missing_java)

    @classmethod
    def tower_modalities(cls, data_modalities: Sequence[str]) -> list[str]:
        """The conditioning modalities: every data modality but the generated ``text``.

        Raises:
            ValueError: The data do not load ``text`` (the target) or nothing else.
        """
        towers = [m for m in data_modalities if m != TARGET]
        if TARGET not in data_modalities or not towers:
            raise ValueError(
                f"{cls.__name__} generates the {TARGET} modality from the others: "
                f"data.modalities must hold {TARGET} and at least one more (got "
                f"{list(data_modalities)})"
            )
        return towers

    @classmethod
    def fused_modalities(cls, data_modalities: Sequence[str]) -> list[str]:
        """The fusion strategy fuses the conditioning modalities."""
        return cls.tower_modalities(data_modalities)

    def data_processors(self, train: bool) -> dict[str, ModalityProcessor]:
        """The target captions are tokenized by the decoder's own processor."""
        return {TARGET: self.decoder.target_processor()}

    @property
    def reads_tokens(self) -> bool:
        """Whether the memory reads the encoders' token sequences."""
        return self.memory.reads_tokens

    def condition(self, batch: Mapping[str, Any]) -> Memory:
        """The decoder's memory for the samples of ``batch``."""
        return self.memory(self.encode(batch))

    def teacher_forced_loss(self, batch: Mapping[str, Any], memory: Memory) -> torch.Tensor:
        """Cross-entropy of each target token given those before it, per caption, averaged.

        Each caption weighs the same whatever its length (the mean of its tokens' losses):
        a mean over a batch's tokens would weigh each process's batch by its token count
        under DDP, which averages the processes' gradients equally, and two processes would
        not train as one. Grouped batches hold several targets per sample: each reads its
        sample's memory.
        """
        target = batch[TARGET]
        ids, mask = target["input_ids"], target["attention_mask"].bool()
        group = batch.get("group")
        if group is not None:
            # group holds the split position of each target's sample; find its batch row
            matches = group[:, None] == batch["index"][None, :]
            found = matches.any(dim=1)
            if not bool(found.all()):  # a grouped (evaluation) batch: one check per batch
                raise ValueError(
                    f"targets of samples {group[~found].unique().tolist()[:5]} have no sample "
                    "in the batch (group must hold batch['index'] values)"
                )
            rows = matches.int().argmax(dim=1)
            memory = Memory(memory.tokens[rows], memory.mask[rows])
        logits = self.decoder(ids[:, :-1], mask[:, :-1], memory)
        real = mask[:, 1:]
        labels = ids[:, 1:].masked_fill(~real, -100)
        tokens = F.cross_entropy(
            logits.transpose(1, 2).float(),
            labels,
            ignore_index=-100,
            label_smoothing=self.label_smoothing,
            reduction="none",
        )
        return (tokens.sum(dim=1) / real.sum(dim=1).clamp(min=1)).mean()

    def generate(
        self, batch: Mapping[str, Any], options: DecodingOptions | None = None
    ) -> list[str]:
        """The caption generated for each sample of ``batch``."""
        memory = self.condition(batch)
        return self.decoder.decode(self.decoder.generate(memory, options or self.decoding))

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        """Teacher forcing on the batch's target captions."""
        loss = self.teacher_forced_loss(batch, self.condition(batch))
        size = len(batch["index"])
        log_training_step(self, loss, size)
        truncated = batch[TARGET]["truncated"].float().sum()
        self.train_means.update({"loss": loss, "truncated": truncated / size}, weight=size)
        return loss

    def on_train_epoch_end(self) -> None:
        """Log the epoch's loss and the share of targets cut to the decoder's length."""
        self.train_means.log_and_reset(self, "train/", "_epoch")

    def _evaluate(self, batch: Mapping[str, Any], metrics: CaptionMetrics) -> torch.Tensor:
        if "references" not in batch:
            raise KeyError(
                "objective=caption scores generations against the references of each "
                "sample, but the batches hold none: use a caption data set (data=shapes, "
                "coco_captions, flickr30k) or set data.references_column"
            )
        memory = self.condition(batch)
        loss = self.teacher_forced_loss(batch, memory)
        generated = self.decoder.decode(self.decoder.generate(memory, self.decoding))
        metrics.update(batch["index"].tolist(), generated, batch["references"])
        return loss

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        """Validation loss, and a generation per sample for the caption metrics."""
        loss = self._evaluate(batch, self.val_metrics)
        # one weight per target caption (grouped batches hold several per image)
        self.val_loss.update(loss, weight=len(batch[TARGET]["input_ids"]))

    def on_validation_epoch_end(self) -> None:
        """Score the epoch's generations (once, over every process) and log them."""
        values = {**self.val_metrics.compute(), "val/loss": self.val_loss.compute()}
        self.val_metrics.reset()
        self.val_loss.reset()
        values = {name: torch.as_tensor(value) for name, value in values.items()}
        log_validation(self, values, self.best_monitored, self.monitor)

    def test_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        """A generation per test sample for the caption metrics."""
        self._evaluate(batch, self.test_metrics)

    def on_test_epoch_end(self) -> None:
        """Log the test scores; keep the generations for the run folder and the loggers."""
        scores = self.test_metrics.compute()
        self.log_dict({name: torch.as_tensor(value) for name, value in scores.items()})
        # written and logged by mmexp.lit.caption_samples.CaptionSamples (rank 0)
        self.test_generations = [
            {"id": image, "references": list(references), "prediction": prediction}
            for image, prediction, references in unique_items(gathered(self.test_metrics.items))
        ]
        self.test_metrics.reset()
