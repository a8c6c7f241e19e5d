"""``trainer=ddp_cpu`` for every objective: two gloo processes follow the one-process run.

Each case trains twice from the same seed: one process with the global batch, and two
processes with half of it each. The training sampler deals global batch ``k`` to the
processes whatever their count (:mod:`mmexp.data.sampling`) and DDP averages the gradients,
so the weights, and with them every validation and test figure, agree up to float
rounding. Evaluation shards are unrepeated: 81 validation and test samples leave the ranks
41 and 40, so every case also checks that each sample is scored once and that uneven last
batches go through the objective's reductions.

The towers are those of :mod:`tests.helpers.ddp_runs` (LayerNorm, no dropout: see
there), the feature-sequence towers of the regression case likewise.

What the comparison catches: a contrastive loss over each rank's own batch (no gather)
starts near ``ln 16`` instead of ``ln 32``, 0.7 off the train loss; a repeated or dropped
evaluation sample moves the split's means and counts. What it cannot see: a gradient
scaled uniformly (``objective.loss.gather_with_grad=false`` halves the towers' gradient),
which AdamW normalises away; tests/losses/test_contrastive.py checks the gradient itself.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pytest

from mmexp.eval import evaluate
from tests.helpers.configs import compose_config
from tests.helpers.ddp_runs import SHAPES_TOWERS, TRAINING, run, scored_test_samples
from tests.helpers.frozen_towers import FROZEN_TOWERS
from tests.helpers.multibench_fixtures import write_affect_pickle
from tests.helpers.published_fixtures import write_mmimdb

# 81 evaluation samples: uneven shards (41 + 40) and an uneven last batch per rank.
SHAPES_SPLITS = ["data.num_train=96", "data.num_val=81", "data.num_test=81"]
SPLITS = {"train": 64, "val": 27, "test": 27}
# The feature-sequence towers of experiment=mosi with LayerNorm inputs and no dropout: their
# default per-batch input standardisation differs per process under DDP.
SEQUENCE_TOWERS = [
    f"model.encoders.{m}.{key}={value}"
    for m in ("text", "audio", "vision")
    for key, value in (("input_norm", "layer"), ("dropout", 0.0))
]
RECALLS = [f"r@{k}_{d}" for k in (1, 5, 10) for d in ("i2t", "t2i")]


@dataclass(frozen=True)
class Case:
    """One objective's runs and the figures both must report alike.

    Attributes:
        overrides: Hydra overrides of both runs (``{root}`` is the case's data folder).
        batch: Global training batch; two processes take half of it each.
        eval_batch: Global evaluation batch, halved likewise: the contrastive losses score
            each batch's pairs against one another, so the one-process batch must hold the
            pairs of both ranks' batches (the evaluation shards interleave the samples,
            making global batch ``k`` the same pairs as the one-process batch ``k``).
        metrics: Final metrics that must agree.
        recalls: Splits whose retrieval recalls must agree up to one flipped rank.
        data: Writes the case's data set into the given folder (``None``: shapes).
    """

    overrides: tuple[str, ...]
    batch: int
    eval_batch: int | None
    metrics: tuple[str, ...]
    recalls: tuple[str, ...] = ()
    data: object = None


def mmimdb(root: Path) -> Path:
    """MM-IMDb in its release format, 64 / 27 / 27 movies."""
    return write_mmimdb(root, {"train": SPLITS["train"], "dev": SPLITS["val"], "test": 27})


def mosi(root: Path) -> Path:
    """MOSI's word-aligned pickle, 64 / 27 / 27 segments (none wordless)."""
    counts = {"train": SPLITS["train"], "valid": SPLITS["val"], "test": SPLITS["test"]}
    return write_affect_pickle(root, "mosi", counts=counts, empty_text=None)


