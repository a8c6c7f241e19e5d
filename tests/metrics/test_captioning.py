"""Caption metrics: hand-computed BLEU, independent CIDEr-D and ROUGE-L, input errors, no Java."""

import functools
import logging
import math
import pickle
from collections import Counter

import numpy as np
import pytest

from mmexp.metrics.caption_accumulator import CaptionMetrics
from mmexp.metrics.caption_tokenize import find_java
from mmexp.metrics.captioning import (
    CaptionIdError,
    CaptionScores,
    JavaNotFoundError,
    caption_scores,
)
from tests.helpers import caption_metric_runs as workers

FAST = workers.FAST
needs_java = pytest.mark.skipif(find_java() is None, reason="no Java runtime")


def scores(predictions, references, **kwargs):
    return caption_scores(predictions, references, metrics=FAST, **kwargs)


@needs_java
def test_a_prediction_equal_to_its_references_scores_one():
    references = {1: ["A dog runs on the beach."], 2: ["Two cats sleep on a red sofa."]}
    predictions = {1: "a dog runs on the beach", 2: "two cats sleep on a red sofa ."}
    values = scores(predictions, references)
    for n in (1, 2, 3, 4):
        assert values[f"bleu{n}"] == pytest.approx(1.0, rel=1e-6)
    assert values["rouge_l"] == pytest.approx(1.0)


def test_bleu_1_and_2_by_hand():
    references = {
        "a": ["the cat is on the mat", "there is a cat on the mat"],
        "b": ["a dog is running in the park", "the dog runs fast."],
    }
    predictions = {"a": "the cat sat on the mat", "b": "a dog runs"}
    # Image a: unigrams the x2, cat, sat, on, mat; clipped to the references' maxima:
    # the 2, cat 1, sat 0, on 1, mat 1 -> 5 of 6. Bigrams "the cat", "cat sat", "sat on",
    # "on the", "the mat": 3 of 5 in a reference. Closest reference length: 6.
    # Image b: a, dog, runs all matched -> 3 of 3; "a dog", "dog runs" -> 2 of 2; closest
    # reference length to 3 words is 4 ("the dog runs fast", the full stop dropped).
    precision_1 = (5 + 3) / (6 + 3)
    precision_2 = (3 + 2) / (5 + 2)
    candidate_length, reference_length = 6 + 3, 6 + 4
    brevity = math.exp(1 - reference_length / candidate_length)  # corpus level, c < r
    values = scores(predictions, references)
    assert values["bleu1"] == pytest.approx(brevity * precision_1, rel=1e-7)
    assert values["bleu2"] == pytest.approx(
        brevity * math.sqrt(precision_1 * precision_2), rel=1e-7
    )


def _ngrams(words: list[str], n: int) -> Counter:
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def cider_d(predictions: dict, references: dict, sigma: float = 6.0) -> float:
    """CIDEr-D (Vedantam et al., 2015) as the COCO toolkit defines it, in NumPy.

    tf-idf vectors per n-gram length (raw counts; idf from the number of images whose
    references hold the n-gram), the candidate's weights clipped at the reference's, a
    Gaussian penalty on the length difference, mean over n = 1..4 and references, x10.
    """
    images = list(references)
    total = 0.0
    for image in images:
        candidate = predictions[image].split()
        per_reference = []
        for reference in (r.split() for r in references[image]):
            similarity = []
            for n in range(1, 5):
                df = Counter(
                    g
                    for i in images
                    for g in set().union(*(_ngrams(r.split(), n) for r in references[i]))
                )
                c, r = _ngrams(candidate, n), _ngrams(reference, n)
                vocabulary = sorted(set(c) | set(r))
                idf = np.array([np.log(len(images) / max(1.0, df[g])) for g in vocabulary])
                vc = np.array([c[g] for g in vocabulary], dtype=float) * idf
                vr = np.array([r[g] for g in vocabulary], dtype=float) * idf
                norms = np.linalg.norm(vc) * np.linalg.norm(vr)
                similarity.append(np.minimum(vc, vr) @ vr / norms if norms > 0 else 0.0)
            penalty = np.exp(-((len(candidate) - len(reference)) ** 2) / (2 * sigma**2))
            per_reference.append(penalty * np.mean(similarity))
        total += 10 * np.mean(per_reference)
    return total / len(images)


def test_cider_d_equals_an_independent_implementation():
    references = {
        1: ["a cat sits on the red mat", "a small cat on a mat", "the cat is sitting on a mat"],
        2: ["a dog runs on the green grass", "the brown dog is running", "a dog running in a park"],
    }
    predictions = {1: "a cat sitting on a mat", 2: "a dog is running on the grass grass"}
    expected = cider_d(predictions, references)
    assert 0.5 < expected < 10  # neither trivial nor saturated
    assert scores(predictions, references)["cider"] == pytest.approx(expected, rel=1e-9)


def rouge_l(candidate: list[str], references: list[list[str]], beta: float = 1.2) -> float:
    @functools.cache
    def lcs(i: int, j: int, k: int) -> int:  # of candidate[i:] and references[k][j:]
        reference = references[k]
        if i == len(candidate) or j == len(reference):
            return 0
        if candidate[i] == reference[j]:
            return 1 + lcs(i + 1, j + 1, k)
        return max(lcs(i + 1, j, k), lcs(i, j + 1, k))

    common = [lcs(0, 0, k) for k in range(len(references))]
    # The toolkit takes the best precision and the best recall, possibly of two references.
    precision = max(m / len(candidate) for m in common)
    recall = max(m / len(r) for m, r in zip(common, references, strict=True))
    if precision == 0 or recall == 0:
        return 0.0
    return (1 + beta**2) * precision * recall / (recall + beta**2 * precision)


