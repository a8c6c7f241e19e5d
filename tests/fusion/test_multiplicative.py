"""The Multiplicative Interaction forms against the paper's layer, written out in NumPy.

Every form is compared, from its own weights, with the general MI layer
``f = z^T W x + z^T U + V x + b`` (Jayakumar et al. 2020) computed in float64 with an
explicit 3-tensor ``W``: the full tensor for ``mi_matrix``, one whose slices are diagonal
for ``mi_vector`` and multiples of the identity for ``mi_scalar``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmexp.builders import check_fusion
from mmexp.encoders import EncoderOutput
from mmexp.fusion import MIMatrixFusion, MIScalarFusion, MIVectorFusion
from mmexp.lit.heads import MLPHead

DIM, BATCH = 6, 4
PAIR = ("image", "text")
FORMS = [MIMatrixFusion, MIVectorFusion, MIScalarFusion]


def features(seed: int = 0, grad: bool = False) -> dict[str, EncoderOutput]:
    """Random pooled vectors (one token each), every modality present."""
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for name in PAIR:
        pooled = torch.randn(BATCH, DIM, generator=generator).requires_grad_(grad)
        tokens = pooled.detach()[:, None, :].clone()
        out[name] = EncoderOutput(tokens, torch.ones(BATCH, 1, dtype=torch.bool), pooled)
    return out


def np64(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().double().numpy()


def mi_layer(x, z, w, u, v, b) -> np.ndarray:
    """``z^T W x + z^T U + V x + b`` per row.

    ``W`` is ``[m, n, k]``, ``U`` ``[m, k]``, ``V`` ``[n, k]`` and ``b`` ``[k]``.
    """
    return np.einsum("bi,ijk,bj->bk", z, w, x) + z @ u + x @ v + b


def full_form(fusion: MIMatrixFusion) -> tuple[np.ndarray, ...]:
    return (
        np64(fusion.weight),
        np64(fusion.context_linear.weight).T,
        np64(fusion.input_linear.weight).T,
        np64(fusion.input_linear.bias),
    )


def diagonal_form(fusion: MIVectorFusion) -> tuple[np.ndarray, ...]:
    """The 3-tensor whose slice ``W[i]`` is ``diag(W_d[:, i])``, and ``V = diag(v)``."""
    scale, v = np64(fusion.scale.weight), np64(fusion.scale.bias)  # [n, m], [n]
    w = np.zeros((DIM, DIM, DIM))
    for j in range(DIM):
        w[:, j, j] = scale[j]
    return w, np64(fusion.shift.weight).T, np.diag(v), np64(fusion.shift.bias)


def scalar_form(fusion: MIScalarFusion) -> tuple[np.ndarray, ...]:
    """``W[i] = w_i I``, ``V = v I``, every column of ``U`` is ``u`` and ``b = c 1``."""
    w, v = np64(fusion.scale.weight)[0], np64(fusion.scale.bias)[0]
    u, c = np64(fusion.shift.weight)[0], np64(fusion.shift.bias)[0]
    identity = np.eye(DIM)
    return (
        w[:, None, None] * identity,
        np.repeat(u[:, None], DIM, axis=1),
        v * identity,
        np.full(DIM, c),
    )


TENSORS = {MIMatrixFusion: full_form, MIVectorFusion: diagonal_form, MIScalarFusion: scalar_form}


def assert_matches(actual: torch.Tensor, expected: np.ndarray) -> None:
    np.testing.assert_allclose(np64(actual), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("context", PAIR)
@pytest.mark.parametrize("cls", FORMS, ids=lambda cls: cls.__name__)
def test_each_form_is_the_mi_layer_with_its_restricted_tensor(cls, context):
    torch.manual_seed(0)
    fusion = cls(list(PAIR), DIM, context=context).eval()
    feats = features()
    other = next(m for m in PAIR if m != context)
    x, z = np64(feats[other].pooled), np64(feats[context].pooled)
    assert_matches(fusion(feats), mi_layer(x, z, *TENSORS[cls](fusion)))
    assert fusion.out_dim == DIM


def test_mi_matrix_is_the_affine_layer_its_context_generates():
    # The hypernetwork reading of the paper: W'(z) = z^T W + V, b'(z) = z^T U + b.
    torch.manual_seed(0)
    fusion = MIMatrixFusion(list(PAIR), DIM, hidden_dim=3).eval()
    feats = features()
    w, u, v, b = full_form(fusion)
    assert w.shape == (DIM, DIM, 3)
    x, z = np64(feats["text"].pooled), np64(feats["image"].pooled)  # context: the first
    for row in range(BATCH):
        generated = np.tensordot(z[row], w, axes=1) + v  # [n, k]
        bias = z[row] @ u + b
        assert_matches(fusion(feats)[row], x[row] @ generated + bias)
    assert sum(p.numel() for p in fusion.parameters()) == 3 * (DIM + 1) ** 2


def test_mi_vector_gates_each_unit_and_mi_scalar_the_whole_vector():
    torch.manual_seed(0)
    feats = features()
    x, z = np64(feats["text"].pooled), np64(feats["image"].pooled)
    vector = MIVectorFusion(list(PAIR), DIM).eval()
    gate = z @ np64(vector.scale.weight).T + np64(vector.scale.bias)
    shift = z @ np64(vector.shift.weight).T + np64(vector.shift.bias)
    assert_matches(vector(feats), gate * x + shift)
    scalar = MIScalarFusion(list(PAIR), DIM).eval()
    scale = z @ np64(scalar.scale.weight)[0] + np64(scalar.scale.bias)[0]  # [B]
    offset = z @ np64(scalar.shift.weight)[0] + np64(scalar.shift.bias)[0]
    assert_matches(scalar(feats), scale[:, None] * x + offset[:, None])


def test_the_shared_heads_layernorm_leaves_mi_scalar_only_the_sign_of_its_scale():
    # Why mi_scalar is left out of the synergy claim (tests/fusion/test_interactions.py).
    torch.manual_seed(0)
    fusion = MIScalarFusion(list(PAIR), DIM).eval()
    norm = MLPHead(DIM, 3)[0]  # the shared head's input normalisation
    assert isinstance(norm, torch.nn.LayerNorm)
    feats = features()
    x, z = feats["text"].pooled, feats["image"].pooled
    with torch.no_grad():
        scale = fusion.scale(z)
        assert scale.abs().min() > 0.05 and len(scale.sign().unique()) == 2
        # Equal up to LayerNorm's epsilon (1e-5 against a^2 var(x), here 1e-2 and more).
        gap = (norm(fusion(feats)) - norm(scale.sign() * x)).abs().max()
        assert gap < 1e-2
        # The vector form keeps z: its per-unit scales and shifts survive the normalisation.
        vector = MIVectorFusion(list(PAIR), DIM).eval()
        gate = vector.scale(z).sign()
        assert (norm(vector(feats)) - norm(gate * x)).abs().max() > 100 * gap


@pytest.mark.parametrize("cls", FORMS, ids=lambda cls: cls.__name__)
def test_an_absent_modality_leaves_the_linear_terms(cls):
    torch.manual_seed(0)
    fusion = cls(list(PAIR), DIM).eval()
    w, u, v, b = TENSORS[cls](fusion)
    for absent in PAIR:
        feats = features()
        feats[absent].present = torch.tensor([True, False, True, False])
        with torch.no_grad():
            feats[absent].pooled[~feats[absent].present] = float("nan")
            output = fusion(feats)
        x, z = np64(feats["text"].pooled), np64(feats["image"].pooled)
        rows = ~feats[absent].present.numpy()
        # Without z: V x + b; without x: z^T U + b (the placeholder never enters).
        expected = x[rows] @ v + b if absent == "image" else z[rows] @ u + b
        assert_matches(output[rows], expected)
        assert_matches(output[~rows], mi_layer(x[~rows], z[~rows], w, u, v, b))


@pytest.mark.parametrize("cls", FORMS, ids=lambda cls: cls.__name__)
def test_the_output_depends_on_the_two_modalities_jointly(cls):
    torch.manual_seed(0)
    fusion = cls(list(PAIR), DIM).eval()
    a, c = features(0), features(1)

    def at(image, text):
        with torch.no_grad():
            return fusion({"image": image["image"], "text": text["text"]})

    # An additive fusion g(x) + h(z) would make the two sums equal.
    assert not torch.allclose(at(a, a) + at(c, c), at(a, c) + at(c, a), atol=1e-4)


@pytest.mark.parametrize("cls", FORMS, ids=lambda cls: cls.__name__)
def test_three_modalities_and_unknown_contexts_are_refused_by_name(cls):
    assert cls.max_modalities == 2
    with pytest.raises(ValueError, match=rf"{cls.__name__} is defined for at most 2 modalities"):
        cls(["image", "text", "audio"], DIM)
    with pytest.raises(ValueError, match=rf"{cls.__name__}: context modality 'audio' is not one"):
        cls(list(PAIR), DIM, context="audio")


@pytest.mark.parametrize("width", [0, -2])
def test_mi_matrix_refuses_a_width_below_one(width):
    with pytest.raises(
        ValueError, match=rf"MIMatrixFusion: hidden_dim must be at least 1, got {width}"
    ):
        MIMatrixFusion(list(PAIR), DIM, hidden_dim=width)


@pytest.mark.parametrize("name", ["mi_matrix", "mi_vector", "mi_scalar"])
def test_the_config_check_refuses_three_modalities_with_the_choices(make_train_cfg, name):
    cfg = make_train_cfg(f"fusion={name}", "data.modalities=[image,text,audio]")
    with pytest.raises(
        ValueError,
        match=r"at most 2 modalities.*with 3 modalities choose one of fusion=\[.*'concat'",
    ) as caught:
        check_fusion(cfg)
    assert f"'{name}'" not in str(caught.value).split("choose one of")[1]
    check_fusion(make_train_cfg(f"fusion={name}", "data.modalities=[image,text]"))
