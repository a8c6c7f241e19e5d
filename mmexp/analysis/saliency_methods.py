"""Pixel attributions of the image encoder for a score of the whole model.

A method gets the image encoder, a function from a batch of images to one score per image
(the model's predicted-class logit, with the batch's other modalities as they are) and the
images, and returns one ``[H, W]`` map per image:

* :class:`GradCAM` (Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
  Gradient-based Localization", ICCV 2017): the channels of a convolutional layer's output
  weighted by the spatial mean of the score's gradient with respect to them, summed, ReLU,
  upsampled bilinearly to the image. The activations and their gradients are taken with
  hooks on that layer (``register_forward_hook`` and ``register_full_backward_hook``);
* :class:`GradientTimesInput` (Shrikumar et al., "Not Just a Black Box", 2016): the gradient
  of the score with respect to the input pixels times the pixels, summed over the colour
  channels; for any image encoder, ViTs included.

Both take the gradients with ``torch.autograd.grad`` with respect to the images, so the
parameters' ``.grad`` are left as they were, and samples stay independent (the model is in
eval mode).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import nn
from torch.nn import functional as F

Score = Callable[[torch.Tensor], torch.Tensor]


class SaliencyMethod(Protocol):
    """What the saliency analysis needs of a method (injected as ``method``)."""

    name: str

    def blocker(self, encoder: nn.Module) -> str | None:
        """Why the method does not apply to ``encoder``, or ``None`` when it does."""
        ...

    def attribute(
        self, encoder: nn.Module, score: Score, images: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """``[B, H, W]`` attributions of ``score(images)`` and what the output records."""
        ...

    def heat(self, attribution: torch.Tensor) -> torch.Tensor:
        """The non-negative ``[H, W]`` map drawn over the image."""
        ...


def _pixel_gradient(score: Score, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images that require grad, d sum(score) / d images)``."""
    pixels = images.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        (gradient,) = torch.autograd.grad(score(pixels).sum(), pixels)
    return pixels.detach(), gradient


class GradCAM:
    """Grad-CAM on a convolutional layer of the image encoder.

    Args:
        layer: The layer, as a dotted module name inside the image encoder (what
            ``encoder.get_submodule`` takes). ``None``: the encoder's last ``nn.Conv2d`` in
            registration order (for ``image_cnn``, ``stages.<last>.3``; for a timm ResNet,
            the last block's last convolution). For timm CNNs the output of the last stage
            is the usual choice: ``backbone.layer4`` (ResNet), ``backbone.stages.3``
            (ConvNeXt). A layer whose output is changed in place afterwards (one followed by
            an in-place ReLU) cannot be hooked; take the block around it. On a ViT the last
            convolution is the patch embedding, which attributes only through the patches'
            gradients: use :class:`GradientTimesInput` there.
    """

    name = "gradcam"

    def __init__(self, layer: str | None = None) -> None:
        self.layer = layer

    def target(self, encoder: nn.Module) -> tuple[str, nn.Module]:
        """The hooked layer's name and module.

        Raises:
            ValueError: ``layer`` names no module of the encoder, or there is no ``Conv2d``.
        """
        if self.layer is not None:
            try:
                return self.layer, encoder.get_submodule(self.layer)
            except AttributeError:
                names = [n for n, m in encoder.named_modules() if isinstance(m, nn.Conv2d)]
                raise ValueError(
                    f"analysis.saliency.method.layer={self.layer!r} is not a module of the "
                    f"image encoder; its convolutions: {names[-5:]}"
                ) from None
        convolutions = [(n, m) for n, m in encoder.named_modules() if isinstance(m, nn.Conv2d)]
        if not convolutions:
            raise ValueError("the image encoder has no Conv2d layer")
        return convolutions[-1]

    def blocker(self, encoder: nn.Module) -> str | None:
        """Why Grad-CAM does not apply: no convolution to hook (a ViT without one)."""
        try:
            self.target(encoder)
        except ValueError as error:
            return f"{error}; use the gradient x input method"
        return None

    def attribute(
        self, encoder: nn.Module, score: Score, images: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """Grad-CAM maps ``[B, H, W]`` of ``score(images)``, and the layer's name.

        Raises:
            RuntimeError: The layer was not run, or its gradient did not reach it.
        """
        name, layer = self.target(encoder)
        seen: dict[str, torch.Tensor] = {}

        def keep_output(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            seen["activation"] = output.detach()

        def keep_gradient(module: nn.Module, grad_input: Any, grad_output: Any) -> None:
            seen["gradient"] = grad_output[0].detach()

        hooks = [
            layer.register_forward_hook(keep_output),
            layer.register_full_backward_hook(keep_gradient),
        ]
        try:
            _pixel_gradient(score, images)
        finally:
            for hook in hooks:
                hook.remove()
        if "activation" not in seen or "gradient" not in seen:
            raise RuntimeError(f"Grad-CAM: layer {name!r} got no activation or gradient")
        activation, gradient = seen["activation"], seen["gradient"]
        if activation.dim() != 4:
            raise RuntimeError(
                f"Grad-CAM: layer {name!r} returns {tuple(activation.shape)}, not [B, C, h, w]"
            )
        weights = gradient.mean(dim=(2, 3), keepdim=True)
        cam = (weights * activation).sum(dim=1).clamp_min(0)
        maps = F.interpolate(
            cam[:, None], size=images.shape[-2:], mode="bilinear", align_corners=False
        )[:, 0]
        return maps, {"layer": name, "layer_shape": list(activation.shape[1:])}

    def heat(self, attribution: torch.Tensor) -> torch.Tensor:
        """The map itself (non-negative already)."""
        return attribution


class GradientTimesInput:
    """Gradient of the score with respect to the pixels, times the pixels (any encoder).

    The pixels are the model's inputs after preprocessing (normalised), so the baseline the
    attribution is relative to is the normalisation's mean image. The drawn map is the
    magnitude of the attribution.
    """

    name = "gradient_x_input"

    def blocker(self, encoder: nn.Module) -> str | None:
        """Always applies."""
        return None

    def attribute(
        self, encoder: nn.Module, score: Score, images: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """``sum_c x * d score / d x``, ``[B, H, W]`` (signed)."""
        pixels, gradient = _pixel_gradient(score, images)
        return (gradient * pixels).sum(dim=1), {}

    def heat(self, attribution: torch.Tensor) -> torch.Tensor:
        """The magnitude of the attribution."""
        return attribution.abs()


def predicted_scores(outputs: torch.Tensor) -> torch.Tensor:
    """The score explained, one per sample: the predicted-class logit, or the one output."""
    if outputs.dim() == 1:
        return outputs
    if outputs.shape[1] == 1:
        return outputs[:, 0]
    return outputs.gather(1, outputs.detach().argmax(dim=1, keepdim=True))[:, 0]