def test_rouge_l_equals_an_independent_lcs():
    references = {
        1: ["a man rides a brown horse on a beach", "a horse and rider by the sea"],
        2: ["people walk across a busy street", "a crowd crossing the road"],
        3: ["a bowl of soup"],
    }
    predictions = {1: "a man riding a horse by the sea", 2: "a street with cars", 3: "pizza"}
    expected = np.mean(
        [rouge_l(predictions[i].split(), [r.split() for r in references[i]]) for i in references]
    )
    assert 0.2 < expected < 0.9
    assert scores(predictions, references)["rouge_l"] == pytest.approx(expected, rel=1e-12)


def test_images_without_a_prediction_or_references_are_named():
    references = {i: ["a caption"] for i in range(8)}
    with pytest.raises(CaptionIdError, match=r"no prediction for images 0, 1, 2, 3, 4 and 3 more"):
        scores({}, references)
    with pytest.raises(CaptionIdError, match=r"no references for images 'x'"):
        scores({**{i: "a caption" for i in range(8)}, "x": "extra"}, references)


@pytest.mark.parametrize("bad", [["a dog", "   "], [""], [], ["..."]])
def test_an_empty_reference_names_its_image(bad):
    with pytest.raises(ValueError, match="image 'img7'"):
        scores({"img7": "a dog", 1: "a cat"}, {"img7": bad, 1: ["a cat"]})


def test_references_must_be_lists_of_strings():
    with pytest.raises(TypeError, match="image 1"):
        scores({1: "a dog"}, {1: "a dog runs"})


def test_empty_predictions_are_scored_not_lost():
    references = {1: ["a dog runs"], 2: ["a cat sleeps"], 3: ["a bird sings"]}
    values = scores({1: "a dog runs", 2: "a cat sleeps", 3: "..."}, references)  # last empty
    assert values["rouge_l"] == pytest.approx(2 / 3)


@needs_java
def test_line_breaks_inside_a_caption_do_not_shift_the_others():
    references = {1: ["a dog\rruns"], 2: ["a cat sleeps"]}
    clean = scores({1: "a dog runs", 2: "a cat sleeps"}, {1: ["a dog runs"], 2: ["a cat sleeps"]})
    assert scores({1: "a dog\u2028runs", 2: "a cat sleeps"}, references) == clean


def test_unknown_metric_names_raise():
    with pytest.raises(ValueError, match="unknown caption metrics"):
        caption_scores({1: "a"}, {1: ["a"]}, metrics=["bleu", "cidr"])


@pytest.fixture
def no_java(monkeypatch, tmp_path):
    """A PATH with a ``java`` that does not run: as good as none."""
    fake = tmp_path / "java"
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))


def test_without_java_meteor_raises_saying_what_to_install(no_java):
    with pytest.raises(JavaNotFoundError, match="apt-get install default-jre-headless") as error:
        caption_scores(workers.PREDICTIONS, workers.REFERENCES)
    assert "metrics=['bleu', 'rouge_l', 'cider']" in str(error.value)
    with pytest.raises(JavaNotFoundError, match="METEOR"):
        CaptionMetrics(prefix="val/")  # before any training


def test_without_java_bleu_rouge_and_cider_are_still_reported(no_java, caplog):
    with caplog.at_level(logging.WARNING):
        partial = caption_scores(workers.PREDICTIONS, workers.REFERENCES, on_missing_java="partial")
    assert set(partial) == {"bleu1", "bleu2", "bleu3", "bleu4", "rouge_l", "cider"}
    assert partial.missing == ("meteor",)
    assert "default-jre-headless" in caplog.text and "may differ slightly" in caplog.text
    assert scores(workers.PREDICTIONS, workers.REFERENCES) == pytest.approx(partial)


@needs_java
def test_the_python_tokenizer_scores_like_the_java_one_on_plain_captions(monkeypatch):
    java = scores(workers.PREDICTIONS, workers.REFERENCES)
    monkeypatch.setattr("mmexp.metrics.captioning.find_java", lambda: None)
    assert scores(workers.PREDICTIONS, workers.REFERENCES) == java


def test_the_accumulator_scores_each_image_once_under_its_prefix():
    metric = CaptionMetrics(prefix="test/", metrics=FAST)
    workers.feed(metric, [0, 1, 2, 3, 4, 0, 1])  # sampler padding repeats 0 and 1
    values = metric.compute()
    expected = scores(workers.PREDICTIONS, workers.REFERENCES)
    assert values == {f"test/{k}": v for k, v in expected.items()}
    metric.reset()
    with pytest.raises(ValueError, match="no captions"):
        metric.compute()


def test_the_accumulator_rejects_one_reference_per_sample():
    metric = CaptionMetrics(metrics=FAST)
    metric.update([7, 7], ["a dog", "a dog"], [["a dog runs"], ["the dog is running"]])
    with pytest.raises(ValueError, match="image 7 came twice with different references"):
        metric.compute()


def test_scores_keep_what_is_missing_through_pickling():  # the broadcast to every rank
    values = CaptionScores(bleu1=0.5)
    values.missing = ("meteor",)
    copy = pickle.loads(pickle.dumps(values))
    assert copy == values and copy.missing == ("meteor",)
