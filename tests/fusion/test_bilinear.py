"""The bilinear poolings against their papers' formulas, written out in the test.

Each strategy is compared with an independent float64 NumPy computation from its own
weights: the full bilinear weight tensor its factors define where the decomposition implies
one (MLB, MFB), the cascade of MFH, the Tucker product with the core tensor reconstructed
(MUTAN), the sum of block terms (BLOCK), and for MCB the explicit circular convolution of
the two count sketches, which equals the count sketch of the outer product.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmexp.builders import check_fusion
from mmexp.encoders import EncoderOutput
from mmexp.fusion import (
    BlockFusion,
    MCBFusion,
    MFBFusion,
    MFHFusion,
    MLBFusion,
    MutanFusion,
)

DIM, BATCH = 8, 3
PAIR = ("image", "text")


def features(seed: int = 0, grad: bool = False, modalities=PAIR) -> dict[str, EncoderOutput]:
    """Random pooled vectors (one token each), every modality present."""
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for name in modalities:
        pooled = torch.randn(BATCH, DIM, generator=generator).requires_grad_(grad)
        tokens = pooled.detach()[:, None, :].clone()
        out[name] = EncoderOutput(tokens, torch.ones(BATCH, 1, dtype=torch.bool), pooled)
    return out


def np64(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().double().numpy()


def affine(linear: torch.nn.Linear) -> np.ndarray:
    """``[W | b]``: the weight that acts on ``[x; 1]``."""
    return np.concatenate([np64(linear.weight), np64(linear.bias)[:, None]], axis=1)


def extended(x: torch.Tensor) -> np.ndarray:
    """``[x; 1]`` per row."""
    return np.concatenate([np64(x), np.ones((len(x), 1))], axis=1)


def assert_matches(actual: torch.Tensor, expected: np.ndarray) -> None:
    np.testing.assert_allclose(np64(actual), expected, rtol=1e-4, atol=1e-5)


# --- MLB ------------------------------------------------------------------------------------


def test_mlb_without_activation_is_the_bilinear_form_of_its_rank_d_tensor():
    torch.manual_seed(0)
    fusion = MLBFusion(list(PAIR), DIM, hidden_dim=5, activation="none").eval()
    feats = features()
    u, v = affine(fusion.projections["image"]), affine(fusion.projections["text"])  # [d, D+1]
    p = np64(fusion.output.weight)  # [out, d]
    # W[i, j, k] = sum_h U[h, i] V[h, j] P[k, h]: one (D+1) x (D+1) matrix per output.
    weight = np.einsum("hi,hj,kh->ijk", u, v, p)
    x, y = extended(feats["image"].pooled), extended(feats["text"].pooled)
    expected = np.einsum("bi,bj,ijk->bk", x, y, weight) + np64(fusion.output.bias)
    assert_matches(fusion(feats), expected)
    # Each output's bilinear matrix has rank at most d = 5 (low-rank bilinear pooling).
    assert max(np.linalg.matrix_rank(weight[..., k]) for k in range(DIM)) == 5


def test_mlb_is_the_projected_hadamard_product_of_tanh_projections():
    torch.manual_seed(0)
    fusion = MLBFusion(list(PAIR), DIM, hidden_dim=6).eval()
    feats = features()
    left = np.tanh(extended(feats["image"].pooled) @ affine(fusion.projections["image"]).T)
    right = np.tanh(extended(feats["text"].pooled) @ affine(fusion.projections["text"]).T)
    expected = (left * right) @ np64(fusion.output.weight).T + np64(fusion.output.bias)
    assert_matches(fusion(feats), expected)
    assert fusion.out_dim == DIM


# --- MFB ------------------------------------------------------------------------------------


def power_normalised(z: np.ndarray) -> np.ndarray:
    """Signed square root, then unit L2 norm per row (Yu et al.; Fukui et al.)."""
    root = np.sign(z) * np.sqrt(np.abs(z))
    return root / np.maximum(np.linalg.norm(root, axis=1, keepdims=True), 1e-12)


def mfb_weight(u: np.ndarray, v: np.ndarray, factor: int) -> np.ndarray:
    """``W[:, :, i] = sum over the window of output i of u_j v_j^T``: ``[D+1, D+1, o]``."""
    outer = np.einsum("ji,jk->jik", u, v)  # one rank-one matrix per expanded feature j
    return outer.reshape(-1, factor, *outer.shape[1:]).sum(axis=1).transpose(1, 2, 0)


def test_mfb_is_the_normalised_rank_k_bilinear_form():
    torch.manual_seed(0)
    fusion = MFBFusion(list(PAIR), DIM, hidden_dim=4, factor=3).eval()
    feats = features()
    weight = mfb_weight(
        affine(fusion.expansions["image"]), affine(fusion.expansions["text"]), factor=3
    )
    assert weight.shape == (DIM + 1, DIM + 1, 4)
    # Each output's bilinear matrix has rank k = 3 (Yu et al.: W_i = U_i V_i^T).
    assert [np.linalg.matrix_rank(weight[..., i]) for i in range(4)] == [3] * 4
    x, y = extended(feats["image"].pooled), extended(feats["text"].pooled)
    z = power_normalised(np.einsum("bi,bj,ijk->bk", x, y, weight))
    expected = z @ np64(fusion.output.weight).T + np64(fusion.output.bias)
    assert_matches(fusion(feats), expected)


def test_mfb_drops_products_before_summing_consecutive_windows():
    fusion = MFBFusion(list(PAIR), DIM, hidden_dim=2, factor=3, dropout=0.5).train()
    with torch.no_grad():
        for expansion in fusion.expansions.values():
            expansion.weight.zero_()
            expansion.bias.fill_(1.0)  # every expanded product is 1
    seen = {}
    fusion.output.register_forward_hook(lambda module, args, out: seen.update(z=args[0]))
    torch.manual_seed(0)
    fusion(features())
    # The same dropout draw on the six products of a row (2 where kept, 0 where dropped),
    # then windows 0-2 and 3-5 summed, then the signed square root and the L2 norm.
    torch.manual_seed(0)
    kept = torch.nn.functional.dropout(torch.ones(BATCH, 6), 0.5, training=True)
    pooled = kept.view(BATCH, 2, 3).sum(-1)
    torch.testing.assert_close(seen["z"], torch.nn.functional.normalize(pooled.sqrt(), dim=-1))


# --- MFH ------------------------------------------------------------------------------------


def test_mfh_cascades_expanded_products_and_concatenates_the_blocks():
    torch.manual_seed(0)
    fusion = MFHFusion(list(PAIR), DIM, hidden_dim=4, factor=2, blocks=3).eval()
    feats = features()
    x, y = extended(feats["image"].pooled), extended(feats["text"].pooled)
    expanded, squeezed = np.ones((BATCH, 8)), []
    for block in fusion.expansions:
        # Yu et al. 2018: e_i = e_{i-1} * (U_i x) * (V_i y), an interaction of order 2 i.
        expanded = expanded * (x @ affine(block["image"]).T) * (y @ affine(block["text"]).T)
        squeezed.append(power_normalised(expanded.reshape(BATCH, 4, 2).sum(axis=2)))
    z = np.concatenate(squeezed, axis=1)
    expected = z @ np64(fusion.output.weight).T + np64(fusion.output.bias)
    assert_matches(fusion(feats), expected)
    assert fusion.output.in_features == 3 * 4


def test_mfh_with_one_block_is_mfb():
    torch.manual_seed(0)
    mfh = MFHFusion(list(PAIR), DIM, hidden_dim=4, factor=3, blocks=1).eval()
    mfb = MFBFusion(list(PAIR), DIM, hidden_dim=4, factor=3).eval()
    state = {k.replace("expansions.0.", "expansions."): v for k, v in mfh.state_dict().items()}
    mfb.load_state_dict(state)
    feats = features()
    torch.testing.assert_close(mfh(feats), mfb(feats))


# --- MUTAN ----------------------------------------------------------------------------------


def test_mutan_is_the_tucker_product_with_its_rank_r_core():
    torch.manual_seed(0)
    fusion = MutanFusion(list(PAIR), DIM, hidden_dim=6, rank=2).eval()
    feats = features()
    # T_c[i, j, k] = sum_r m_r^k[i] n_r^k[j] (Ben-younes et al. 2017): slices of rank R = 2.
    core = np.einsum("rki,rkj->ijk", np64(fusion.core["image"]), np64(fusion.core["text"]))
    assert core.shape == (6, 6, 6)
    assert max(np.linalg.matrix_rank(core[..., k]) for k in range(6)) == 2
    # T = ((T_c x_1 W_x) x_2 W_y) x_3 W_o on [x; 1] and [y; 1]: the full bilinear tensor.
    w_x, w_y = affine(fusion.projections["image"]), affine(fusion.projections["text"])
    full = np.einsum("abc,ai,bj,oc->ijo", core, w_x, w_y, np64(fusion.output.weight))
    assert full.shape == (DIM + 1, DIM + 1, DIM)
    x, y = extended(feats["image"].pooled), extended(feats["text"].pooled)
    expected = np.einsum("bi,bj,ijo->bo", x, y, full) + np64(fusion.output.bias)
    assert_matches(fusion(feats), expected)


def test_mutan_with_full_rank_can_hold_any_core():
    # R = t leaves the slices unconstrained: a random core is reproduced exactly.
    fusion = MutanFusion(list(PAIR), DIM, hidden_dim=3, rank=3).eval()
    core = np.random.default_rng(0).normal(size=(3, 3, 3))
    with torch.no_grad():
        for k in range(3):
            left, singular, right = np.linalg.svd(core[..., k])
            fusion.core["image"][:, k] = torch.tensor((left * singular).T)
            fusion.core["text"][:, k] = torch.tensor(right)
    rebuilt = np.einsum("rki,rkj->ijk", np64(fusion.core["image"]), np64(fusion.core["text"]))
    np.testing.assert_allclose(rebuilt, core, atol=1e-6)


# --- BLOCK ----------------------------------------------------------------------------------


def test_block_is_the_sum_of_its_block_terms_with_a_superdiagonal_core():
    torch.manual_seed(0)
    chunks, width, rank = 3, 4, 2
    fusion = BlockFusion(list(PAIR), DIM, hidden_dim=width, chunks=chunks, rank=rank).eval()
    feats = features()
    x = extended(feats["image"].pooled) @ affine(fusion.projections["image"]).T  # [B, C s]
    y = extended(feats["text"].pooled) @ affine(fusion.projections["text"]).T
    # D_c[i, j, k] = sum_r m_{c,r}^k[i] n_{c,r}^k[j], placed on the diagonal of the full core.
    blocks = np.einsum("crki,crkj->cijk", np64(fusion.core["image"]), np64(fusion.core["text"]))
    joint = chunks * width
    core = np.zeros((joint, joint, joint))
    for c in range(chunks):
        span = slice(c * width, (c + 1) * width)
        core[span, span, span] = blocks[c]
        assert max(np.linalg.matrix_rank(blocks[c][..., k]) for k in range(width)) == rank
    z = np.einsum("bi,bj,ijk->bk", x, y, core)  # the Tucker product with that core
    w_o = np64(fusion.output.weight)
    expected = np64(fusion.output.bias) + sum(
        # Ben-younes et al. 2019: one term per block, each normalised, through its C_c.
        power_normalised(z[:, c * width : (c + 1) * width]) @ w_o[:, c * width : (c + 1) * width].T
        for c in range(chunks)
    )
    assert_matches(fusion(feats), expected)


def test_block_chunks_interact_only_with_their_partner_chunk():
    torch.manual_seed(0)
    fusion = BlockFusion(list(PAIR), DIM, hidden_dim=4, chunks=2, rank=2).eval()
    seen = {}
    fusion.output.register_forward_hook(lambda module, args, out: seen.update(z=args[0]))
    fusion(features())
    before = seen["z"].clone()
    with torch.no_grad():  # change what the second chunk of the first modality receives
        fusion.projections["image"].bias[4:] += 1.0
    fusion(features())
    torch.testing.assert_close(seen["z"][:, :4], before[:, :4])
    assert not torch.allclose(seen["z"][:, 4:], before[:, 4:])


# --- MCB ------------------------------------------------------------------------------------


def sketch(x: np.ndarray, hashes: np.ndarray, signs: np.ndarray, width: int) -> np.ndarray:
    """Count sketch per row, by a loop: ``Psi(x)[h(i)] += s(i) x_i``."""
    out = np.zeros((len(x), width))
    for i, (h, s) in enumerate(zip(hashes, signs, strict=True)):
        out[:, h] += s * x[:, i]
    return out


def circular_convolution(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(a * b)[k] = sum_j a[j] b[(k - j) mod d]`` per row, without any FFT."""
    width = a.shape[1]
    out = np.zeros_like(a)
    for k in range(width):
        for j in range(width):
            out[:, k] += a[:, j] * b[:, (k - j) % width]
    return out


