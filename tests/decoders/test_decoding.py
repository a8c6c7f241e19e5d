"""The decoding strategies on step functions whose probabilities are known."""

import itertools
import math

import pytest
import torch

from mmexp.decoders.base import SpecialIds
from mmexp.decoders.beam import beam_search
from mmexp.decoders.decoding import contract_ids, greedy, nucleus

BOS, A, B, EOS = 0, 1, 2, 3
SPECIAL = SpecialIds(bos=BOS, eos=EOS, pad=EOS)
CPU = torch.device("cpu")

# Next-token probabilities of [bos, a, b, eos] after each prefix, one table per sample.
# Sample 0: greedy takes "a" (0.55), but "b eos" (0.40 * 0.90) beats every continuation.
# Sample 1: greedy takes "b" (0.60), but "a b eos" (0.35 * 0.95 * 0.95) is best.
# Sample 2: both beams end at step 2, yet with a length penalty the unfinished "a a a" ranks
# first at the limit.
TABLES = [
    {
        (): [0.01, 0.55, 0.40, 0.04],
        (A,): [0.20, 0.30, 0.26, 0.24],
        (B,): [0.04, 0.03, 0.03, 0.90],
    },
    {
        (): [0.02, 0.35, 0.60, 0.03],
        (B,): [0.10, 0.40, 0.30, 0.20],
        (A,): [0.02, 0.01, 0.95, 0.02],
        (A, B): [0.02, 0.02, 0.01, 0.95],
    },
    {
        (): [0.01, 0.50, 0.45, 0.04],
        (A,): [0.005, 0.39, 0.005, 0.60],
        (B,): [0.005, 0.005, 0.39, 0.60],
        (A, A): [0.01, 0.98, 0.005, 0.005],
        (B, B): [0.01, 0.005, 0.98, 0.005],
    },
]
OTHERWISE = [0.10, 0.35, 0.30, 0.25]


def logprob(sample: int, prefix: tuple[int, ...], token: int) -> float:
    return math.log(TABLES[sample].get(prefix, OTHERWISE)[token])


