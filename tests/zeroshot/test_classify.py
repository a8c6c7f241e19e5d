"""Zero-shot classification of a tiny contrastive checkpoint trained on shapes.

``mmexp-eval zeroshot=classify`` runs once through the CLI; every figure it writes is
recomputed here from the towers directly (the prompts of each class as one batch) and
scored by sklearn. The class embeddings are also compared with open_clip's own
``build_zero_shot_classifier`` applied to the same text tower.
"""

import csv
import json
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
import yaml
from open_clip.zero_shot_classifier import build_zero_shot_classifier
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

from mmexp import CONFIG_DIR
from mmexp.eval import evaluate
from mmexp.zeroshot import AlignedTowers, class_embeddings
from tests.helpers.cli import run_cli
from tests.helpers.configs import compose_config
from tests.helpers.tiny_runs import train_tiny
from tests.helpers.zeroshot import (
    assert_matches,
    direct_scores,
    module_of_checkpoint,
    sklearn_metrics,
)

SHAPES = ["circle", "square", "triangle"]
SIMPLE = ["a photo of a {}."]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir):
    """A tiny contrastive run on shapes (image + caption towers), its module rebuilt."""
    folder = tmp_path_factory.mktemp("runs") / "contrastive"
    result = train_tiny(folder, data_dir, "objective=contrastive", "trainer.max_epochs=2")
    checkpoint = folder / "checkpoints" / "last.ckpt"
    datamodule, module = module_of_checkpoint(checkpoint)
    return SimpleNamespace(
        folder=folder, checkpoint=checkpoint, result=result, datamodule=datamodule, module=module
    )


@pytest.fixture(scope="module")
def cli(trained, tmp_path_factory):
    """``mmexp-eval zeroshot=classify`` with both shipped template sets and top-1/2/5."""
    eval_dir = tmp_path_factory.mktemp("cli") / "eval"
    run_cli(
        "eval",
        f"ckpt_path={trained.checkpoint}",
        "zeroshot=classify",
        "zeroshot.ks=[1,2,5]",
        "trainer.accelerator=cpu",
        f"hydra.run.dir={eval_dir}",
        cwd=eval_dir.parent,
    )
    payload = json.loads((trained.folder / "zeroshot.json").read_text())
    record = json.loads((eval_dir / "results.json").read_text())
    entry = payload["modes"]["classify"]
    return SimpleNamespace(payload=payload, entry=entry, record=record, eval_dir=eval_dir)


def openai_templates():
    path = f"{CONFIG_DIR}/zeroshot/templates/openai_imagenet.yaml"
    return yaml.safe_load(open(path))["openai_imagenet"]


def test_the_shipped_ensemble_is_the_clip_papers_80_templates():
    assert openai_templates() == [template("{}") for template in OPENAI_IMAGENET_TEMPLATES]
    assert len(openai_templates()) == 80


def test_accuracies_equal_a_direct_computation_scored_by_sklearn(trained, cli):
    entry = cli.entry
    assert cli.payload["checkpoint"] == str(trained.checkpoint.resolve())
    assert entry["labels"] == SHAPES and entry["class_names"] == SHAPES
    assert entry["samples"] == 80 and entry["ks"] == [1, 2, 5]
    assert entry["logit_scale"] == pytest.approx(trained.module.loss_fn.logit_scale.item())
    for name, templates in (("simple", SIMPLE), ("openai_imagenet", openai_templates())):
        assert entry["sets"][name]["templates"] == templates
        logits, labels = direct_scores(trained.module, trained.datamodule, SHAPES, templates)
        # three classes: top-5 is left out, top-2 is not
        expected = sklearn_metrics(logits, labels, ks=(1, 2))
        assert_matches(entry["sets"][name], expected, SHAPES)
        assert set(entry["sets"][name]["metrics"]) == {"top1", "top2", "mean_per_class", "loss"}
        counts = [int((labels == c).sum()) for c in range(3)]
        assert [entry["sets"][name]["per_class"][s]["samples"] for s in SHAPES] == counts