def mcb_hashes(fusion: MCBFusion) -> tuple[np.ndarray, ...]:
    return tuple(getattr(fusion, f"{kind}_{m}").numpy() for m in PAIR for kind in ("hash", "sign"))


def test_mcb_is_the_circular_convolution_of_the_two_sketches():
    torch.manual_seed(0)
    width = 13
    fusion = MCBFusion(list(PAIR), DIM, hidden_dim=width, seed=3).eval()
    feats = features()
    x, y = np64(feats["image"].pooled), np64(feats["text"].pooled)
    h1, s1, h2, s2 = mcb_hashes(fusion)
    convolved = circular_convolution(sketch(x, h1, s1, width), sketch(y, h2, s2, width))
    assert_matches(fusion.compact_bilinear(feats["image"].pooled, feats["text"].pooled), convolved)
    # It is the count sketch of the outer product, with hash h1(i) + h2(j) mod d and sign
    # s1(i) s2(j) (Pham and Pagh 2013), which is what MCB stands in for.
    outer = np.einsum("bi,bj->bij", x, y).reshape(BATCH, -1)
    pair_hash = ((h1[:, None] + h2[None, :]) % width).reshape(-1)
    pair_sign = (s1[:, None] * s2[None, :]).reshape(-1)
    np.testing.assert_allclose(sketch(outer, pair_hash, pair_sign, width), convolved, atol=1e-9)
    expected = power_normalised(convolved) @ np64(fusion.output.weight).T
    assert_matches(fusion(feats), expected + np64(fusion.output.bias))


