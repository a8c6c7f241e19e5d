"""Encoder outputs gathered over a whole evaluation set and re-batched by sample index.

The analyses that recombine samples (EMAP pairs the text of one sample with the image of
another; Shapley values score each sample under every subset of its modalities) work on one
feature dict for the whole set. Batches of a data loader are padded to their own longest
sequence, so :func:`concat_outputs` pads them to a common length first; :func:`select_rows`
then builds a batch of any rows, in any order, repeats allowed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch

from mmexp.encoders.base import EncoderOutput

Features = Mapping[str, EncoderOutput]
Predict = Callable[[Features], torch.Tensor]


def concat_outputs(outputs: Sequence[EncoderOutput]) -> EncoderOutput:
    """Concatenate the outputs of one modality over batches along the batch dimension.

    Token sequences are padded with zeros to the longest ``T`` among the batches and the
    mask is ``False`` on that padding, so every consumer that honours the mask (all fusion
    strategies do) sees each sample exactly as in its own batch.

    Args:
        outputs: Outputs of one modality, one per batch, all of the same width ``D``.

    Returns:
        One output over every sample, in the order given. ``present`` is ``None`` when it is
        ``None`` in every batch (every sample has the modality), else the concatenated mask.

    Raises:
        ValueError: No outputs, or outputs of different widths.
    """
    if not outputs:
        raise ValueError("concat_outputs needs at least one EncoderOutput")
    widths = {out.tokens.shape[-1] for out in outputs}
    if len(widths) != 1:
        raise ValueError(f"cannot concatenate encoder outputs of different widths {widths}")
    length = max(out.tokens.shape[1] for out in outputs)
    tokens, masks = [], []
    for out in outputs:
        pad = length - out.tokens.shape[1]
        # F.pad pads the last dims first: (D before, D after, T before, T after).
        tokens.append(torch.nn.functional.pad(out.tokens, (0, 0, 0, pad)))
        masks.append(torch.nn.functional.pad(out.mask.bool(), (0, pad), value=False))
    present = None
    if any(out.present is not None for out in outputs):
        present = torch.cat([out.present_mask() for out in outputs])
    return EncoderOutput(
        tokens=torch.cat(tokens),
        mask=torch.cat(masks),
        pooled=torch.cat([out.pooled for out in outputs]),
        present=present,
    )


def concat_features(batches: Sequence[Features]) -> dict[str, EncoderOutput]:
    """:func:`concat_outputs` for every modality of a sequence of per-batch feature dicts.

    Raises:
        ValueError: No batches, or batches with different modalities.
    """
    if not batches:
        raise ValueError("concat_features needs at least one batch of features")
    names = list(batches[0])
    for batch in batches[1:]:
        if sorted(batch) != sorted(names):
            raise ValueError(
                f"every batch must have the same modalities: {sorted(names)} vs {sorted(batch)}"
            )
    return {name: concat_outputs([batch[name] for batch in batches]) for name in names}


def num_samples(features: Features) -> int:
    """The common batch size of the outputs in ``features``.

    Raises:
        ValueError: No modality, or modalities with different numbers of samples.
    """
    if not features:
        raise ValueError("features hold no modality")
    sizes = {name: out.tokens.shape[0] for name, out in features.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"modalities hold different numbers of samples: {sizes}")
    return next(iter(sizes.values()))


def select_rows(output: EncoderOutput, index: torch.Tensor) -> EncoderOutput:
    """The rows ``index`` (a 1-D integer tensor) of every field of ``output``."""
    index = index.to(output.tokens.device)
    present = None if output.present is None else output.present[index]
    return EncoderOutput(
        tokens=output.tokens[index],
        mask=output.mask[index],
        pooled=output.pooled[index],
        present=present,
    )


def predict_rows(
    features: Features, predict: Predict, index: torch.Tensor, batch_size: int
) -> torch.Tensor:
    """``predict`` on the rows ``index`` of ``features``, ``batch_size`` rows at a time.

    Runs without gradient tracking: the analyses only read the outputs, and the graph of
    many batches would not fit in memory.

    Returns:
        The outputs concatenated over the chunks, ``[len(index), ...]``.

    Raises:
        ValueError: ``batch_size`` is not positive or ``index`` is empty.
    """
    check_batch_size(batch_size)
    if index.numel() == 0:
        raise ValueError("predict_rows needs at least one row")
    outputs = []
    with torch.no_grad():
        for chunk in index.split(batch_size):
            outputs.append(predict({m: select_rows(out, chunk) for m, out in features.items()}))
    return torch.cat(outputs)


def check_batch_size(batch_size: int) -> None:
    """Raise a ``ValueError`` unless ``batch_size`` is a positive integer."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
