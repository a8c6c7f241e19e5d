"""The NL-gate against ``q + softmax(q k^T) v``, written out in NumPy sample by sample.

Each sample's real tokens are taken out of the padded batch and the non-local gate of
Wang et al. 2020 (as MultiBench's ``NLgate`` uses it) is computed on them alone in float64:
keys and values projected from the other modalities' tokens, an unscaled softmax over all of
them, the query tokens added back, the mean over the query's real tokens.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmexp.encoders import EncoderOutput
from mmexp.fusion import NLGateFusion

DIM = 8
LENGTHS = {"image": [5, 3, 1, 4], "text": [6, 6, 2, 1], "audio": [3, 1, 3, 2]}


def features(modalities, seed: int = 0, grad: bool = False) -> dict[str, EncoderOutput]:
    """Padded token sequences of the lengths in ``LENGTHS``; padding holds large noise."""
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for name in modalities:
        lengths = torch.tensor(LENGTHS[name])
        mask = torch.arange(int(lengths.max()))[None, :] < lengths[:, None]
        tokens = torch.randn(*mask.shape, DIM, generator=generator)
        tokens = torch.where(mask[..., None], tokens, 1e3 * torch.randn(tokens.shape))
        pooled = torch.randn(len(lengths), DIM, generator=generator)
        out[name] = EncoderOutput(tokens.requires_grad_(grad), mask, pooled)
    return out


def np64(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().double().numpy()


def softmax(scores: np.ndarray) -> np.ndarray:
    shifted = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def real_tokens(f: EncoderOutput, row: int) -> np.ndarray:
    """The ``[T, D]`` real tokens of sample ``row``; none where it lacks the modality."""
    if f.present is not None and not bool(f.present[row]):
        return np.zeros((0, DIM))
    return np64(f.tokens[row][f.mask[row]])


def reference(fusion: NLGateFusion, feats) -> tuple[np.ndarray, list[np.ndarray]]:
    """The outputs ``[B, D]`` and each sample's ``[Tq, Tk]`` attention, one sample at a time."""
    outputs, attentions = [], []
    for row in range(len(feats[fusion.query].tokens)):
        q = real_tokens(feats[fusion.query], row)
        keys, values = [], []
        for name in fusion.key_modalities:
            y = real_tokens(feats[name], row)
            k_map, v_map = fusion.key_maps[name], fusion.value_maps[name]
            keys.append(y @ np64(k_map.weight).T + np64(k_map.bias))
            values.append(y @ np64(v_map.weight).T + np64(v_map.bias))
        k, v = np.concatenate(keys), np.concatenate(values)
        if len(k):
            attention = softmax(q @ k.T)
            gated = q + attention @ v
        else:  # no key at all: no update
            attention, gated = np.zeros((len(q), 0)), q
        outputs.append(gated.mean(axis=0) if len(q) else np.zeros(DIM))
        attentions.append(attention)
    return np.stack(outputs), attentions


def assert_matches(actual: torch.Tensor, expected: np.ndarray) -> None:
    np.testing.assert_allclose(np64(actual), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("query", ["image", "text"])
def test_two_modalities_are_the_gate_of_the_paper(query):
    torch.manual_seed(0)
    fusion = NLGateFusion(["image", "text"], DIM, query=query).eval()
    feats = features(("image", "text"))
    expected, _ = reference(fusion, feats)
    assert_matches(fusion(feats), expected)
    assert fusion.out_dim == DIM


def test_three_modalities_share_one_softmax_over_the_other_tokens():
    torch.manual_seed(0)
    fusion = NLGateFusion(["image", "text", "audio"], DIM).eval()
    assert fusion.query == "image" and fusion.key_modalities == ("text", "audio")
    feats = features(("image", "text", "audio"))
    expected, _ = reference(fusion, feats)
    assert_matches(fusion(feats), expected)


def test_absent_modalities():
    torch.manual_seed(0)
    fusion = NLGateFusion(["image", "text", "audio"], DIM).eval()
    feats = features(("image", "text", "audio"))
    feats["image"].present = torch.tensor([True, True, False, True])  # no query: zeros
    feats["text"].present = torch.tensor([False, True, True, False])  # row 0: audio alone
    feats["audio"].present = torch.tensor([True, False, True, False])  # row 3: no key: z = q
    with torch.no_grad():
        for f in feats.values():
            f.tokens[~f.present] = float("nan")
        output = fusion(feats)
    expected, _ = reference(fusion, feats)
    assert_matches(output, expected)
    assert output[2].abs().max() == 0
    query = feats["image"]
    assert_matches(output[3], np64(query.tokens[3][query.mask[3]]).mean(axis=0))


def test_cross_modal_attention_is_the_softmax_split_by_modality():
    torch.manual_seed(0)
    fusion = NLGateFusion(["image", "text", "audio"], DIM).eval()
    feats = features(("image", "text", "audio"))
    with torch.no_grad():
        maps = fusion.cross_modal_attention(feats)
    assert [(m.query, m.key, m.layer) for m in maps] == [
        ("image", "text", 0),
        ("image", "audio", 0),
    ]
    _, attentions = reference(fusion, feats)
    for row, attention in enumerate(attentions):
        tq = LENGTHS["image"][row]
        tt, ta = LENGTHS["text"][row], LENGTHS["audio"][row]
        assert_matches(maps[0].weights[row, 0, :tq, :tt], attention[:, :tt])
        assert_matches(maps[1].weights[row, 0, :tq, :ta], attention[:, tt:])
        for found in maps:  # padded query rows and padded keys are zero
            assert found.weights[row, 0, tq:].abs().sum() == 0
        assert maps[0].weights[row, 0, :, tt:].abs().sum() == 0
        assert maps[1].weights[row, 0, :, ta:].abs().sum() == 0


def test_gradients_reach_the_keys_and_the_output_is_not_additive():
    torch.manual_seed(0)
    fusion = NLGateFusion(["image", "text"], DIM)
    feats = features(("image", "text"), grad=True)
    fusion(feats).square().sum().backward()
    for name, f in feats.items():
        assert f.tokens.grad[f.mask].abs().sum() > 0, name
        assert f.tokens.grad[~f.mask].abs().sum() == 0, name
    a, c = features(("image", "text"), 0), features(("image", "text"), 1)

    def at(image, text):
        with torch.no_grad():
            return fusion.eval()({"image": image["image"], "text": text["text"]})

    assert not torch.allclose(at(a, a) + at(c, c), at(a, c) + at(c, a), atol=1e-4)


def test_an_unknown_query_is_refused_by_name():
    with pytest.raises(ValueError, match=r"NLGateFusion: query modality 'audio' is not one"):
        NLGateFusion(["image", "text"], DIM, query="audio")
    with pytest.raises(ValueError, match="at least 2 modalities"):
        NLGateFusion(["image"], DIM)
