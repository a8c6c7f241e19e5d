"""data.missing: which samples lack which modality, fixed per sample, and the batches training sees.

The rates are checked against binomial tolerances (four standard deviations) over 1000
sample indices; the draws are a hash of seed, split and index, so the checks are exact
reruns, not flaky.
"""

import itertools
import json
import math
from pathlib import Path

import pytest
import torch
from hydra.errors import InstantiationException

from mmexp.builders import build_data_and_model
from mmexp.data.feature_cache import cache_key
from mmexp.data.missing import PRESENT_KEY, MarkMissing, MissingModalities
from mmexp.encoders.base import CachedFeatures
from mmexp.lit.common import MultimodalModule
from mmexp.train import train
from tests.helpers.tiny_runs import train_tiny

MODALITIES = ["image", "text"]
INDEX = torch.arange(1000)
# Lightning's running stage -> the split whose batches it reads
SPLIT_OF = {"train": "train", "sanity_check": "val", "validate": "val", "test": "test"}


def within(fraction, expected, count=1000):
    return abs(float(fraction) - expected) <= 4 * math.sqrt(expected * (1 - expected) / count)


def missing_of(present):
    return torch.stack([~present[m] for m in present], dim=1)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: MissingModalities({"text": 1.5}), r"data\.missing\.rates\.text=1\.5 is outside"),
        (lambda: MissingModalities({"image": -0.1}), r"data\.missing\.rates\.image=-0\.1 is"),
        (
            lambda: MissingModalities({"image": 0.6, "text": 0.5}),
            r"data\.missing\.rates \{.*\} sum to 1\.1 > 1; with exclusive=true",
        ),
        (
            lambda: MissingModalities({"text": 0.2}, splits=("train", "dev")),
            r"data\.missing\.splits has \['dev'\]",
        ),
        (lambda: MissingModalities.for_case("audio", 0.5), r"data\.missing\.case='audio'"),
        (
            lambda: MissingModalities({"audio": 0.2}).check(MODALITIES),
            r"data\.missing\.rates names \['audio'\], which data\.modalities",
        ),
        (
            lambda: MissingModalities({"text": 0.2}).check(["text"]),
            r"data\.missing with data\.modalities=\['text'\]",
        ),
        (
            lambda: MissingModalities({"image": 0.2, "text": 0.1}, exclusive=False).check(
                MODALITIES
            ),
            r"with exclusive=false: a sample could lack every modality",
        ),
    ],
)
def test_assignments_that_cannot_hold_are_refused_naming_the_key(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_assignments_at_the_limits_are_accepted():
    MissingModalities({"image": 0.0, "text": 1.0}, exclusive=False).check(MODALITIES)
    everything = MissingModalities({"image": 0.5, "text": 0.5}).present("val", INDEX, MODALITIES)
    assert missing_of(everything).sum(dim=1).eq(1).all()  # each sample lacks exactly one


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data/missing=rates", "data.missing.rates={audio: 0.3}"], r"names \['audio'\]"),
        (["data/missing=case", "data.missing.case=audio"], r"data\.missing\.case='audio'"),
        (["data/missing=case", "data.missing.rate=1.4"], r"data\.missing\.rate=1\.4 is outside"),
    ],
)
def test_the_config_is_checked_before_the_data_are_built(make_train_cfg, overrides, message):
    # the constructor's ValueError, or Hydra's InstantiationException around it
    with pytest.raises((ValueError, InstantiationException), match=message):
        build_data_and_model(make_train_cfg(*overrides))


def test_case_both_splits_the_rate_and_no_sample_lacks_both():
    present = MissingModalities.for_case("both", 0.6).present("train", INDEX, MODALITIES)
    assert within((~present["text"] & present["image"]).float().mean(), 0.3)
    assert within((~present["image"] & present["text"]).float().mean(), 0.3)
    assert not (~present["image"] & ~present["text"]).any()


def test_case_text_takes_the_text_only():
    present = MissingModalities.for_case("text", 0.7).present("train", INDEX, MODALITIES)
    assert within((~present["text"]).float().mean(), 0.7)
    assert present["image"].all()


def test_the_masks_are_fixed_by_seed_split_and_index_alone():
    def masks(seed=0, split="train", index=INDEX):
        return MissingModalities.for_case("both", 0.6, seed=seed).present(split, index, MODALITIES)

    first = masks()
    for again in (masks(), masks()):  # another call, another instance
        assert all(torch.equal(again[m], first[m]) for m in MODALITIES)
    for other in (masks(seed=1), masks(split="val")):
        assert sum(int((other[m] != first[m]).sum()) for m in MODALITIES) > 200
    order = torch.randperm(len(INDEX), generator=torch.Generator().manual_seed(0))
    shuffled = masks(index=INDEX[order])
    chunks = [masks(index=part) for part in INDEX.split(7)]
    for m in MODALITIES:
        assert torch.equal(shuffled[m], first[m][order])
        assert torch.equal(torch.cat([chunk[m] for chunk in chunks]), first[m])