def test_results_go_to_the_record_the_loggers_and_the_csv(trained, cli):
    flat = {
        f"zeroshot/{name}/{metric}": value
        for name, entry in cli.entry["sets"].items()
        for metric, value in entry["metrics"].items()
    }
    assert len(flat) == 8
    assert cli.record["metrics"] == pytest.approx(flat)
    assert cli.record["zeroshot"]["file"] == str(trained.folder / "zeroshot.json")
    assert "test/rsum" not in cli.record["metrics"]  # zero-shot replaces the plain test
    with open(cli.eval_dir / "csv" / "metrics.csv") as handle:
        (logged,) = list(csv.DictReader(handle))
    assert {key: float(logged[key]) for key in flat} == pytest.approx(flat)
    with open(cli.record["zeroshot"]["per_class"]) as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["set"], row["class"]) for row in rows] == [
        (name, label) for name in ("simple", "openai_imagenet") for label in SHAPES
    ]
    for row in rows:
        scored = cli.entry["sets"][row["set"]]["per_class"][row["class"]]
        assert float(row["acc"]) == pytest.approx(scored["acc"])


def test_template_averaging_equals_open_clips_classifier(trained):
    towers = AlignedTowers.of(trained.module)
    processor = towers.text.processor(train=False)

    class Batch:  # open_clip moves the tokenizer's output to the device
        def __init__(self, texts):
            self.inputs = processor.collate([processor(text) for text in texts])

        def to(self, device):
            return self

    class TowerAsClip:  # open_clip's model interface: encode_text(tokens, normalize)
        def encode_text(self, batch, normalize=False):
            pooled = towers.text(batch.inputs).pooled
            return F.normalize(pooled, dim=-1) if normalize else pooled

    trained.module.eval()
    names = ["circle", "square", "triangle", "round shape", "wedge"]
    reference = build_zero_shot_classifier(
        TowerAsClip(), Batch, names, OPENAI_IMAGENET_TEMPLATES, num_classes_per_batch=2
    )
    ours = class_embeddings(towers.text, names, openai_templates(), batch_size=37)
    assert ours.shape == (5, trained.module.encoders["text"].out_dim)
    torch.testing.assert_close(ours, reference.T, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("suffix", [".txt", ".json"])
def test_a_names_file_changes_the_prompts(trained, tmp_path, data_dir, suffix):
    synonyms = ["disc", "box", "wedge"]
    names = tmp_path / f"names{suffix}"
    if suffix == ".txt":
        names.write_text("\n".join(synonyms) + "\n")
    else:  # an object from the data's class names to the prompt names
        names.write_text(json.dumps(dict(zip(SHAPES, synonyms, strict=True))))
    cfg = compose_config(
        "eval",
        [
            f"ckpt_path={trained.checkpoint}",
            "zeroshot=classify",
            "zeroshot/templates=[simple]",
            f"zeroshot.class_names={names}",
            f"zeroshot.output_dir={tmp_path / 'out'}",
            "trainer.accelerator=cpu",
            "callbacks=none",
        ],
        tmp_path / "eval",
        data_dir,
    )
    evaluate(cfg)
    entry = json.loads((tmp_path / "out" / "zeroshot.json").read_text())["modes"]["classify"]
    assert entry["class_names"] == synonyms and entry["labels"] == SHAPES
    assert entry["class_names_from"] == str(names)
    logits, labels = direct_scores(trained.module, trained.datamodule, synonyms, SIMPLE)
    assert_matches(entry["sets"]["simple"], sklearn_metrics(logits, labels), SHAPES)


def test_run_overrides_with_a_checkpoint_are_refused(trained, tmp_path, data_dir):
    overrides = [f"ckpt_path={trained.checkpoint}", "zeroshot=classify", "data.task=synergy"]
    cfg = compose_config("eval", [*overrides, "++model.width=8"], tmp_path / "eval", data_dir)
    match = r"so \['data.task=synergy', '\+\+model.width=8'\] would not apply; .*overrides=\["
    with pytest.raises(ValueError, match=match):
        evaluate(cfg)
    assert not (trained.folder / "zeroshot.previous-1.json").exists()
