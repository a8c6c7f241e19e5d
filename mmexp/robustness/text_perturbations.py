"""Seeded text perturbations at a strength ``level`` in [0, 1]: typos, word dropout, swaps.

After MultiBench's text noise (Liang et al., NeurIPS 2021). Words are the whitespace-separated
parts of the text; a perturbed text joins them with single spaces. Each word's random draws
do not depend on the level (see :mod:`mmexp.robustness.perturbation_base`), so the words hit
at one level are among those hit at any higher level.
"""

from __future__ import annotations

import string
from typing import Any

import numpy as np

from mmexp.robustness.perturbation_base import Perturbation

# QWERTY rows; each row sits about half a key right of the one above it.
_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")


def _keyboard_neighbours() -> dict[str, str]:
    """Keys next to each letter: same row either side, the two touching in the rows around."""
    neighbours: dict[str, str] = {}
    for row, keys in enumerate(_ROWS):
        for column, key in enumerate(keys):
            near = [keys[c] for c in (column - 1, column + 1) if 0 <= c < len(keys)]
            if row > 0:  # the row above is shifted left: its keys column and column + 1
                near += [_ROWS[row - 1][c] for c in (column, column + 1) if c < len(_ROWS[row - 1])]
            if row + 1 < len(_ROWS):  # the row below is shifted right: column - 1 and column
                near += [
                    _ROWS[row + 1][c] for c in (column - 1, column) if 0 <= c < len(_ROWS[row + 1])
                ]
            neighbours[key] = "".join(near)
    return neighbours


_NEIGHBOURS = _keyboard_neighbours()


def _same_case(char: str, like: str) -> str:
    return char.upper() if like.isupper() else char


def _typo(word: str, operation: int, where: float, pick: float) -> str:
    """One character edit of ``word``: 0 swap, 1 delete, 2 insert, 3 replace.

    ``where`` and ``pick`` in ``[0, 1)`` choose the position and the new character. An edit
    that would leave the word as it was (swapping equal letters) or remove it (deleting its
    only character) becomes a replacement, so that a hit word always changes.
    """
    if operation == 0:
        pairs = [i for i in range(len(word) - 1) if word[i] != word[i + 1]]
        if pairs:
            i = pairs[int(where * len(pairs))]
            return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    elif operation == 1 and len(word) > 1:
        i = int(where * len(word))
        return word[:i] + word[i + 1 :]
    elif operation == 2:
        i = int(where * (len(word) + 1))
        letter = string.ascii_lowercase[int(pick * 26)]
        return word[:i] + _same_case(letter, word[min(i, len(word) - 1)]) + word[i:]
    # Replacement: a neighbouring key for letters (a slip of the finger), else any letter.
    i = int(where * len(word))
    char = word[i]
    choices = _NEIGHBOURS.get(char.lower()) or string.ascii_lowercase.replace(char.lower(), "")
    return word[:i] + _same_case(choices[int(pick * len(choices))], char) + word[i + 1 :]


class Typos(Perturbation):
    """Each word, with probability ``level``, gets one character edit.

    The edit is a swap of adjacent characters, a deletion, an insertion of a random letter or
    a replacement by a neighbouring key, chosen uniformly (MultiBench's typo, omission and
    sticky-key noise).
    """

    name = "typos"
    modality_kinds = ("text",)
    value_kinds = ("text",)

    def apply(self, value: Any, kind: str, rng: np.random.Generator) -> Any:  # noqa: D102
        words = value.split()
        hit, where, pick = rng.random((3, len(words)))
        operation = rng.integers(4, size=len(words))
        return " ".join(
            _typo(word, int(op), float(at), float(p)) if h < self.level else word
            for word, h, op, at, p in zip(words, hit, operation, where, pick, strict=True)
        )


class WordDropout(Perturbation):
    """Each word is dropped with probability ``level``; at least one word is always kept.

    When every word would go, the one that a higher level would drop last is kept, so that a
    text is never emptied (an empty text would not exercise the text encoder at all).
    """

    name = "word_dropout"
    modality_kinds = ("text",)
    value_kinds = ("text",)

    def apply(self, value: Any, kind: str, rng: np.random.Generator) -> Any:  # noqa: D102
        words = value.split()
        if not words:
            return value
        draws = rng.random(len(words))
        keep = draws >= self.level
        if not keep.any():
            keep[int(np.argmax(draws))] = True
        return " ".join(word for word, kept in zip(words, keep, strict=True) if kept)


class WordSwap(Perturbation):
    """Adjacent words swap places with probability ``level`` at each word boundary.

    Boundaries are visited left to right and a swapped pair is not swapped again, so that a
    word moves by one place at most.
    """

    name = "word_swap"
    modality_kinds = ("text",)
    value_kinds = ("text",)

    def apply(self, value: Any, kind: str, rng: np.random.Generator) -> Any:  # noqa: D102
        words = value.split()
        draws = rng.random(max(len(words) - 1, 0))
        i = 0
        while i < len(words) - 1:
            if draws[i] < self.level:
                words[i], words[i + 1] = words[i + 1], words[i]
                i += 2
            else:
                i += 1
        return " ".join(words)