# families of assignments over increasing rates: (modalities, rates -> assignment)
FAMILIES = {
    "case text": (MODALITIES, lambda r: MissingModalities.for_case("text", r)),
    "case image": (MODALITIES, lambda r: MissingModalities.for_case("image", r)),
    "case both": (MODALITIES, lambda r: MissingModalities.for_case("both", r)),
    "both of three": (
        ["image", "text", "audio"],
        lambda r: MissingModalities.for_case("both", r, modalities=("image", "text", "audio")),
    ),
    "text rising, image fixed": (
        MODALITIES,
        lambda r: MissingModalities({"image": 0.2, "text": 0.8 * r}),
    ),
    "independent": (MODALITIES, lambda r: MissingModalities({"text": r}, exclusive=False)),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_a_sample_lacking_a_modality_at_a_rate_lacks_it_at_every_higher_rate(family):
    modalities, assign = FAMILIES[family]
    masks = [assign(rate).present("test", INDEX, modalities) for rate in (0.1, 0.3, 0.5, 1.0)]
    for lower, higher in itertools.pairwise(masks):
        for m in modalities:
            assert not (~lower[m] & higher[m]).any(), f"{m}: missing at a lower rate only"
    assert missing_of(masks[-1]).sum(dim=1).le(1).all()  # still one modality at most


def test_splits_not_listed_are_complete():
    missing = MissingModalities.for_case("both", 0.6, splits=("train",))
    assert missing.applies_to("train") and not missing.applies_to("val")
    for split in ("val", "test"):
        assert all(p.all() for p in missing.present(split, INDEX, MODALITIES).values())
    assert not MissingModalities({}).applies_to("train")


def test_marked_batches_keep_what_the_data_set_itself_lacks():
    own = {"image": torch.tensor([True, False, True, True]), "text": torch.ones(4, dtype=bool)}

    def collate(samples):
        return {"index": torch.tensor(samples), PRESENT_KEY: dict(own)}

    missing = MissingModalities({"text": 0.5})
    batch = MarkMissing(collate, missing, "train", MODALITIES)([3, 1, 4, 5])
    drawn = missing.present("train", torch.tensor([3, 1, 4, 5]), MODALITIES)
    for m in MODALITIES:
        assert torch.equal(batch[PRESENT_KEY][m], drawn[m] & own[m])


@pytest.fixture
def seen(monkeypatch):
    """Every batch the module encodes in a run: (split, index, present masks, input types)."""
    batches = []
    presence = MultimodalModule.presence

    def spy(self, batch):
        split = SPLIT_OF[self.trainer.state.stage.value]
        marks = {m: p.clone() for m, p in (batch.get(PRESENT_KEY) or {}).items()}
        kinds = {type(batch[m]) for m in self.encoders}
        batches.append((split, batch["index"].clone(), marks, kinds))
        return presence(self, batch)

    monkeypatch.setattr(MultimodalModule, "presence", spy)
    return batches


def check_batches(seen, expected, marked):
    """Each batch of a split in ``marked`` carries ``expected``'s masks; the others none."""
    for split, index, marks, _ in seen:
        if split not in marked:
            assert marks == {}, f"{split} batches are complete"
            continue
        drawn = expected.present(split, index, MODALITIES)
        assert set(marks) == set(MODALITIES)
        for m in MODALITIES:
            assert torch.equal(marks[m], drawn[m]), f"{split} batch of {index.tolist()}"


def test_a_training_run_sees_the_assignment_drawn_on_its_batch_indices(seen, tmp_path, data_dir):
    train_tiny(
        tmp_path / "run",
        data_dir,
        "data/missing=case",
        "data.missing.rate=0.5",
        "data.missing.splits=[train,val]",
        "data.train_subset=0.5",
    )
    expected = MissingModalities.for_case("both", 0.5, splits=("train", "val"))
    check_batches(seen, expected, marked={"train", "val"})
    assert {split for split, *_ in seen} == {"train", "val", "test"}
    # the subset's 48 samples, each trained on once in the epoch, indexed within the subset
    trained = torch.cat([index for split, index, *_ in seen if split == "train"])
    assert sorted(trained.tolist()) == list(range(48))
    lacking = torch.cat([missing_of(marks) for split, _, marks, _ in seen if split == "train"])
    assert lacking[:, 0].any() and lacking[:, 1].any()  # both kinds occur
    assert lacking.sum(dim=1).le(1).all()


def test_cached_features_carry_the_same_assignment(seen, frozen_cfg):
    cfg = frozen_cfg(
        "feature_cache.enabled=true",
        "data/missing=case",
        "data.missing.case=text",
        "data.missing.rate=0.5",
    )
    result = train(cfg)
    assert result["feature_cache"] and result["status"] == "completed"
    assert all(kinds == {CachedFeatures} for *_, kinds in seen)  # a CachedDataModule's batches
    check_batches(seen, MissingModalities.for_case("text", 0.5), marked={"train", "val", "test"})
    assert {split for split, *_ in seen} == {"train", "val", "test"}
    tested = [marks for split, _, marks, _ in seen if split == "test"]
    assert any(not marks["text"].all() for marks in tested)


def test_the_feature_cache_is_shared_by_every_missing_assignment(make_train_cfg):
    def key(*overrides):
        return cache_key((b"tower",), make_train_cfg(*overrides).data, None, "train", False)

    plain = key()
    assert key("data/missing=case") == key("data/missing=case", "data.missing.rate=0.2") == plain
    assert key("data.num_train=100") != plain  # still keyed on the samples


def test_a_contrastive_objective_refuses_missing_modalities_before_training(make_train_cfg):
    cfg = make_train_cfg("objective=contrastive", "data/missing=case")
    with pytest.raises(ValueError, match=r"data\.missing: ContrastivePretrainer needs every"):
        train(cfg)
    run = Path(cfg.paths.output_dir)
    assert not (run / "checkpoints").exists()
    assert json.loads((run / "results.json").read_text())["status"] == "failed"
