"""Retrieval recall@K: against a brute-force ranking, de-duplicated, grouped, equal under DDP."""

import pytest
import torch

from mmexp.metrics.retrieval import RetrievalRecall, direction_names, recall_at_k
from tests.helpers.distributed import run_distributed
from tests.helpers.retrieval import brute_force_grouped
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


@pytest.mark.slow
def test_two_process_recall_equals_one_process_on_the_full_gallery(tmp_path):
    a, b = workers.gallery()
    single = RetrievalRecall(["image", "text"], ks=(1, 3))
    single.update(a, b, torch.arange(len(a)))
    images, captions, owner = workers.grouped_gallery()
    single_grouped = RetrievalRecall(["image", "text"], ks=(1, 3))
    single_grouped.update(
        images, captions, torch.arange(len(images)), owner, torch.arange(len(owner))
    )
    expected = {"paired": single.compute(), "grouped": single_grouped.compute()}
    assert expected["grouped"]["gallery_size_text"] == len(owner)
    for result in run_distributed(workers.sharded_recall, 2, tmp_path):
        for kind in expected:  # paired: sampler repeats; grouped: repeated image + captions
            assert result[kind].keys() == expected[kind].keys()
            for key, value in expected[kind].items():
                torch.testing.assert_close(result[kind][key], value, msg=f"{kind} {key}")


def grouped_recall(images, captions, owner) -> dict[str, torch.Tensor]:
    metric = RetrievalRecall(["image", "text"], ks=(1, 2, 3))
    workers.grouped_update(metric, images, captions, owner, torch.arange(len(images)))
    return metric.compute()


def test_grouped_recall_matches_a_brute_force_ranking_over_all_captions():
    images, captions, owner = workers.grouped_gallery()
    values = grouped_recall(images, captions, owner)
    for k in (1, 2, 3):
        i2t, t2i = brute_force_grouped(images, captions, owner, k)
        assert values[f"r@{k}_i2t"].item() == pytest.approx(i2t), k
        assert values[f"r@{k}_t2i"].item() == pytest.approx(t2i), k
    assert values["gallery_size"] == len(images)
    assert values["gallery_size_text"] == len(captions) == sum(workers.CAPTIONS)
    # The gallery is one where shortcuts give other answers: scoring only the first caption
    # of each image (captions de-duplicated by image) changes the image-to-text recall...
    first = torch.tensor([int(torch.nonzero(owner == i)[0]) for i in range(len(images))])
    naive = RetrievalRecall(["image", "text"], ks=(1, 2, 3))
    naive.update(images, captions[first], torch.arange(len(images)))
    naive_values = naive.compute()
    assert any(naive_values[f"r@{k}_i2t"] != values[f"r@{k}_i2t"] for k in (1, 2, 3))
    # ... and counting text-to-image per image instead of per caption changes the other way.
    per_image = [per_image_t2i(images, captions, owner, k) for k in (1, 2, 3)]
    assert per_image != [values[f"r@{k}_t2i"].item() for k in (1, 2, 3)]


def per_image_t2i(images, captions, owner, k: int) -> float:
    """Text-to-image recall averaged per image (a wrong protocol), for contrast."""
    similarity = captions @ images.T
    hit = (similarity >= similarity[torch.arange(len(owner)), owner][:, None]).sum(1) <= k
    return float(torch.stack([hit[owner == i].float().mean() for i in range(len(images))]).mean())


def test_grouped_recall_does_not_depend_on_batching_or_repeats():
    images, captions, owner = workers.grouped_gallery()
    whole = RetrievalRecall(["image", "text"])
    whole.update(images, captions, torch.arange(len(images)), owner, torch.arange(len(owner)))
    batched = RetrievalRecall(["image", "text"])
    workers.grouped_update(batched, images, captions, owner, torch.tensor([4, 0, 2, 1, 3, 0]))
    assert whole.compute() == batched.compute()


def test_grouped_recall_refuses_inconsistent_ids():
    images, captions, owner = workers.grouped_gallery()
    metric = RetrievalRecall(["image", "text"])
    with pytest.raises(ValueError, match="groups and members"):
        metric.update(images, captions, torch.arange(len(images)), owner)
    with pytest.raises(ValueError, match="pass groups"):
        metric.update(images, captions, torch.arange(len(images)))
    metric.update(images[:2], captions, torch.arange(2), owner, torch.arange(len(owner)))
    with pytest.raises(ValueError, match="belong to no item"):
        metric.compute()
    orphan = RetrievalRecall(["image", "text"])
    orphan.update(
        images,
        captions[owner != 1],
        torch.arange(len(images)),
        owner[owner != 1],
        torch.arange(len(owner))[owner != 1],
    )
    with pytest.raises(ValueError, match="no partner"):
        orphan.compute()
