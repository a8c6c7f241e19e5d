"""EMAP against its definition, and the re-batching of encoder outputs it rests on."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch

from mmexp.analysis.emap import emap_logits, emap_report
from mmexp.analysis.rows import concat_features, concat_outputs, predict_rows
from mmexp.encoders.base import EncoderOutput, masked_mean
from mmexp.fusion import EarlyTokenFusion, LateFusion
from mmexp.lit.heads import MLPHead

N, DIM, CLASSES = 6, 4, 3
TOL = {"atol": 1e-5, "rtol": 1e-5}


def random_output(n: int, length: int, seed: int, present=None) -> EncoderOutput:
    """Random features of ``n`` samples with real lengths cycling through 1..length."""
    generator = torch.Generator().manual_seed(seed)
    lengths = 1 + torch.arange(n) % length
    mask = torch.arange(length)[None, :] < lengths[:, None]
    tokens = torch.randn(n, length, DIM, generator=generator)
    pooled = torch.randn(n, DIM, generator=generator)
    return EncoderOutput(tokens, mask, pooled, present)


def pair_features(n: int = N, seed: int = 0) -> dict[str, EncoderOutput]:
    return {"text": random_output(n, 5, seed), "image": random_output(n, 3, seed + 1)}


def weights(seed: int) -> torch.Tensor:
    return torch.randn(DIM, CLASSES, generator=torch.Generator().manual_seed(seed))


def g(out: EncoderOutput) -> torch.Tensor:
    return torch.tanh(out.pooled @ weights(10))


def h(out: EncoderOutput) -> torch.Tensor:
    # The tokens and mask of this modality matter, so pairing them wrongly shows.
    return masked_mean(out.tokens, out.mask) @ weights(11)


def additive(features) -> torch.Tensor:
    return g(features["text"]) + h(features["image"])


def interaction_model(features_of_set):
    """f = g(t) + h(v) + a(t) * b(v), with a and b centred on the evaluation set."""

    def a_raw(out):
        return torch.sin(out.pooled @ weights(12))

    def b_raw(out):
        return out.pooled @ weights(13)

    a_mean = a_raw(features_of_set["text"]).mean(dim=0)
    b_mean = b_raw(features_of_set["image"]).mean(dim=0)

    def predict(features):
        a = a_raw(features["text"]) - a_mean
        b = b_raw(features["image"]) - b_mean
        return additive(features) + a * b

    return predict


def row(out: EncoderOutput, i: int) -> EncoderOutput:
    return EncoderOutput(
        out.tokens[i : i + 1],
        out.mask[i : i + 1],
        out.pooled[i : i + 1],
        out.present_mask()[i : i + 1],
    )


def brute_force(features, predict) -> torch.Tensor:
    """The paper's definition, one pair at a time."""
    n = features["text"].tokens.shape[0]
    table = torch.stack(
        [
            torch.stack(
                [
                    predict({"text": row(features["text"], i), "image": row(features["image"], j)})[
                        0
                    ]
                    for j in range(n)
                ]
            )
            for i in range(n)
        ]
    )  # [i (text), j (image), C]
    return table.mean(dim=1) + table.mean(dim=0) - table.mean(dim=(0, 1))


def test_additive_model_is_its_own_projection() -> None:
    features = pair_features()
    projected, info = emap_logits(features, additive, batch_size=5)
    torch.testing.assert_close(projected, additive(features), **TOL)
    assert info["n"] == N and info["pairs"] == N * N and info["groups"] == [["text"], ["image"]]


def test_projection_removes_a_pure_interaction() -> None:
    features = pair_features()
    predict = interaction_model(features)
    projected, _ = emap_logits(features, predict, batch_size=4)
    torch.testing.assert_close(projected, brute_force(features, predict), **TOL)
    torch.testing.assert_close(projected, additive(features), **TOL)
    assert (predict(features) - additive(features)).abs().max() > 0.1  # there was one


