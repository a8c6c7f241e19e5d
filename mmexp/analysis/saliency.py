"""Which pixels the predicted class depends on, for a few test samples.

A seeded draw of ``num_samples`` samples of the analysis set is loaded again (the analysis
set holds encoder outputs; saliency needs the pixels) and run through the whole model with
its other modalities as they are. The injected method (:mod:`mmexp.analysis.saliency_methods`:
Grad-CAM on a convolution of the image encoder, or gradient x input for any image encoder)
attributes the predicted-class logit (the output, for one-output models) to the image.

Per sample, a figure ``<run>/analysis/saliency/sample-<test index>.png``: the image as the
model saw it, the heatmap over it, the sample's text as the caption and the predicted and
true label as the title; and the share of the heat in the image's top 10% of pixels (1:
concentrated, 0.1: spread evenly). A model without the image modality, or image inputs
that are not pixels (a feature cache), are reported as skipped with the reason.
"""

from __future__ import annotations

from typing import Any

import torch
from pytorch_lightning.utilities import move_data_to_device

from mmexp.analysis.data import AnalysisSet
from mmexp.analysis.figures import clear_figures, display_image, upsample, write_sample_figure
from mmexp.analysis.saliency_methods import GradCAM, SaliencyMethod, predicted_scores
from mmexp.analysis.samples import (
    describe_outcome,
    pick_rows,
    pixel_images,
    sample_text,
    skipped,
    text_tokenizer,
)

TOP_SHARE = 0.1


def top_share(heat: torch.Tensor, fraction: float = TOP_SHARE) -> float:
    """The share of a non-negative map's total in its top ``fraction`` of pixels."""
    values = heat.flatten().double().clamp_min(0)
    total = values.sum()
    if total <= 0:
        return 0.0
    count = max(1, round(fraction * values.numel()))
    return float(values.topk(count).values.sum() / total)


class SaliencyAnalysis:
    """Saliency maps of the image for the predicted class, drawn per sample.

    Args:
        method: The attribution method (default: :class:`GradCAM` on the last ``Conv2d``).
        num_samples: Samples drawn (seeded) from the analysis set.
        seed: Seed of the draw.
        image: The modality attributed.
        text: The modality whose text is the caption (when the model has it).
        alpha: Opacity of the heatmap.
    """

    name = "saliency"

    def __init__(
        self,
        method: SaliencyMethod | None = None,
        num_samples: int = 4,
        seed: int = 0,
        image: str = "image",
        text: str = "text",
        alpha: float = 0.5,
    ) -> None:
        self.method = method if method is not None else GradCAM()
        self.num_samples = num_samples
        self.seed = seed
        self.image = image
        self.text = text
        self.alpha = alpha

    def run(self, analysis: AnalysisSet) -> dict[str, Any]:
        """The saliency report of the drawn samples (JSON-ready); writes the figures."""
        module = analysis.module
        if self.image not in analysis.modalities:
            return skipped(
                f"the model has no {self.image!r} modality (it has {analysis.modalities})"
            )
        if analysis.samples is None:
            return skipped("the test samples are not available (run it through run_analyses)")
        encoder = module.encoders[self.image]
        reason = self.method.blocker(encoder)
        if reason is not None:
            return skipped(reason)
        rows = pick_rows(len(analysis.labels), self.num_samples, self.seed)
        indices = analysis.index[rows.to(analysis.index.device)].tolist()
        items, batch = analysis.samples.load(indices)
        if pixel_images(batch, self.image) is None:
            return skipped(f"the {self.image} inputs are not pixel images (a feature cache?)")
        device = analysis.labels.device
        batch = move_data_to_device(batch, device)

        def score(images: torch.Tensor) -> torch.Tensor:
            return predicted_scores(analysis.predict(module.encode({**batch, self.image: images})))

        maps, details = self.method.attribute(encoder, score, batch[self.image])
        with torch.no_grad():
            outputs = analysis.predict(module.encode(batch))
        tokenizer = text_tokenizer(module, self.text) if self.text in analysis.modalities else None
        processor = encoder.processor(False)
        folder = analysis.files_folder(self.name)
        clear_figures(folder)
        samples = []
        for row, index in enumerate(indices):
            label = analysis.labels[rows[row]]
            entry: dict[str, Any] = {
                "index": int(index),
                **describe_outcome(outputs[row], label, analysis.samples),
            }
            if self.text in analysis.modalities:
                entry["caption"] = sample_text(items[row], self.text, tokenizer)
            heat = self.method.heat(maps[row].detach().cpu())
            entry["top10_share"] = top_share(heat)
            height, width = heat.shape
            picture = display_image(batch[self.image][row], processor)
            overlay = upsample(heat, int(height), int(width))
            title = f"#{index}: predicted {entry['predicted']} | true {entry['true']}"
            path = folder / f"sample-{index}.png"
            write_sample_figure(
                path,
                picture,
                [(self.method.name, overlay)],
                title,
                entry.get("caption"),
                alpha=self.alpha,
            )
            entry["figure"] = str(path.relative_to(analysis.output_dir))
            samples.append(entry)
        shares = [s["top10_share"] for s in samples]
        return {
            "method": self.method.name,
            **details,
            "samples": samples,
            "figures": [s["figure"] for s in samples],
            "mean": {"top10_share": sum(shares) / len(shares)},
        }