LOADER = ["data.num_workers=0", "data.persistent_workers=false", "data.pin_memory=false"]
CASES = {
    # Sigmoid per genre: per-sample losses, F1 from summed counts, mAP over every score.
    "multilabel": Case(
        ("data=mmimdb", "data.root={root}", *LOADER, "objective=multilabel", *SHAPES_TOWERS),
        batch=32,
        eval_batch=None,
        metrics=tuple(
            f"{split}/{name}"
            for split in ("val", "test")
            for name in ("loss", "f1_micro", "f1_macro", "f1_samples", "map")
            if (split, name) != ("test", "loss")
        ),
        data=mmimdb,
    ),
    # L1 loss; MAE, Pearson correlation (a reduction over every prediction) and accuracies.
    "regression": Case(
        ("experiment=mosi", "data.root={root}", "data.eval_batch_size=27", *SEQUENCE_TOWERS),
        batch=32,
        eval_batch=None,
        metrics=tuple(
            f"{split}/{name}"
            for split in ("val", "test")
            for name in ("mae", "corr", "acc7", "acc2_has0", "f1_has0")
        )
        + ("val/loss",),
        data=mosi,
    ),
    # CLIP loss over the gathered global batch; recall over the whole gathered gallery.
    "contrastive": Case(
        ("objective=contrastive", *SHAPES_TOWERS, *SHAPES_SPLITS),
        batch=32,
        eval_batch=54,
        metrics=("val/loss", "train/temperature", "test/gallery_size"),
        recalls=("val", "test"),
    ),
    # Generations gathered from both ranks and scored once: each image once, 81 captions.
    "caption": Case(
        ("objective=caption", "objective.decoder.dropout=0.0", *SHAPES_TOWERS, *SHAPES_SPLITS),
        batch=32,
        eval_batch=None,
        metrics=tuple(
            f"{split}/{name}"
            for split in ("val", "test")
            for name in ("bleu1", "bleu4", "rouge_l", "cider")
        )
        + ("val/loss", "test/meteor"),
    ),
    # OGM-GE: confidences summed over the ranks, noise seeded by the step, so both runs
    # modulate alike; G-Blend: the heads' losses summed over the ranks before the weights.
    "ogm_ge": Case(
        ("training=ogm_ge", *SHAPES_TOWERS, *SHAPES_SPLITS),
        batch=32,
        eval_batch=None,
        metrics=("val/loss", "val/acc", "test/acc", "test/loss")
        + tuple(f"ogm_ge/{m}/{k}_epoch" for m in ("image", "text") for k in ("coeff", "ratio")),
    ),
    "gradient_blending": Case(
        (
            "training=gradient_blending",
            "model.unimodal_losses.super_epoch=1",
            *SHAPES_TOWERS,
            *SHAPES_SPLITS,
        ),
        batch=32,
        eval_batch=None,
        metrics=("val/loss", "val/acc", "test/acc", "train/image_loss_epoch")
        + tuple(f"gblend/{h}/weight" for h in ("fused", "image", "text")),
    ),
}


