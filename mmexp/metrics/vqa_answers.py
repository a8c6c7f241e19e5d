"""The official VQA answer normalisation and accuracy, as ``vqaEval.py`` computes them.

From the evaluation code of the VQA challenge (GT-Vision-Lab/VQA,
``PythonEvaluationTools/vqaEvaluation/vqaEval.py``, Antol et al. 2015, Goyal et al. 2017),
ported line by line, quirks included:

* punctuation is removed where it touches a space, or everywhere once the answer holds a
  comma between digits ("1,000"); elsewhere it becomes a space ("black/white" ->
  "black white");
* a period is removed unless a digit follows it ("3.5" stays); the reference passes
  ``re.UNICODE`` as ``sub``'s positional ``count``, so at most 32 periods go;
* the answer is lower-cased, number words up to ten become digits ("two" -> "2", and
  "none" -> "0"), the articles "a", "an", "the" are dropped and contractions written
  without an apostrophe get one ("dont" -> "don't");
* the ten human answers and the prediction are normalised only when the humans disagree:
  when all ten gave the same string, it is compared as written.

The accuracy of a prediction is the mean, over the ten leave-one-out sets of nine human
answers, of ``min(#matches among the nine / 3, 1)``: 0.3, 0.6, 0.9 and 1.0 for a
prediction that 1, 2, 3 and 4 or more humans gave.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

#: The answer types of the VQA annotations (``answer_type``); batches hold indices into it.
ANSWER_TYPES: tuple[str, ...] = ("yes/no", "number", "other")

CONTRACTIONS: dict[str, str] = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've",
    "couldnt": "couldn't", "couldn'tve": "couldn't've", "couldnt've": "couldn't've",
    "didnt": "didn't", "doesnt": "doesn't", "dont": "don't", "hadnt": "hadn't",
    "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't", "havent": "haven't",
    "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've",
    "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've",
    "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've",
    "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
    "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're",
    "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've",
    "whyll": "why'll", "whyre": "why're", "whys": "why's", "wont": "won't",
    "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll",
    "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll",
    "youre": "you're", "youve": "you've",
}  # fmt: skip
MANUAL_MAP: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
ARTICLES = ("a", "an", "the")
# The reference's pattern as written: "(?!<=\d)" is a lookahead (not a lookbehind) that
# always holds before a period, so this removes every period not followed by a digit.
PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
COMMA_STRIP = re.compile(r"(\d)(\,)(\d)")
PUNCTUATION = (";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-",
               ">", "<", "@", "`", ",", "?", "!")  # fmt: skip
# What vqaEval.py passes as sub()'s count (it meant the flag).
_PERIOD_COUNT = re.UNICODE


def process_punctuation(text: str) -> str:
    """``VQAEval.processPunctuation``: drop or space out punctuation, strip periods."""
    out = text
    # Every test reads the original text, not the text as edited so far.
    digit_comma = COMMA_STRIP.search(text) is not None
    for mark in PUNCTUATION:
        if mark + " " in text or " " + mark in text or digit_comma:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return PERIOD_STRIP.sub("", out, _PERIOD_COUNT)


def process_digit_article(text: str) -> str:
    """``VQAEval.processDigitArticle``: lower case, number words, articles, contractions."""
    words = [MANUAL_MAP.get(word, word) for word in text.lower().split()]
    words = [CONTRACTIONS.get(word, word) for word in words if word not in ARTICLES]
    return " ".join(words)


def _clean(text: str) -> str:
    """Newlines and tabs as spaces, outer space stripped (done to every answer first)."""
    return text.replace("\n", " ").replace("\t", " ").strip()


@lru_cache(maxsize=1 << 18)
def normalize_answer(text: str) -> str:
    """An answer as the evaluation compares it when the humans disagree."""
    return process_digit_article(process_punctuation(_clean(text)))


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """The official accuracy (0-1) of ``prediction`` against the human ``answers``.

    Args:
        prediction: The predicted answer, as the model writes it.
        answers: The human answers of the question (ten in VQA v1/v2), as released.

    Returns:
        The mean over leave-one-out subsets of ``min(#matches / 3, 1)``.

    Raises:
        ValueError: No human answers.
    """
    if not answers:
        raise ValueError("a question needs at least one human answer")
    truth = [_clean(a) for a in answers]
    predicted = _clean(prediction)
    if len(set(truth)) > 1:
        truth = [normalize_answer(a) for a in truth]
        predicted = normalize_answer(predicted)
    matches = sum(a == predicted for a in truth)
    # Leaving out a matching answer leaves matches - 1 among the others, any other leaves
    # all of them: the reference's loop over the ten subsets, counted.
    total = sum(min(1.0, (matches - (a == predicted)) / 3) for a in truth)
    return total / len(truth)


def answer_scores(answers: Sequence[str]) -> dict[str, float]:
    """The official accuracy of predicting each normalised answer a human gave.

    The keys are the answers as an answer vocabulary holds them (normalised); every answer
    outside the keys scores 0. These are the soft targets of the bottom-up and MCAN
    models (0.3, 0.6, 0.9, 1.0 for 1, 2, 3, 4+ humans), here computed with
    :func:`vqa_accuracy` itself, so a model that predicts a key scores exactly its value.
    """
    candidates = {normalize_answer(a) for a in answers}
    scores = {c: vqa_accuracy(c, answers) for c in candidates}
    return {c: s for c, s in scores.items() if s > 0}
