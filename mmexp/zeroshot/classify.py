"""Zero-shot classification: the test images against class embeddings made of prompts.

As in CLIP (Radford et al., "Learning Transferable Visual Models From Natural Language
Supervision", ICML 2021) and open_clip's ``build_zero_shot_classifier``: each class name is
put into every template of a set, the prompts are encoded by the text tower and normalised,
their mean is normalised again into the class embedding, and an image's logits are its
normalised embedding against every class embedding, times the logit scale. Each template set
is scored on its own (``zeroshot/<set>/<metric>``): top-k accuracy for each ``k`` of ``ks``
that does not exceed the class count, the mean of the per-class accuracies, the
cross-entropy of the logits, and each class's accuracy.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from mmexp.encoders.base import ModalityEncoder
from mmexp.robustness.evaluate import complete_test_split
from mmexp.zeroshot.prompts import check_templates, class_names_for, prompts
from mmexp.zeroshot.towers import AlignedTowers, embed_texts

log = logging.getLogger(__name__)


def class_embeddings(
    text: ModalityEncoder, class_names: Sequence[str], templates: Sequence[str], batch_size: int
) -> torch.Tensor:
    """``[C, D]``: per class, the normalised mean of its normalised prompt embeddings."""
    texts = [prompt for name in class_names for prompt in prompts(templates, name)]
    embedded = embed_texts(text, texts, batch_size).view(len(class_names), len(templates), -1)
    return torch.nn.functional.normalize(embedded.mean(dim=1), dim=-1)


def accuracies(
    logits: torch.Tensor, labels: torch.Tensor, ks: Sequence[int]
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Top-k accuracies (``k`` up to the class count), the loss and the per-class accuracy.

    Returns:
        ``({"top<k>": ..., "mean_per_class": ..., "loss": ...}, [{"samples": n, "acc": a},
        ...])``; a class without test samples has ``acc`` ``None`` and is left out of the mean.
        ``loss`` is the cross-entropy of the scaled logits.
    """
    classes = logits.shape[1]
    ranked = logits.topk(min(max(ks), classes), dim=1).indices
    hits = ranked == labels[:, None]
    metrics = {f"top{k}": hits[:, :k].any(dim=1).float().mean().item() for k in ks if k <= classes}
    correct = hits[:, 0]
    per_class = []
    for index in range(classes):
        rows = labels == index
        count = int(rows.sum())
        per_class.append(
            {"samples": count, "acc": correct[rows].float().mean().item() if count else None}
        )
    scored = [entry["acc"] for entry in per_class if entry["acc"] is not None]
    metrics["mean_per_class"] = sum(scored) / len(scored) if scored else float("nan")
    metrics["loss"] = torch.nn.functional.cross_entropy(logits, labels).item()
    return metrics, per_class


class ZeroShotClassification:
    """``zeroshot=classify``: the test split classified by prompts of the class names.

    Args:
        templates: ``{set name: [template, ...]}``; each template has one ``{}``.
        class_names: ``None`` (the data module's ``label_names``), a list, or a ``.txt`` /
            ``.json`` file (:func:`~mmexp.zeroshot.prompts.read_class_names`).
        ks: Cut-offs of the top-k accuracy; those above the class count are left out.
        batch_size: Prompts encoded at a time.
        name: The mode's key in ``zeroshot.json``.

    Raises:
        ValueError: A template set that is empty or a template without ``{}``, or ``ks``
            with a cut-off below 1 (named at construction, before anything is built).
    """

    replaces_test = True

    def __init__(
        self,
        templates: Mapping[str, Sequence[str]],
        class_names: str | Sequence[str] | None = None,
        ks: Sequence[int] = (1, 5),
        batch_size: int = 256,
        name: str = "classify",
    ) -> None:
        self.templates = {str(k): [str(t) for t in v] for k, v in (templates or {}).items()}
        check_templates(self.templates)
        if not ks or any(int(k) < 1 for k in ks):
            raise ValueError(f"zeroshot.ks: cut-offs of at least 1, got {list(ks)}")
        self.class_names = class_names
        self.ks = sorted({int(k) for k in ks})
        self.batch_size = batch_size
        self.name = name
        # The data's class names and their prompt names, index order (set by check).
        self._labels: list[str] = []
        self._names: list[str] | None = None

    def check(self, module: Any, datamodule: Any) -> None:
        """Refuse a module without aligned towers and class names that do not fit the data.

        Raises:
            TypeError: See :meth:`AlignedTowers.of`.
            ValueError: No class names, fewer than two, or a count that is not the data's.
        """
        AlignedTowers.of(module)
        labels = getattr(datamodule, "label_names", None)
        if labels is None:
            raise ValueError(
                f"zeroshot.class_names: {type(datamodule).__name__} has no label_names; "
                "give the class names in a file: zeroshot.class_names=<names.txt|json>"
            )
        self._labels = [str(label) for label in labels]
        self._names = class_names_for(self._labels, self.class_names)

    def run(self, run: Any, test: Any, device: torch.device | str = "cpu") -> dict[str, Any]:
        """Score every template set on the test split (``test`` is not used).

        Returns:
            The mode's entry of ``zeroshot.json``: ``metrics`` (``<set>/<metric>``), and per
            set its templates, metrics and per-class accuracies.
        """
        if self._names is None:
            self.check(run.module, run.datamodule)
        assert self._names is not None
        towers = AlignedTowers.of(run.module).to(device)
        weights = {
            name: class_embeddings(towers.text, self._names, templates, self.batch_size)
            for name, templates in self.templates.items()
        }
        images, labels = self._test_embeddings(run.datamodule, towers)
        log.info("zeroshot: %d test images, %d classes", len(labels), len(self._names))
        sets: dict[str, Any] = {}
        for name, classes in weights.items():
            logits = towers.logit_scale * images @ classes.T
            metrics, per_class = accuracies(logits, labels, self.ks)
            sets[name] = {
                "templates": self.templates[name],
                "metrics": metrics,
                # keyed by the data's class names: prompt names need not be unique
                "per_class": dict(zip(self._labels, per_class, strict=True)),
            }
        return {
            "labels": self._labels,
            "class_names": self._names,
            "class_names_from": str(self.class_names) if self.class_names else "data",
            "samples": len(labels),
            "logit_scale": towers.logit_scale,
            "ks": self.ks,
            "sets": sets,
            "metrics": {
                f"{name}/{metric}": value
                for name, entry in sets.items()
                for metric, value in entry["metrics"].items()
            },
        }

    @staticmethod
    def _test_embeddings(
        datamodule: Any, towers: AlignedTowers
    ) -> tuple[torch.Tensor, torch.Tensor]:
        with complete_test_split(datamodule):
            datamodule.setup("test")
            pairs = list(towers.embed_images(datamodule.test_dataloader()))
        if not pairs or "label" not in pairs[0][1]:
            raise ValueError(
                "zeroshot=classify: the test batches hold no labels; it needs a data set with "
                "class labels (a caption data set? use zeroshot=retrieval)"
            )
        images = torch.cat([embedded for embedded, _ in pairs])
        labels = torch.cat([batch["label"] for _, batch in pairs]).to(images.device)
        if labels.dim() != 1 or labels.is_floating_point():
            raise ValueError(
                "zeroshot=classify scores single-label classes; the test labels have shape "
                f"{tuple(labels.shape)} and dtype {labels.dtype}"
            )
        return images, labels