def test_mcb_inner_products_approximate_those_of_the_outer_products():
    # Two samples whose outer products overlap much (y1 near y0, x1 near x0) and a third
    # unrelated one: the sketches' inner products estimate <x y^T, x' y'^T> = <x, x'> <y, y'>
    # without bias over random hashes and signs (before the normalisation).
    generator = torch.Generator().manual_seed(1)
    x, y = torch.randn(3, DIM, generator=generator), torch.randn(3, DIM, generator=generator)
    x[1], y[1] = x[0] + 0.3 * torch.randn(DIM, generator=generator), 1.1 * y[0]
    exact = ((x @ x.T) * (y @ y.T)).numpy()
    sketches = [
        MCBFusion(list(PAIR), DIM, hidden_dim=64, seed=seed).compact_bilinear(x, y)
        for seed in range(300)
    ]
    estimates = np.stack([(z @ z.T).numpy() for z in sketches])
    spread = estimates.std(axis=0) / np.sqrt(len(estimates))
    assert (np.abs(estimates.mean(axis=0) - exact) < 4 * spread + 1e-6).all()
    assert spread[0, 1] < 0.05 * abs(exact[0, 1])  # sharp enough to mean something


def test_mcb_hashes_are_fixed_by_the_seed_and_travel_with_the_state_dict():
    first, again = MCBFusion(list(PAIR), DIM, seed=7), MCBFusion(list(PAIR), DIM, seed=7)
    other = MCBFusion(list(PAIR), DIM, seed=8)
    for a, b in zip(mcb_hashes(first), mcb_hashes(again), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(mcb_hashes(first)[0], mcb_hashes(other)[0])
    assert not np.array_equal(mcb_hashes(first)[0], mcb_hashes(first)[2])  # one per modality
    # The hashes have a generator of their own: the global random state, which initialises
    # the output layer, is not drawn from, whatever the seed.
    torch.manual_seed(0)
    one = MCBFusion(list(PAIR), DIM, seed=1)
    torch.manual_seed(0)
    two = MCBFusion(list(PAIR), DIM, seed=2)
    torch.testing.assert_close(one.output.weight, two.output.weight)
    state = first.state_dict()
    assert {"hash_image", "sign_image", "hash_text", "sign_text"} <= set(state)
    assert not any(name.startswith(("hash_", "sign_")) for name, _ in first.named_parameters())
    other.load_state_dict(state)  # a checkpoint restores the hashes it was trained with
    feats = features()
    torch.testing.assert_close(other.eval()(feats), first.eval()(feats))


def test_mcb_of_an_absent_modality_is_the_output_bias():
    fusion = MCBFusion(list(PAIR), DIM, hidden_dim=16).eval()
    feats = features(grad=True)
    feats["text"].present = torch.tensor([True, False, True])
    with torch.no_grad():
        feats["text"].pooled[1] = float("nan")
    output = fusion(feats)
    torch.testing.assert_close(output[1], fusion.output.bias)
    output.sum().backward()
    assert torch.isfinite(feats["image"].pooled.grad).all()
    assert feats["image"].pooled.grad[1].abs().sum() == 0


# --- shared by every bilinear pooling -------------------------------------------------------

STRATEGIES = [MLBFusion, MFBFusion, MFHFusion, MutanFusion, BlockFusion, MCBFusion]


@pytest.mark.parametrize("cls", STRATEGIES, ids=lambda cls: cls.__name__)
def test_gradients_reach_both_modalities(cls):
    torch.manual_seed(0)
    fusion = cls(list(PAIR), DIM)
    feats = features(grad=True)
    output = fusion(feats)
    (
        output * torch.randn(output.shape, generator=torch.Generator().manual_seed(1))
    ).sum().backward()
    for name in PAIR:
        assert feats[name].pooled.grad.abs().sum() > 0, name
    # Bilinear: the output depends on each modality through the other (no additive split).
    one = features(seed=1)
    mixed = {"image": feats["image"], "text": one["text"]}
    with torch.no_grad():
        base, swapped = fusion.eval()(feats), fusion(mixed)
    assert not torch.allclose(base, swapped)


@pytest.mark.parametrize("cls", STRATEGIES, ids=lambda cls: cls.__name__)
def test_three_modalities_are_refused_by_name(cls):
    assert cls.max_modalities == 2
    with pytest.raises(ValueError, match=rf"{cls.__name__} is defined for at most 2 modalities"):
        cls(["image", "text", "audio"], DIM)


@pytest.mark.parametrize("name", ["mlb", "mfb", "mfh", "mutan", "block", "mcb"])
def test_the_config_check_refuses_three_modalities_with_the_choices(make_train_cfg, name):
    cfg = make_train_cfg(f"fusion={name}", "data.modalities=[image,text,audio]")
    with pytest.raises(
        ValueError,
        match=r"at most 2 modalities.*with 3 modalities choose one of fusion=\[.*'concat'",
    ) as caught:
        check_fusion(cfg)
    assert f"'{name}'" not in str(caught.value).split("choose one of")[1]
    check_fusion(make_train_cfg(f"fusion={name}", "data.modalities=[image,text]"))


BAD_SETTINGS = [
    (MLBFusion, {"hidden_dim": 0}, "hidden_dim must be at least 1, got 0"),
    (MLBFusion, {"activation": "relu"}, "activation must be one of"),
    (MFBFusion, {"hidden_dim": 0}, "hidden_dim must be at least 1, got 0"),
    (MFBFusion, {"factor": 0}, "factor must be at least 1, got 0"),
    (MFBFusion, {"factor": DIM + 1}, rf"factor \({DIM + 1}\) must not exceed dim \({DIM}\)"),
    (MFHFusion, {"blocks": 0}, "blocks must be at least 1, got 0"),
    (MFHFusion, {"hidden_dim": -1}, "hidden_dim must be at least 1, got -1"),
    (MFHFusion, {"factor": 0}, "factor must be at least 1, got 0"),
    (MFHFusion, {"factor": DIM + 1}, rf"factor \({DIM + 1}\) must not exceed dim \({DIM}\)"),
    (MutanFusion, {"rank": 0}, "rank must be at least 1, got 0"),
    (MutanFusion, {"hidden_dim": 0}, "hidden_dim must be at least 1, got 0"),
    (
        MutanFusion,
        {"hidden_dim": 4, "rank": 5},
        r"rank \(5\) must not exceed hidden_dim \(4\)",
    ),
    (BlockFusion, {"chunks": 0}, "chunks must be at least 1, got 0"),
    (MCBFusion, {"hidden_dim": 0}, "hidden_dim must be at least 1, got 0"),
    (BlockFusion, {"rank": 0}, "rank must be at least 1, got 0"),
    (BlockFusion, {"hidden_dim": 0}, "hidden_dim must be at least 1, got 0"),
    (
        BlockFusion,
        {"hidden_dim": 3, "rank": 4},
        r"rank \(4\) must not exceed hidden_dim \(3\)",
    ),
]


@pytest.mark.parametrize(
    ("cls", "settings", "message"),
    BAD_SETTINGS,
    ids=[f"{cls.__name__}-{next(iter(s))}-{i}" for i, (cls, s, _) in enumerate(BAD_SETTINGS)],
)
def test_bad_settings_are_named(cls, settings, message):
    with pytest.raises(ValueError, match=rf"{cls.__name__}: {message}"):
        cls(list(PAIR), DIM, **settings)
