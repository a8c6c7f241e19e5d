"""The fairness contract of the ablation matrix (docs/fairness.md), over every fusion config.

Every row reads the same encoder outputs and ends in the same head (decision-level rows: one
head of that size per modality), and with ``fusion.match_params`` fusion + head parameters
of every row lie within 5 % of the budget, or the row is refused with the reason.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from mmexp.builders import build_fusion_and_head, build_module
from mmexp.fusion.cost import count_params, fusion_cost
from mmexp.lit.heads import MLPHead
from tests.helpers.configs import compose_config
from tests.helpers.fusion import modalities_override, widest_modalities

CONF = Path(__file__).resolve().parents[2] / "conf" / "fusion"
STRATEGIES = sorted(p.stem for p in CONF.glob("*.yaml"))
NUM_CLASSES = 3
# Token-level strategies whose attention weights alone exceed a budget at width 128 with three
# modalities (MulT has six directional stacks): refused with the reason, not silently bigger.
# Every row is built on the most modalities its strategy takes: three, or two for the
# bilinear poolings (widest_modalities).
OVER_BUDGET = {200_000: {"bottleneck", "cross_attention", "mult"}, 1_000_000: {"mult"}}
# Rows whose width moves the count in steps above 5 % of a budget: MI's full form has
# (128 + 1)^2 = 16.6 k parameters per output unit, and k = 11 (187 k) is the most within
# 200 k. Refused with the reason as well.
TOO_COARSE = {200_000: {"mi_matrix"}, 1_000_000: set()}


def compose(tmp_path: Path, *overrides: str):
    return compose_config("train", list(overrides), tmp_path / "run", tmp_path / "data")


def fusion_and_head(tmp_path: Path, *overrides: str) -> tuple[nn.Module, nn.Module]:
    with torch.device("meta"):  # shapes only: no memory for the weights
        return build_fusion_and_head(compose(tmp_path, *overrides), NUM_CLASSES)


@pytest.mark.parametrize("name", STRATEGIES)
def test_every_row_ends_in_the_shared_head(tmp_path, name):
    fusion, head = fusion_and_head(
        tmp_path, f"fusion={name}", modalities_override(widest_modalities(name))
    )
    shared = MLPHead(128, NUM_CLASSES, (256,), 0.1)  # conf/model/default.yaml's head
    if fusion.produces_logits:
        assert isinstance(head, nn.Identity)
        # Decision level: one classifier per modality, each the shared head over one vector.
        for classifier in fusion.classifiers.values():
            assert isinstance(classifier, MLPHead)
            assert [type(m) for m in classifier] == [type(m) for m in shared]
            assert count_params(classifier) == count_params(shared)
    else:
        assert isinstance(head, MLPHead)
        reference = MLPHead(fusion.out_dim, NUM_CLASSES, (256,), 0.1)
        assert [type(m) for m in head] == [type(m) for m in reference]
        assert count_params(head) == count_params(reference)


def test_late_fusion_heads_follow_the_configured_head(tmp_path):
    fusion, _ = fusion_and_head(
        tmp_path, "fusion=late", "model.head.hidden_dims=[64,32]", "model.head.dropout=0.3"
    )
    for classifier in fusion.classifiers.values():
        assert count_params(classifier) == count_params(MLPHead(128, NUM_CLASSES, (64, 32)))
        assert [m.p for m in classifier if isinstance(m, nn.Dropout)] == [0.3, 0.3]


@pytest.mark.parametrize("name", STRATEGIES)
def test_every_row_reads_the_same_encoder_outputs(tmp_path, name):
    # One module per strategy around the same encoders: the encoders' outputs on a batch are
    # identical, so rows differ only in fusion + head.
    torch.manual_seed(0)
    widest = modalities_override(widest_modalities(name))
    module = build_module(
        compose(tmp_path, f"fusion={name}", "model.width=32", widest), NUM_CLASSES
    )
    torch.manual_seed(0)
    reference = build_module(
        compose(tmp_path, "fusion=concat", "model.width=32", widest), NUM_CLASSES
    )
    assert module.encoders.state_dict().keys() == reference.encoders.state_dict().keys()
    for key, value in module.encoders.state_dict().items():
        torch.testing.assert_close(value, reference.encoders.state_dict()[key], msg=key)


@pytest.mark.parametrize("budget", [200_000, 1_000_000])
@pytest.mark.parametrize("name", STRATEGIES)
def test_match_params_budgets_fusion_and_head_within_five_percent(tmp_path, name, budget):
    overrides = [
        f"fusion={name}",
        f"fusion.match_params={budget}",
        modalities_override(widest_modalities(name)),
    ]
    if name in OVER_BUDGET[budget]:
        with pytest.raises(ValueError, match=r"even width 8 gives \d+ parameters, over the budget"):
            fusion_and_head(tmp_path, *overrides)
        return
    if name in TOO_COARSE[budget]:
        with pytest.raises(ValueError, match=r"reaches only \d+ parameters .* at width \d+"):
            fusion_and_head(tmp_path, *overrides)
        return
    fusion, head = fusion_and_head(tmp_path, *overrides)
    total = count_params(fusion) + count_params(head)
    assert 0.95 * budget <= total <= budget, (name, total)


def test_a_row_that_cannot_reach_the_budget_is_refused(tmp_path):
    # Unimodal: LN(128) + Linear(128, w) + Linear(w, 3) = 256 + 132 w + 3 < 10^8 at w = 2^16.
    with pytest.raises(ValueError, match=r"UnimodalFusion reaches only \d+ parameters"):
        fusion_and_head(tmp_path, "fusion=unimodal", "fusion.match_params=100000000")


def test_parameter_free_rows_are_matched_through_the_head(tmp_path):
    fusion, head = fusion_and_head(tmp_path, "fusion=concat", "fusion.match_params=100000")
    assert count_params(fusion) == 0
    width = head[1].out_features  # LayerNorm, then the first hidden layer
    # LN(256) + Linear(256, w) + Linear(w, 3) = 512 + 257 w + 3 w + 3
    assert 512 + 260 * width + 3 <= 100_000 < 512 + 260 * (width + 1) + 3


def readme_strategy_rows() -> list[tuple[str, list[str]]]:
    """``(fusion name, [fusion params, head params, FLOPs])`` of each README table row."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = readme.split("| `fusion=` | method |", 1)[1].split("\n\n", 1)[0]
    rows = []
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        for name in cells[0].replace("`", "").split(", "):
            rows.append((name, cells[3:6]))
    return rows