@pytest.mark.parametrize("batch_size", [1, 7, N * N, 1000])
def test_chunked_equals_unchunked(batch_size: int) -> None:
    features = pair_features()
    predict = interaction_model(features)
    whole, _ = emap_logits(features, predict, batch_size=N * N)
    chunked, _ = emap_logits(features, predict, batch_size=batch_size)
    torch.testing.assert_close(chunked, whole, atol=1e-6, rtol=1e-6)


def test_subsample_is_reproducible_and_recorded() -> None:
    features = pair_features(n=20)
    predict = interaction_model(features)
    first, info = emap_logits(features, predict, batch_size=50, max_samples=7, seed=3)
    again, info_again = emap_logits(features, predict, batch_size=13, max_samples=7, seed=3)
    other, info_other = emap_logits(features, predict, batch_size=50, max_samples=7, seed=4)
    assert info["indices"] == info_again["indices"] != info_other["indices"]
    assert info["indices"] == sorted(set(info["indices"])) and len(info["indices"]) == 7
    assert info["n"] == 7 and info["total"] == 20 and info["seed"] == 3
    torch.testing.assert_close(first, again, atol=1e-6, rtol=1e-6)
    index = torch.tensor(info["indices"])
    chosen = {
        m: EncoderOutput(o.tokens[index], o.mask[index], o.pooled[index])
        for m, o in features.items()
    }
    torch.testing.assert_close(first, brute_force(chosen, predict), **TOL)


def test_hand_made_three_by_three_table() -> None:
    """f(t_i, v_j) read from a table; the projection worked out by hand."""
    table = torch.tensor(
        [
            [[1.0, 0.0], [2.0, 0.0], [3.0, 1.0]],
            [[4.0, 0.0], [5.0, 0.0], [6.0, 0.0]],
            [[7.0, 0.0], [8.0, 0.0], [10.0, 0.0]],
        ]
    )
    ids = torch.eye(3)

    def lookup(features) -> torch.Tensor:
        t = features["text"].pooled.argmax(dim=1)
        v = features["image"].pooled.argmax(dim=1)
        return table[t, v]

    single = torch.ones(3, 1, dtype=torch.bool)
    features = {
        "text": EncoderOutput(ids[:, None], single, ids),
        "image": EncoderOutput(ids[:, None], single, ids),
    }
    # Class 0: row means 2, 5, 25/3; column means 4, 5, 19/3; grand mean 46/9.
    # Class 1: only f(t_0, v_2) = 1: row means 1/3, 0, 0; column means 0, 0, 1/3; grand 1/9.
    expected = [
        [Fraction(2) + 4 - Fraction(46, 9), Fraction(1, 3) + 0 - Fraction(1, 9)],
        [Fraction(5) + 5 - Fraction(46, 9), Fraction(0) + 0 - Fraction(1, 9)],
        [
            Fraction(25, 3) + Fraction(19, 3) - Fraction(46, 9),
            Fraction(0) + Fraction(1, 3) - Fraction(1, 9),
        ],
    ]
    projected, _ = emap_logits(features, lookup, batch_size=4)
    torch.testing.assert_close(projected, torch.tensor([[float(x) for x in r] for r in expected]))
    assert float(expected[0][0]) == pytest.approx(8 / 9)


def test_more_than_two_modalities_need_groups() -> None:
    features = {**pair_features(), "audio": random_output(N, 2, 5)}
    with pytest.raises(ValueError, match=r"groups=.*N\^3"):
        emap_logits(features, additive, batch_size=8)
    with pytest.raises(ValueError, match="two disjoint"):
        emap_logits(features, additive, batch_size=8, groups=[["text"], ["image"]])

    def grouped(f):  # additive across {text} and {image, audio}, not within the latter
        return g(f["text"]) + h(f["image"]) * torch.tanh(f["audio"].pooled @ weights(14))

    projected, info = emap_logits(
        features, grouped, batch_size=8, groups=[["text"], ["image", "audio"]]
    )
    torch.testing.assert_close(projected, grouped(features), **TOL)
    assert info["groups"] == [["text"], ["image", "audio"]]


