"""Per-sample figures of the attention and saliency analyses: heatmaps on the input image.

The image is shown as the model saw it (after its preprocessing, with the normalisation
undone where the processor names it). Maps over a grid of image tokens are upsampled
bilinearly onto the image. Figures are drawn on matplotlib's Agg canvas (files only, no
display), without pyplot's global state.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch.nn import functional as F

PANEL_INCHES = 2.4


def normalisation(processor: Any) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The ``(mean, std)`` of the ``Normalize`` step of an image processor's transform."""
    steps = getattr(getattr(processor, "transform", None), "transforms", None) or []
    for step in steps:
        if type(step).__name__ == "Normalize" and hasattr(step, "mean") and hasattr(step, "std"):
            mean = torch.as_tensor(step.mean, dtype=torch.float32).reshape(-1, 1, 1)
            std = torch.as_tensor(step.std, dtype=torch.float32).reshape(-1, 1, 1)
            return mean, std
    return None


def display_image(image: torch.Tensor, processor: Any | None = None) -> np.ndarray:
    """A ``[3, H, W]`` model input as an ``[H, W, 3]`` picture in ``[0, 1]``.

    The processor's normalisation is undone when it has a ``Normalize`` step; otherwise
    the values are rescaled to ``[0, 1]``.
    """
    image = image.detach().float().cpu()
    found = normalisation(processor) if processor is not None else None
    if found is not None:
        mean, std = found
        image = image * std + mean
    else:
        low, high = image.min(), image.max()
        image = (image - low) / (high - low) if high > low else torch.zeros_like(image)
    return image.clamp(0, 1).permute(1, 2, 0).numpy()


def token_grid(count: int, height: int, width: int) -> tuple[int, int, int] | None:
    """How ``count`` image tokens lie on an ``height x width`` image: ``(prefix, h, w)``.

    ``prefix`` tokens come first (a ViT's class and register tokens), then ``h * w`` patch
    tokens in row-major order with ``h / w`` the image's aspect ratio; the smallest prefix
    (at most 8) that makes such a grid is taken. ``None`` when none does.
    """
    for prefix in range(min(count, 9)):
        cells = count - prefix
        rows = round(math.sqrt(cells * height / width))
        if rows > 0 and cells % rows == 0:
            columns = cells // rows
            if rows * width == columns * height:
                return prefix, rows, columns
    return None


def upsample(values: torch.Tensor, height: int, width: int, stretch: bool = False) -> np.ndarray:
    """An ``[h, w]`` map resized bilinearly to ``[height, width]`` and scaled to ``[0, 1]``.

    Negative values are clipped to zero, then the map is divided by its maximum (an
    all-zero map stays zero); with ``stretch`` its minimum is subtracted first, so that
    the contrast of a nearly uniform map (an attention map) shows.
    """
    resized = F.interpolate(
        values.detach().float().cpu()[None, None],
        size=(height, width),
        mode="bilinear",
        align_corners=False,
    )[0, 0].clamp_min(0)
    if stretch:
        resized = resized - resized.min()
    top = resized.max()
    return (resized / top if top > 0 else resized).numpy()


def write_sample_figure(
    path: Path,
    picture: np.ndarray,
    overlays: Sequence[tuple[str, np.ndarray]],
    title: str,
    caption: str | None = None,
    bars: tuple[str, Sequence[str], np.ndarray] | None = None,
    alpha: float = 0.5,
) -> Path:
    """One figure per sample: the image, its heatmap overlays and an optional bar chart.

    Args:
        path: The PNG file written.
        picture: ``[H, W, 3]`` image in ``[0, 1]``.
        overlays: ``(panel title, [H, W] heatmap in [0, 1])`` drawn over the image.
        title: The figure's title (predicted and true label).
        caption: The sample's text, wrapped under the panels.
        bars: ``(panel title, labels, values)`` of a horizontal bar chart (the attention
            of the image over the text tokens).
        alpha: Opacity of the heatmaps.

    Returns:
        ``path``.
    """
    panels = 1 + len(overlays) + (bars is not None)
    figure = Figure(figsize=(PANEL_INCHES * panels, PANEL_INCHES + 1.0))
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, panels, squeeze=False)[0]
    axes[0].imshow(picture)
    axes[0].set_title("input", fontsize=8)
    for axis, (name, heat) in zip(axes[1:], overlays, strict=False):
        axis.imshow(picture)
        axis.imshow(heat, cmap="jet", alpha=alpha, vmin=0.0, vmax=1.0)
        axis.set_title(name, fontsize=8)
    for axis in axes[: 1 + len(overlays)]:
        axis.axis("off")
    if bars is not None:
        name, labels, values = bars
        axis = axes[-1]
        positions = np.arange(len(labels))
        axis.barh(positions, values, color="tab:blue")
        axis.set_yticks(positions, labels=list(labels), fontsize=6)
        axis.invert_yaxis()
        axis.set_title(name, fontsize=8)
        axis.tick_params(axis="x", labelsize=6)
    figure.suptitle(title, fontsize=9)
    if caption:
        wrapped = "\n".join(textwrap.wrap(caption, width=int(11 * PANEL_INCHES * panels))[:3])
        figure.text(0.5, 0.02, wrapped, ha="center", va="bottom", fontsize=8)
    figure.tight_layout(rect=(0, 0.12 if caption else 0, 1, 0.92))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path


def clear_figures(folder: Path) -> None:
    """Remove the PNG files a previous run of an analysis left in its folder."""
    if folder.is_dir():
        for old in folder.glob("*.png"):
            old.unlink()
