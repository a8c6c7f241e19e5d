"""Decoding strategies written once against a step function: greedy, beam search, nucleus.

A decoder exposes generation as a :class:`StepFunction` over ``N`` rows (one per sample, or
one per beam): fed the last token of each row, it returns the logits of the next one and
keeps whatever it caches (keys and values of the tokens so far). Beam search also moves
rows (:meth:`StepFunction.reorder`) when beams change places. The strategies only see
logits, so built-in and Hugging Face decoders share them.

Every strategy returns ids in the decoders' contract: ``[B, L]`` after ``bos``, each row
ending at its first ``eos``, ``pad`` after it, ``L`` the longest row
(:func:`contract_ids`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch

from mmexp.decoders.base import DecodingOptions, Memory, SpecialIds


class StepFunction(Protocol):
    """Next-token logits of ``N`` rows that are being generated."""

    def __call__(self, last_ids: torch.Tensor) -> torch.Tensor:
        """Append ``last_ids`` (long ``[N]``) to the rows; logits ``[N, V]`` of what follows."""
        ...

    def reorder(self, rows: torch.Tensor) -> None:
        """Make row ``i`` a copy of former row ``rows[i]`` (long ``[N]``)."""
        ...


def contract_ids(ids: torch.Tensor, eos: int, pad: int) -> torch.Tensor:
    """``ids`` with ``pad`` after each row's first ``eos``, cut to the longest row.

    Args:
        ids: Long ``[B, T]`` generated ids after ``bos``.
        eos: End token id.
        pad: Padding id.
    """
    if ids.shape[1] == 0:
        return ids
    is_eos = ids == eos
    positions = torch.arange(ids.shape[1], device=ids.device)
    # Length of each row: up to and including its first eos, or all of it.
    first_eos = torch.where(is_eos, positions, ids.shape[1]).min(dim=1).values
    lengths = (first_eos + 1).clamp_max(ids.shape[1])
    after = positions.unsqueeze(0) >= lengths.unsqueeze(1)
    return ids.masked_fill(after, pad)[:, : int(lengths.max())]


def sample_rows(
    step: StepFunction,
    batch: int,
    device: torch.device,
    special: SpecialIds,
    max_new_tokens: int,
    choose: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """One continuation per row, each next token picked by ``choose(logits [N, V]) -> [N]``.

    Rows that have ended are fed ``pad`` and keep it; decoding stops when all have ended.
    """
    last = torch.full((batch,), special.bos, dtype=torch.long, device=device)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    out = []
    for _ in range(max_new_tokens):
        picked = choose(step(last).float())
        picked = picked.masked_fill(done, special.pad)
        out.append(picked)
        done = done | (picked == special.eos)
        if bool(done.all()):
            break
        last = picked
    return contract_ids(torch.stack(out, dim=1), special.eos, special.pad)


def greedy(
    step: StepFunction, batch: int, device: torch.device, special: SpecialIds, max_new_tokens: int
) -> torch.Tensor:
    """The most likely token at every step."""
    return sample_rows(
        step, batch, device, special, max_new_tokens, lambda logits: logits.argmax(dim=-1)
    )


def nucleus_filter(logits: torch.Tensor, top_p: float, temperature: float) -> torch.Tensor:
    """Log-probabilities ``[N, V]`` restricted to each row's nucleus (``-inf`` elsewhere).

    The nucleus is the smallest set of most likely tokens whose probability (after dividing
    the logits by ``temperature``) sums to at least ``top_p`` (Holtzman et al. 2020).
    """
    logprobs = torch.log_softmax(logits / temperature, dim=-1)
    sorted_logprobs, order = logprobs.sort(dim=-1, descending=True)
    cumulative = sorted_logprobs.exp().cumsum(dim=-1)
    # A token is in the nucleus when the tokens before it sum to less than top_p; the most
    # likely token always is.
    outside = (cumulative - sorted_logprobs.exp()) >= top_p
    outside[:, 0] = False
    filtered = sorted_logprobs.masked_fill(outside, float("-inf"))
    return torch.full_like(logprobs, float("-inf")).scatter(-1, order, filtered)


def nucleus(
    step: StepFunction,
    batch: int,
    device: torch.device,
    special: SpecialIds,
    max_new_tokens: int,
    top_p: float,
    temperature: float,
    seed: int,
) -> torch.Tensor:
    """Top-p sampling, reproducible: its own generator, seeded with ``seed``."""
    generator = torch.Generator(device=device).manual_seed(seed)

    def choose(logits: torch.Tensor) -> torch.Tensor:
        probs = nucleus_filter(logits, top_p, temperature).exp()
        return torch.multinomial(probs, 1, generator=generator).squeeze(1)

    return sample_rows(step, batch, device, special, max_new_tokens, choose)


def decode_memory(
    stepper: Callable[[Memory], StepFunction],
    memory: Memory,
    options: DecodingOptions,
    special: SpecialIds,
    max_new_tokens: int | None = None,
) -> torch.Tensor:
    """Generate from ``memory`` with the strategy of ``options``.

    Args:
        stepper: Builds the step function of a memory (one row per memory sample).
        memory: The batch's memory.
        options: Strategy and its settings.
        special: bos, eos and pad ids.
        max_new_tokens: Limit on generated tokens; ``options.max_new_tokens`` if ``None``.

    Returns:
        Long ``[B, L]`` ids in the contract's format (:func:`contract_ids`).
    """
    from mmexp.decoders.beam import beam_search

    limit = options.max_new_tokens if max_new_tokens is None else max_new_tokens
    batch, device = memory.tokens.shape[0], memory.tokens.device
    if options.strategy == "greedy":
        return greedy(stepper(memory), batch, device, special, limit)
    if options.strategy == "nucleus":
        return nucleus(
            stepper(memory),
            batch,
            device,
            special,
            limit,
            options.top_p,
            options.temperature,
            options.seed,
        )
    beams = options.num_beams
    return beam_search(
        stepper(memory.repeat_interleave(beams)),
        batch,
        beams,
        device,
        special,
        limit,
        options.length_penalty,
    )