def test_refuses_absent_modalities_and_bad_arguments() -> None:
    features = pair_features()
    present = torch.ones(N, dtype=torch.bool)
    present[2] = False
    image = features["image"]
    features["image"] = EncoderOutput(image.tokens, image.mask, image.pooled, present)
    with pytest.raises(ValueError, match=r"'image' is absent from samples \[2\]"):
        emap_logits(features, additive, batch_size=8)
    with pytest.raises(ValueError, match="two modalities"):
        emap_logits({"text": pair_features()["text"]}, additive, batch_size=8)
    with pytest.raises(ValueError, match="batch_size"):
        emap_logits(pair_features(), additive, batch_size=0)
    with pytest.raises(ValueError, match=r"logits \[B, C\]"):
        emap_logits(pair_features(), lambda f: additive(f).sum(dim=1), batch_size=8)


def test_concat_outputs_pads_to_the_longest_sequence() -> None:
    short, long = (
        random_output(2, 2, 0),
        random_output(3, 5, 1, present=torch.tensor([True, False, True])),
    )
    joined = concat_outputs([short, long])
    assert joined.tokens.shape == (5, 5, DIM)
    assert not joined.mask[:2, 2:].any() and (joined.tokens[:2, 2:] == 0).all()
    torch.testing.assert_close(joined.tokens[:2, :2], short.tokens)
    torch.testing.assert_close(joined.mask[2:], long.mask)
    assert joined.present.tolist() == [True, True, True, False, True]
    assert concat_outputs([short, short]).present is None
    with pytest.raises(ValueError, match="widths"):
        concat_outputs(
            [
                short,
                EncoderOutput(
                    torch.zeros(1, 1, 2), torch.ones(1, 1, dtype=torch.bool), torch.zeros(1, 2)
                ),
            ]
        )
    with pytest.raises(ValueError, match="same modalities"):
        concat_features([{"text": short}, {"image": short}])


def test_real_fusion_on_batches_of_different_lengths() -> None:
    """Token fusion on batches concatenated from the loader: each sample scores as in its batch."""
    torch.manual_seed(0)
    fusion = EarlyTokenFusion(["text", "image"], dim=DIM, depth=1, heads=2, dropout=0.0).eval()
    head = MLPHead(DIM, CLASSES).eval()

    def predict(features):
        return head(fusion(features))

    batches = [
        pair_features(n=3, seed=0),
        {"text": random_output(2, 2, 7), "image": random_output(2, 6, 8)},
    ]
    features = concat_features(batches)
    with torch.no_grad():
        own = torch.cat([predict(batch) for batch in batches])
    torch.testing.assert_close(predict_rows(features, predict, torch.arange(5), 2), own, **TOL)
    projected, _ = emap_logits(features, predict, batch_size=25)
    chunked, _ = emap_logits(features, predict, batch_size=3)
    torch.testing.assert_close(chunked, projected, **TOL)
    torch.testing.assert_close(projected, brute_force(features, predict), **TOL)


def test_late_fusion_is_additive_and_report_shows_no_gap() -> None:
    torch.manual_seed(0)
    fusion = LateFusion(
        ["text", "image"], dim=DIM, num_classes=CLASSES, hidden_dims=(8,), dropout=0.0
    ).eval()
    features = pair_features(n=10)
    labels = torch.arange(10) % CLASSES
    projected, _ = emap_logits(features, fusion, batch_size=16)
    with torch.no_grad():
        torch.testing.assert_close(projected, fusion(features), **TOL)
    report = emap_report(features, fusion, labels, batch_size=16, max_samples=8, seed=1)
    assert report["gap"] == 0.0 and report["agreement"] == 1.0 and report["n"] == 8
    assert report["accuracy"] == report["emap_accuracy"]