def train_both(tmp_path: Path, data_dir: Path, case: Case, common: list[str]) -> dict:
    """Train the case on one and on two processes; both final metrics and run folders."""
    sizes = {"single": (case.batch, case.eval_batch), "ddp": (case.batch // 2, None)}
    if case.eval_batch is not None:
        sizes["ddp"] = (case.batch // 2, case.eval_batch // 2)
    results = {}
    for name, trainer in (("single", "trainer=cpu"), ("ddp", "trainer=ddp_cpu")):
        batch, eval_batch = sizes[name]
        options = [trainer, f"data.batch_size={batch}"]
        if eval_batch is not None:
            options.append(f"data.eval_batch_size={eval_batch}")
        metrics, out = run(tmp_path, data_dir, name, *options, common=common)
        results[name] = {"metrics": metrics, "out": out}
    return results


@pytest.mark.slow  # two trainings each, one of them two processes
@pytest.mark.parametrize("objective", list(CASES))
def test_two_processes_with_half_the_batch_report_the_single_process_metrics(
    objective, tmp_path, data_dir
):
    case = CASES[objective]
    root = case.data(tmp_path / "data") if case.data else None
    common = [o.format(root=root) for o in case.overrides] + TRAINING
    runs = train_both(tmp_path, data_dir, case, common)
    single, ddp = runs["single"]["metrics"], runs["ddp"]["metrics"]
    for name in case.metrics:
        assert math.isfinite(single[name]), name
        assert ddp[name] == pytest.approx(single[name], rel=1e-4, abs=1e-5), name
    # The loss of every training step, averaged: the same global batches in the same order.
    assert ddp["train/loss_epoch"] == pytest.approx(single["train/loss_epoch"], rel=1e-4)
    for split in case.recalls:
        assert_same_recalls(single, ddp, split)
    if objective == "contrastive":
        assert ddp["test/gallery_size"] == 81  # each test pair once, not 82
    if objective == "caption":
        for run_name in ("single", "ddp"):
            captions = (runs[run_name]["out"] / "captions/test.jsonl").read_text().splitlines()
            assert sorted(json.loads(row)["id"] for row in captions) == list(range(81))


def assert_same_recalls(single: dict, ddp: dict, split: str) -> None:
    """Recalls of ``split`` equal up to one query whose partner's rank crossed a cut-off.

    The gradients that two processes average agree with one process's only up to float
    rounding, and so do the weights: shapes draws several samples of one scene (equal
    captions), so near-ties in a ranking can fall either way. Measured: one val query of
    81 crossed r@10 (rsum 37.04 vs 38.27), the test recalls all equal.
    """
    one_query = 1 / single[f"{split}/gallery_size"]
    for name in RECALLS:
        key = f"{split}/{name}"
        assert ddp[key] == pytest.approx(single[key], abs=one_query + 1e-6), key
    assert ddp[f"{split}/rsum"] == pytest.approx(
        single[f"{split}/rsum"], abs=100 * one_query + 1e-4
    )


@pytest.mark.slow  # a 2-process training and a test of its checkpoint
def test_itm_under_ddp_reports_what_one_process_reports_of_its_checkpoint(tmp_path, data_dir):
    # No one-process equivalence by design: matching negatives are drawn within each
    # rank's batch (mmexp.losses.itm: gathering the token sequences the fusion needs would
    # cost more than the extra negatives are worth), from each rank's own random stream.
    # Two ranks of 16 draw from 15 others, one process of 32 from 31, so the matching loss,
    # and through the shared towers every figure, follows another path. What must hold:
    # the run trains and validates over uneven shards (the contrastive loss gathers the
    # ranks' unequal last batches), every test pair is scored once, and the test recalls
    # are those one process computes from the saved checkpoint.
    common = ["objective=itm", "fusion.dropout=0.0", *SHAPES_TOWERS, *SHAPES_SPLITS, *TRAINING]
    ddp, out = run(
        tmp_path, data_dir, "ddp", "trainer=ddp_cpu", "data.batch_size=16", common=common
    )
    for name in ("train/loss_epoch", "train/itm_loss", "val/loss", "val/itm_acc"):
        assert math.isfinite(ddp[name]), name
    assert 0 <= ddp["val/itm_acc"] <= 1
    assert ddp["test/gallery_size"] == 81
    best = json.loads((out / "results.json").read_text())["best_checkpoint"]
    cfg = compose_config(
        "eval",
        [f"ckpt_path={best}", "logger=csv", "trainer.accelerator=cpu"],
        tmp_path / "eval",
        data_dir,
    )
    single = evaluate(cfg)["metrics"]
    assert single["test/gallery_size"] == 81
    assert_same_recalls(single, ddp, "test")


@pytest.mark.slow  # two trainings over cached features, one of them two processes
def test_ddp_over_the_feature_cache_follows_the_one_process_cached_run(
    tmp_path, data_dir, bert_dir, vit_weights
):
    # tests/data/test_feature_cache_ddp.py checks who builds and reads the entries; here
    # the point is training: the ranks' shards of the cached splits (an in-memory loader,
    # not the data module's) must give the one-process run's figures. One cache for both
    # runs: the one-process run builds it, the two processes read it.
    common = [
        *FROZEN_TOWERS,
        f"model.encoders.text.name_or_path={bert_dir}",
        f"model.encoders.image.checkpoint_path={vit_weights}",
        "feature_cache.enabled=true",
        f"feature_cache.dir={tmp_path / 'cache'}",
        *SHAPES_SPLITS,
        "data.eval_batch_size=27",
        *TRAINING,
    ]
    case = Case((), batch=32, eval_batch=None, metrics=())
    runs = train_both(tmp_path, data_dir, case, common)
    single, ddp = runs["single"]["metrics"], runs["ddp"]["metrics"]
    compared = ("val/loss", "val/acc", "val/auroc", "test/acc", "test/loss", "train/loss_epoch")
    assert (
        scored_test_samples(runs["single"]["out"]) == scored_test_samples(runs["ddp"]["out"]) == 81
    )
    for name in compared:
        assert ddp[name] == pytest.approx(single[name], rel=1e-4, abs=1e-5), name
