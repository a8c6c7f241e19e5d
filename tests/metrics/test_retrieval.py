"""Retrieval recall@K: against a brute-force ranking, de-duplicated, equal under DDP."""

import pytest
import torch

from mmexp.metrics.retrieval import RetrievalRecall, direction_names, recall_at_k
from tests.helpers.distributed import run_distributed
from tests.metrics import retrieval_workers as workers


def brute_force_recall(a: torch.Tensor, b: torch.Tensor, k: int) -> float:
    hits = 0
    for query in range(len(a)):
        scores = [(float(a[query] @ b[item]), item) for item in range(len(b))]
        ranking = [item for _, item in sorted(scores, reverse=True)]
        hits += query in ranking[:k]
    return hits / len(a)


def test_recall_matches_a_brute_force_ranking():
    a, b = workers.gallery()
    metric = RetrievalRecall(["image", "text"], ks=(1, 3, 5))
    metric.update(a, b, torch.arange(len(a)))
    values = metric.compute()
    for k in (1, 3, 5):
        assert values[f"r@{k}_i2t"].item() == pytest.approx(brute_force_recall(a, b, k))
        assert values[f"r@{k}_t2i"].item() == pytest.approx(brute_force_recall(b, a, k))
    assert 0 < values["r@1_i2t"] < 1  # the gallery is neither trivial nor hopeless
    expected_rsum = 100 * sum(values[f"r@{k}_{d}"] for k in (1, 3, 5) for d in ("i2t", "t2i"))
    torch.testing.assert_close(values["rsum"], expected_rsum)
    assert values["gallery_size"].item() == len(a)


def test_duplicated_samples_are_counted_once():
    a, b = workers.gallery()
    once = RetrievalRecall(["image", "text"])
    once.update(a, b, torch.arange(len(a)))
    twice = RetrievalRecall(["image", "text"])
    twice.update(a[:4], b[:4], torch.arange(4))
    twice.update(a[2:], b[2:], torch.arange(2, len(a)))  # 2 and 3 again, as sampler padding
    assert once.compute() == twice.compute()


def test_ties_count_against_the_query():
    identical = torch.ones(4, 3) / 3**0.5
    assert recall_at_k(identical @ identical.T, [1, 4]) == {1: 0.0, 4: 1.0}


def test_direction_names():
    assert direction_names(["image", "text"]) == ("i2t", "t2i")
    assert direction_names(["audio", "image"]) == ("a2i", "i2a")
    assert direction_names(["text", "tabular"]) == ("text2tabular", "tabular2text")


def test_two_process_recall_equals_one_process_on_the_full_gallery(tmp_path):
    a, b = workers.gallery()
    single = RetrievalRecall(["image", "text"], ks=(1, 3))
    single.update(a, b, torch.arange(len(a)))
    expected = single.compute()
    for result in run_distributed(workers.sharded_recall, 2, tmp_path):
        assert result.keys() == expected.keys()
        for key, value in expected.items():
            torch.testing.assert_close(result[key], value, msg=key)
