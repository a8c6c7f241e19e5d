"""robustness.missing_cases: the "missing both" case of Ma et al. / Lee et al. at each test rate."""

import pytest
import torch
from omegaconf import OmegaConf

from mmexp.data.missing import MissingModalities
from mmexp.robustness.conditions import build_grid
from tests.helpers.configs import compose_config

MODALITIES = ["image", "text"]
RATES = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
INDEX = torch.arange(20_000)


def grid(tmp_path, data_dir, name):
    cfg = compose_config("train", [f"robustness={name}"], tmp_path / "run", data_dir)
    return OmegaConf.to_container(cfg.robustness, resolve=True)


def by_name(conditions):
    return {condition.name: condition for condition in conditions}


def test_the_grid_scores_text_image_and_both_missing_at_every_rate(tmp_path, data_dir):
    conditions = by_name(build_grid(grid(tmp_path, data_dir, "missing_cases"), MODALITIES))
    expected = ["clean", "subset:image", "subset:text"]
    for case in ("text", "image", "both"):
        expected += [f"missing:{case}@{rate:g}" for rate in RATES]
    assert list(conditions) == expected
    both = conditions["missing:both@0.7"]
    assert (both.kind, both.modality, both.level, both.present) == (
        "missing_rate",
        "both",
        0.7,
        ("image", "text"),
    )
    assert both.curve == "missing:both" and both.removes_only


@pytest.mark.parametrize("rate", [0.2, 0.7, 1.0])
def test_both_missing_is_rate_over_two_each_and_never_both_in_one_sample(tmp_path, data_dir, rate):
    conditions = by_name(build_grid(grid(tmp_path, data_dir, "missing_cases"), MODALITIES))
    present = conditions[f"missing:both@{rate:g}"].presence(INDEX, MODALITIES)
    for modality in MODALITIES:
        assert float((~present[modality]).float().mean()) == pytest.approx(rate / 2, abs=0.01)
    assert bool((present["image"] | present["text"]).all())  # no sample lacks both
    # The very samples data/missing=case data.missing.case=both data.missing.rate=<rate>
    # removes from the test split (same seed 0): trained and scored on the same protocol.
    trained = MissingModalities.for_case("both", rate, MODALITIES, seed=0)
    assigned = trained.present("test", INDEX, MODALITIES)
    for modality in MODALITIES:
        assert torch.equal(present[modality], assigned[modality])


def test_single_modality_cases_are_the_default_grids_conditions(tmp_path, data_dir):
    cases = by_name(build_grid(grid(tmp_path, data_dir, "missing_cases"), MODALITIES))
    default = by_name(build_grid(grid(tmp_path, data_dir, "missing"), MODALITIES))
    assert not any(name.startswith("missing:both") for name in default)
    assert set(default) < set(cases)
    for name in ("missing:text@0.3", "missing:image@1"):
        ours, theirs = (
            cases[name].presence(INDEX, MODALITIES),
            default[name].presence(INDEX, MODALITIES),
        )
        assert all(torch.equal(ours[m], theirs[m]) for m in MODALITIES)
        assert cases[name].describe() == default[name].describe()


def test_cases_for_other_modalities_are_left_out_or_refused_when_the_grid_is_strict():
    base = {"name": "g", "seed": 0, "missing_rates": [0.5], "missing_cases": ["audio", "both"]}
    names = [c.name for c in build_grid(base, MODALITIES)]
    assert names == ["clean", "missing:both@0.5"]
    with pytest.raises(ValueError, match=r"missing_cases has \['audio'\].*'both'"):
        build_grid({**base, "modalities": MODALITIES}, MODALITIES)
    with pytest.raises(ValueError, match=r"missing_cases names \['text'\] more than once"):
        build_grid({**base, "missing_cases": ["text", "both", "text"]}, MODALITIES)
    # A single-modality checkpoint has no missing-rate conditions at all.
    assert [c.name for c in build_grid(base, ["image"])] == ["clean"]
