"""Cross-modal attention of a few test samples: where the text looks in the image.

For the token-level strategies (``early_tokens``, ``cross_attention``, ``mult``,
``bottleneck``, and ``nl_gate`` with ``fusion.query=text``: its one direction is the query
modality's over the others), the fusion is run on a seeded draw of ``num_samples`` samples of the
analysis set while its attention weights are recorded
(:mod:`mmexp.fusion.attention_record`; the outputs do not change). From the maps of the text
tokens over the image tokens in one layer (mean over heads):

* a figure per sample, ``<run>/analysis/attention/sample-<test index>.png``: the image as the
  model saw it; the attention of the mean text query (the mean over the sample's real text
  tokens) upsampled onto it, from its minimum (blue) to its maximum (red) over the image,
  with its normalised entropy ``H``; the same for the ``tokens_per_sample`` text tokens whose
  attention is most focused (lowest entropy); where the strategy also has the reverse
  direction, a bar chart of the image tokens' mean attention over the text tokens. The
  title gives the predicted and the true label, the caption the sample's text (the string
  the data set gives, else the token ids decoded);
* per sample, the normalised entropy of the mean query's attention over the image patches
  (1: uniform, 0: a single patch), its entropy in bits, and the share of the text tokens'
  attention that goes to the image (1 for cross-attention, a part of it for a joint
  encoder); their means over the samples.

Strategies without cross-modal attention, a model without the two modalities, or image
inputs that are not pixels (a feature cache) are reported as skipped with the reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from mmexp.analysis.data import AnalysisSet
from mmexp.analysis.figures import (
    clear_figures,
    display_image,
    token_grid,
    upsample,
    write_sample_figure,
)
from mmexp.analysis.rows import select_rows
from mmexp.analysis.samples import (
    describe_outcome,
    pick_rows,
    pixel_images,
    sample_text,
    skipped,
    text_tokenizer,
    token_labels,
)
from mmexp.fusion.attention_record import CrossModalAttention, NoCrossModalAttention

MEANS = ("normalized_entropy", "entropy_bits", "image_share", "reverse_normalized_entropy")


def normalized_entropy(weights: torch.Tensor) -> tuple[float, float]:
    """``(entropy in bits, entropy / log2(n))`` of non-negative ``weights`` made to sum to 1.

    ``(0, 0)`` for weights with no mass.
    """
    p = weights.double().clamp_min(0)
    if p.sum() <= 0:
        return 0.0, 0.0  # no attention at all (no mass to spread)
    p = p / p.sum()
    bits = float(-(p[p > 0] * p[p > 0].log2()).sum())
    return bits, bits / math.log2(len(p)) if len(p) > 1 else 0.0


@dataclass
class Drawn:
    """The drawn samples and what every figure of them reads."""

    rows: torch.Tensor
    indices: list[int]
    features: dict[str, Any]
    outputs: torch.Tensor
    forward: CrossModalAttention
    reverse: CrossModalAttention | None
    items: list[dict[str, Any]] | None = None
    batch: dict[str, Any] = field(default_factory=dict)
    images: torch.Tensor | None = None
    tokenizer: Any | None = None
    image_processor: Any | None = None


class AttentionAnalysis:
    """Figures and entropy of the text tokens' attention over the image tokens.

    Args:
        num_samples: Samples drawn (seeded) from the analysis set.
        seed: Seed of the draw.
        image: The modality drawn as the image.
        text: The modality whose tokens are the queries.
        layer: Which layer's maps, by position among the strategy's layers with text over
            image attention (``-1``: the last).
        tokens_per_sample: Text tokens shown one by one (the most focused ones).
        alpha: Opacity of the heatmaps.
    """

    name = "attention"

    def __init__(
        self,
        num_samples: int = 4,
        seed: int = 0,
        image: str = "image",
        text: str = "text",
        layer: int = -1,
        tokens_per_sample: int = 3,
        alpha: float = 0.5,
    ) -> None:
        self.num_samples = num_samples
        self.seed = seed
        self.image = image
        self.text = text
        self.layer = layer
        self.tokens_per_sample = tokens_per_sample
        self.alpha = alpha

    def _pick(
        self, maps: list[CrossModalAttention], query: str, key: str
    ) -> tuple[CrossModalAttention | None, int]:
        found = sorted(
            (m for m in maps if m.query == query and m.key == key), key=lambda m: m.layer
        )
        if not found:
            return None, 0
        if not -len(found) <= self.layer < len(found):
            raise ValueError(
                f"analysis.attention.layer={self.layer}: the strategy has {len(found)} layers "
                f"of {query} over {key} attention"
            )
        return found[self.layer], len(found)

    def run(self, analysis: AnalysisSet) -> dict[str, Any]:
        """The attention report of the drawn samples (JSON-ready); writes the figures.

        Raises:
            ValueError: ``layer`` is out of range.
        """
        module = analysis.module
        missing = [m for m in (self.image, self.text) if m not in analysis.modalities]
        if missing:
            return skipped(f"the model has no {missing} modality (it has {analysis.modalities})")
        fusion = getattr(module, "fusion", None)
        if fusion is None:
            return skipped(f"{type(module).__name__} has no fusion strategy")
        rows = pick_rows(len(analysis.labels), self.num_samples, self.seed)
        features = {m: select_rows(out, rows) for m, out in analysis.features.items()}
        try:
            with torch.no_grad():
                maps = fusion.cross_modal_attention(features)
                outputs = analysis.predict(features)
        except NoCrossModalAttention as error:
            return skipped(str(error))
        forward, layers = self._pick(maps, self.text, self.image)
        if forward is None:
            return skipped(
                f"{type(fusion).__name__} has no {self.text} over {self.image} attention"
            )
        indices = analysis.index[rows.to(analysis.index.device)].tolist()
        drawn = Drawn(
            rows, indices, features, outputs, forward, self._pick(maps, self.image, self.text)[0]
        )
        drawn.tokenizer = text_tokenizer(module, self.text)
        drawn.image_processor = module.encoders[self.image].processor(False)
        blocker = "the test samples are not available"
        if analysis.samples is not None:
            drawn.items, drawn.batch = analysis.samples.load(indices)
            drawn.images = pixel_images(drawn.batch, self.image)
            blocker = f"the {self.image} inputs are not pixel images (a feature cache?)"
        folder = analysis.files_folder(self.name)
        clear_figures(folder)
        samples = [self._sample(analysis, drawn, row) for row in range(len(indices))]
        figures = [s["figure"] for s in samples if "figure" in s]
        report: dict[str, Any] = {
            "strategy": type(fusion).__name__,
            "query": self.text,
            "key": self.image,
            "route": forward.route,
            "layer": forward.layer,
            "layers": layers,
            "reverse": drawn.reverse is not None,
            "samples": samples,
            "figures": figures,
            "mean": {
                key: sum(values) / len(values)
                for key in MEANS
                if (values := [s[key] for s in samples if key in s])
            },
        }
        if not figures:
            report["figures_skipped"] = blocker if drawn.images is None else "no token grid"
        return report

    def _sample(self, analysis: AnalysisSet, drawn: Drawn, row: int) -> dict[str, Any]:
        index = drawn.indices[row]
        entry: dict[str, Any] = {"index": int(index)}
        if analysis.samples is not None:
            label = analysis.labels[drawn.rows[row]]
            entry.update(describe_outcome(drawn.outputs[row], label, analysis.samples))
        text, image = drawn.features[self.text], drawn.features[self.image]
        text_ok = text.mask[row] & text.present_mask()[row]
        image_ok = image.mask[row] & image.present_mask()[row]
        if not text_ok.any() or not image_ok.any():
            return {**entry, "absent": True}
        weights = drawn.forward.weights[row].mean(0)[text_ok][:, image_ok]
        size = drawn.images.shape[-2:] if drawn.images is not None else (1, int(image_ok.sum()))
        grid = token_grid(int(image_ok.sum()), int(size[0]), int(size[1]))
        patches = weights[:, grid[0] if grid is not None else 0 :]
        bits, entropy = normalized_entropy(patches.mean(0))
        entry.update(
            image_share=float(weights.sum(1).mean()), entropy_bits=bits, normalized_entropy=entropy
        )
        tokenizer = drawn.tokenizer
        ids = None
        if drawn.items is not None:
            entry["caption"] = sample_text(drawn.items[row], self.text, tokenizer)
            text_batch = drawn.batch.get(self.text)
            if isinstance(text_batch, dict) and "input_ids" in text_batch:
                ids = text_batch["input_ids"][row][text_batch["attention_mask"][row].bool()]
        labels = token_labels(ids, int(text_ok.sum()), tokenizer)
        focus = [normalized_entropy(patches[j])[1] for j in range(len(patches))]
        chosen = sorted(range(len(focus)), key=focus.__getitem__)[: self.tokens_per_sample]
        entry["tokens"] = [labels[j] for j in chosen]
        bars = None
        if drawn.reverse is not None:
            back = drawn.reverse.weights[row].mean(0)[image_ok][:, text_ok].mean(0)
            entry["reverse_normalized_entropy"] = normalized_entropy(back)[1]
            bars = (f"{self.image} -> {self.text}", labels, back.cpu().numpy())
        if drawn.images is None or grid is None:
            return entry
        height, width = int(size[0]), int(size[1])

        def overlay(values: torch.Tensor) -> Any:
            return upsample(values.reshape(grid[1], grid[2]), height, width, stretch=True)

        mean_title = f"{self.text} -> {self.image} (mean), H={entropy:.2f}"
        overlays = [(mean_title, overlay(patches.mean(0)))]
        overlays += [(labels[j], overlay(patches[j])) for j in chosen]
        picture = display_image(drawn.images[row], drawn.image_processor)
        title = f"#{index}: predicted {entry.get('predicted')} | true {entry.get('true')}"
        path = analysis.files_folder(self.name) / f"sample-{index}.png"
        write_sample_figure(path, picture, overlays, title, entry.get("caption"), bars, self.alpha)
        entry["figure"] = str(path.relative_to(analysis.output_dir))
        return entry