def parse_figure(text: str) -> tuple[float, float]:
    """A README figure (``794 k``, ``1.19 M``, ``68 k (2 heads)``) and half its last digit."""
    number, _, unit = text.split(" (")[0].partition(" ")
    scale = {"": 1, "k": 1e3, "M": 1e6}[unit]
    decimals = len(number.partition(".")[2])
    return float(number) * scale, 0.5 * scale * 10**-decimals


def test_readme_strategy_table_matches_the_built_rows(tmp_path):
    rows = readme_strategy_rows()
    assert sorted(name for name, _ in rows) == STRATEGIES  # every strategy, in one row each
    for name, figures in rows:
        torch.manual_seed(0)
        fusion, head = build_fusion_and_head(
            compose(
                tmp_path,
                f"fusion={name}",
                "data.modalities=[image,text,audio]"
                if name == "unimodal_audio"
                else "data.modalities=[image,text]",
            ),
            NUM_CLASSES,
        )
        lengths = {"image": 16, "text": 18, "audio": 20}
        cost = fusion_cost(fusion, {m: lengths[m] for m in fusion.modalities}, 128)
        actual = [cost["params"], count_params(head), cost["flops_per_sample"]]
        if name == "unimodal_audio":
            actual[2] = 0  # its cost does not depend on the other modalities
        for label, text, value in zip(
            ("fusion params", "head params", "FLOPs"), figures, actual, strict=True
        ):
            expected, tolerance = parse_figure(text)
            assert abs(value - expected) <= tolerance, (name, label, text, value)