class TableSteps:
    """Step function over ``samples * per_sample`` rows reading :data:`TABLES`."""

    def __init__(self, samples: int, per_sample: int) -> None:
        self.per_sample = per_sample
        self.prefixes: list[tuple[int, ...] | None] = [None] * (samples * per_sample)
        self.calls = 0

    def __call__(self, last_ids):
        self.calls += 1
        rows = []
        for row, token in enumerate(last_ids.tolist()):
            prefix = self.prefixes[row]
            # The first call feeds bos, which is not part of the table's prefixes.
            prefix = () if prefix is None else (*prefix, token)
            self.prefixes[row] = prefix
            probs = TABLES[row // self.per_sample].get(prefix, OTHERWISE)
            rows.append(torch.tensor(probs).log())
        return torch.stack(rows)

    def reorder(self, rows):
        self.prefixes = [self.prefixes[i] for i in rows.tolist()]


def best_by_brute_force(sample: int, max_len: int, length_penalty: float = 0.0) -> list[int]:
    """The best-ranked sequence of at most ``max_len`` tokens (ended by eos or the limit)."""
    candidates = []
    for length in range(1, max_len + 1):
        for body in itertools.product(range(4), repeat=length - 1):
            if EOS in body:
                continue
            ends = [EOS] if length < max_len else list(range(4))
            candidates += [[*body, last] for last in ends]
    scored = [
        (sum(logprob(sample, tuple(seq[:i]), t) for i, t in enumerate(seq)), seq)
        for seq in candidates
    ]
    return max((score / len(seq) ** length_penalty, seq) for score, seq in scored)[1]


def as_rows(ids: torch.Tensor) -> list[list[int]]:
    """Rows cut after their first eos (the contract pads with eos here)."""
    rows = []
    for row in ids.tolist():
        rows.append(row[: row.index(EOS) + 1] if EOS in row else row)
    return rows


def test_beam_search_finds_the_best_sequence_where_greedy_does_not():
    best = [best_by_brute_force(sample, 3) for sample in range(3)]
    assert best[:2] == [[B, EOS], [A, B, EOS]]
    beams = beam_search(TableSteps(3, 2), 3, 2, CPU, SPECIAL, 3, length_penalty=0.0)
    assert as_rows(beams) == best
    greedy_rows = as_rows(greedy(TableSteps(3, 1), 3, CPU, SPECIAL, 3))
    assert greedy_rows[0] != best[0] and greedy_rows[1] != best[1]


@pytest.mark.parametrize("length_penalty", [1.0, 2.0])
def test_beam_search_ranks_unfinished_beams_at_the_limit(length_penalty):
    best = [best_by_brute_force(sample, 3, length_penalty) for sample in range(3)]
    assert best[2] == [A, A, A]
    beams = beam_search(TableSteps(3, 2), 3, 2, CPU, SPECIAL, 3, length_penalty)
    assert as_rows(beams) == best


@pytest.mark.parametrize("length_penalty", [0.0, 1.0, 2.0])
def test_one_beam_is_greedy_decoding(length_penalty):
    greedy_ids = greedy(TableSteps(3, 1), 3, CPU, SPECIAL, 3)
    beam_ids = beam_search(TableSteps(3, 1), 3, 1, CPU, SPECIAL, 3, length_penalty)
    assert torch.equal(beam_ids, greedy_ids)


def test_length_penalty_favours_longer_hypotheses():
    # Sample 0 at length penalty 0 prefers "b eos" (2 tokens); a strong penalty on short
    # hypotheses ranks a 3-token one first.
    short = as_rows(beam_search(TableSteps(3, 3), 3, 3, CPU, SPECIAL, 3, 0.0))[0]
    long = as_rows(beam_search(TableSteps(3, 3), 3, 3, CPU, SPECIAL, 3, 8.0))[0]
    assert len(short) == 2 and len(long) == 3


class FixedSteps:
    """Every row, every step: the same next-token probabilities."""

    def __init__(self, probs: list[float], rows: int) -> None:
        self.logits = torch.tensor(probs).log().expand(rows, -1)
        self.steps = 0

    def __call__(self, last_ids):
        self.steps += 1
        return self.logits

    def reorder(self, rows):
        pass


PROBS = [0.5, 0.3, 0.15, 0.05]  # eos (3) is outside every nucleus below


def test_nucleus_samples_only_from_the_top_p_set():
    special = SpecialIds(bos=0, eos=3, pad=3)
    ids = nucleus(FixedSteps(PROBS, 200), 200, CPU, special, 20, 0.7, 1.0, seed=0)
    assert ids.shape == (200, 20)
    counts = torch.bincount(ids.flatten(), minlength=4)
    assert counts[2] == 0 and counts[3] == 0
    # Renormalised nucleus: 0.5 / 0.8 and 0.3 / 0.8.
    assert abs(counts[0] / counts.sum() - 0.625) < 0.03


def test_temperature_is_applied_before_the_nucleus():
    # At temperature 2 the probabilities flatten to about [0.38, 0.29, 0.21, 0.12]: the
    # 0.7 nucleus now holds token 2, and still not token 3.
    special = SpecialIds(bos=0, eos=3, pad=3)
    ids = nucleus(FixedSteps(PROBS, 200), 200, CPU, special, 20, 0.7, 2.0, seed=0)
    counts = torch.bincount(ids.flatten(), minlength=4)
    assert counts[2] > 0 and counts[3] == 0


def test_nucleus_is_reproducible_with_its_seed():
    special = SpecialIds(bos=0, eos=3, pad=3)
    probs = [0.3, 0.3, 0.2, 0.2]

    def draw(seed):
        return nucleus(FixedSteps(probs, 8), 8, CPU, special, 12, 0.95, 1.0, seed)

    torch.manual_seed(123)  # the global generator plays no part
    first = draw(5)
    torch.manual_seed(456)
    assert torch.equal(draw(5), first)
    assert not torch.equal(draw(6), first)


def test_generation_stops_at_max_new_tokens():
    special = SpecialIds(bos=0, eos=3, pad=3)
    steps = FixedSteps(PROBS, 2)
    assert greedy(steps, 2, CPU, special, 5).shape == (2, 5)
    assert steps.steps == 5
    beams = beam_search(FixedSteps(PROBS, 6), 2, 3, CPU, special, 4, 1.0)
    assert beams.shape == (2, 4)


def test_contract_ids_pad_after_the_first_eos_and_cut_to_the_longest_row():
    ids = torch.tensor([[5, 3, 7, 8], [5, 6, 3, 8], [3, 4, 4, 4]])
    assert contract_ids(ids, eos=3, pad=0).tolist() == [[5, 3, 0], [5, 6, 3], [3, 0, 0]]
    full = torch.tensor([[5, 3, 7], [5, 6, 7]])
    assert contract_ids(full, eos=3, pad=0).tolist() == [[5, 3, 0], [5, 6, 7]]
