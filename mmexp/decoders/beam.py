"""Batched beam search over a step function.

The ``B * K`` rows hold ``K`` beams per sample. At each step the ``2K`` best continuations of
a sample's beams are ranked by their summed log-probability (as in transformers' beam
search): a continuation that ends (``eos``) among the first ``K`` becomes a finished
hypothesis, scored ``sum log p / length ** length_penalty`` (``length`` counts the tokens
after ``bos``, the end token included); the ``K`` best that do not end are the next beams.

A sample's search ends when it holds ``K`` finished hypotheses and none of its live beams
can still beat the best of them, whatever length it ends at (its bound is its score at
the next length or at the last one: the normalised score is monotone in the length). With
one beam the first finished hypothesis ends it, which makes ``num_beams=1`` greedy
decoding exactly (the single live beam is always the most likely token). Samples still
searching at ``max_new_tokens`` also rank their live beams, unfinished, at that length.
"""

from __future__ import annotations

import torch

from mmexp.decoders.base import SpecialIds
from mmexp.decoders.decoding import StepFunction, contract_ids


def normalised(score: float, length: int, length_penalty: float) -> float:
    """``score / length ** length_penalty``, the rank of a hypothesis of ``length`` tokens."""
    return score / length**length_penalty


def best_bound(score: float, length: int, limit: int, length_penalty: float) -> float:
    """Best rank a live beam of summed log-probability ``score`` and ``length`` tokens can reach.

    Longer continuations only lower the summed log-probability, so its rank is at most its
    current sum at the next length or at ``limit``, whichever ranks higher. At the limit the
    beam stops as it is: its rank is its own.
    """
    if length >= limit:
        return normalised(score, length, length_penalty)
    return max(normalised(score, n, length_penalty) for n in (length + 1, limit))


class Hypotheses:
    """The finished hypotheses of one sample, and whether its search is over."""

    def __init__(self, num_beams: int, length_penalty: float, limit: int) -> None:
        self.num_beams = num_beams
        self.length_penalty = length_penalty
        self.limit = limit
        self.found: list[tuple[float, list[int]]] = []
        self.done = False

    def add(self, score: float, ids: list[int]) -> None:
        """Keep a hypothesis of summed log-probability ``score``."""
        self.found.append((normalised(score, len(ids), self.length_penalty), ids))

    def close(self, best_live: float, length: int) -> None:
        """End the search if no live beam (best summed score ``best_live``) can win."""
        if not self.found:
            return
        if self.num_beams == 1:
            self.done = True
            return
        best = max(rank for rank, _ in self.found)
        bound = best_bound(best_live, length, self.limit, self.length_penalty)
        self.done = len(self.found) >= self.num_beams and best >= bound

    def best(self) -> list[int]:
        """Ids of the highest-ranked hypothesis (the first found among equals)."""
        return max(self.found, key=lambda item: item[0])[1]


def beam_search(
    step: StepFunction,
    batch: int,
    num_beams: int,
    device: torch.device,
    special: SpecialIds,
    max_new_tokens: int,
    length_penalty: float,
) -> torch.Tensor:
    """The best hypothesis of each sample, as contract ids ``[B, L]``.

    Args:
        step: Step function over ``batch * num_beams`` rows, the beams of a sample together.
        batch: Samples ``B``.
        num_beams: Beams ``K`` per sample.
        device: Device of the step function's tensors.
        special: bos, eos and pad ids.
        max_new_tokens: Tokens generated at most after bos.
        length_penalty: Exponent of the length normalisation.
    """
    k = num_beams
    rows = batch * k
    # Only the first beam of a sample is live at first: the others would repeat it.
    scores = torch.full((batch, k), float("-inf"), device=device)
    scores[:, 0] = 0.0
    seqs = torch.empty((rows, 0), dtype=torch.long, device=device)
    last = torch.full((rows,), special.bos, dtype=torch.long, device=device)
    hyps = [Hypotheses(k, length_penalty, max_new_tokens) for _ in range(batch)]
    for length in range(1, max_new_tokens + 1):
        logprobs = torch.log_softmax(step(last).float(), dim=-1)
        vocab = logprobs.shape[-1]
        totals = (scores.reshape(rows, 1) + logprobs).reshape(batch, k * vocab)
        top, index = totals.topk(min(2 * k, k * vocab), dim=-1)
        # One transfer per step: the bookkeeping below is per sample, in Python.
        top_l, index_l = top.tolist(), index.tolist()
        live: list[tuple[int, int, float]] = []
        history: list[list[int]] | None = None  # the beams' ids, fetched once if one ends
        for b, sample in enumerate(hyps):
            chosen: list[tuple[int, int, float]] = []
            if sample.done:
                # Ended: its rows idle on padding, their scores no longer matter.
                chosen = [(b * k + j, special.pad, 0.0) for j in range(k)]
            else:
                for rank, (total, flat) in enumerate(zip(top_l[b], index_l[b], strict=True)):
                    row, token = b * k + flat // vocab, flat % vocab
                    if token != special.eos:
                        chosen.append((row, token, total))
                    elif rank < k:
                        history = seqs.tolist() if history is None else history
                        sample.add(total, [*history[row], token])
                    if len(chosen) == k:
                        break
                sample.close(chosen[0][2], length)
            live += chosen
        order = torch.tensor([row for row, _, _ in live], dtype=torch.long, device=device)
        last = torch.tensor([token for _, token, _ in live], dtype=torch.long, device=device)
        seqs = torch.cat([seqs[order], last.unsqueeze(1)], dim=1)
        if all(sample.done for sample in hyps) or length == max_new_tokens:
            break
        scores = torch.tensor([total for _, _, total in live], device=device).reshape(batch, k)
        step.reorder(order)
    best = []
    for b, sample in enumerate(hyps):
        if not sample.done:
            # Still searching at the limit: its live beams compete, unfinished.
            for j in range(k):
                sample.add(live[b * k + j][2], seqs[b * k + j].tolist())
        best.append(sample.best())
    width = max(len(ids) for ids in best)
    out = torch.full((batch, width), special.pad, dtype=torch.long, device=device)
    for b, ids in enumerate(best):
        out[b, : len(ids)] = torch.tensor(ids, dtype=torch.long, device=device)
    return contract_ids(out, special.eos, special.pad)
