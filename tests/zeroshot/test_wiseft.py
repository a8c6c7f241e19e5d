"""WiSE-FT on tiny shapes runs: a contrastive checkpoint, an image classifier finetuned from it
with its head set to the zero-shot classifier, and the weight-space ensembles in between.

alpha 0 is the zero-shot accuracy ``zeroshot=classify`` measures on the contrastive
checkpoint, alpha 1 the finetuned checkpoint's own test accuracy, and a middle alpha the
accuracy of the state dicts interpolated here by hand.
"""

import csv
import json
from types import SimpleNamespace

import pytest
import torch
from sklearn.metrics import accuracy_score

from mmexp.eval import evaluate
from mmexp.zeroshot.head import ZeroShotHeadInit
from mmexp.zeroshot.wiseft import WiseFT, interpolate
from tests.helpers.configs import compose_config
from tests.helpers.tiny_runs import TINY_OVERRIDES, train_tiny
from tests.helpers.zeroshot import direct_class_embeddings, module_of_checkpoint

SHAPES = ["circle", "square", "triangle"]
PROMPT = ["a photo of a {}."]
IMAGE_ONLY = ["data.modalities=[image]", "fusion=unimodal", "finetune=full"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_dir):
    """The contrastive run, the finetuned run, and ``wiseft=grid`` of the finetuned one."""
    root = tmp_path_factory.mktemp("runs")
    pretrained = train_tiny(root / "pretrain", data_dir, "objective=contrastive")
    source = pretrained["last_checkpoint"]
    finetuned = train_tiny(
        root / "finetune",
        data_dir,
        *IMAGE_ONLY,
        "init=zeroshot_head",
        f"pretrained_checkpoint={source}",
        "model.head.hidden_dims=[]",  # after TINY_OVERRIDES' hidden layer: the init's shape
        "trainer.max_epochs=3",
    )
    checkpoint = finetuned["best_checkpoint"]
    cfg = compose_config(
        "eval",
        [f"ckpt_path={checkpoint}", "wiseft=grid", "wiseft.alphas=[0,0.5,1]"]
        + ["trainer.accelerator=cpu", "callbacks=none"],
        root / "eval",
        data_dir,
    )
    record = evaluate(cfg)
    payload = json.loads((root / "finetune" / "wiseft.json").read_text())
    return SimpleNamespace(
        root=root,
        source=source,
        finetuned=finetuned,
        checkpoint=checkpoint,
        record=record,
        payload=payload,
        rows={row["alpha"]: row["metrics"] for row in payload["rows"]},
    )


def zero_shot_metrics(runs, data_dir, tmp_path):
    cfg = compose_config(
        "eval",
        [f"ckpt_path={runs.source}", "zeroshot=classify", "zeroshot/templates=[simple]"]
        + [f"zeroshot.output_dir={tmp_path}", "trainer.accelerator=cpu", "callbacks=none"],
        tmp_path / "eval",
        data_dir,
    )
    metrics = evaluate(cfg)["metrics"]
    return metrics["zeroshot/simple/top1"], metrics["zeroshot/simple/loss"]


def test_alpha_0_is_the_zero_shot_accuracy_and_1_the_finetuned(runs, data_dir, tmp_path):
    accuracy, loss = zero_shot_metrics(runs, data_dir, tmp_path)
    assert runs.rows[0.0]["acc"] == pytest.approx(accuracy)
    assert runs.rows[0.0]["loss"] == pytest.approx(loss, rel=1e-5)  # the same logits
    tested = runs.finetuned["metrics"]
    for metric in ("acc", "f1_macro", "auroc", "loss"):
        assert runs.rows[1.0][metric] == pytest.approx(tested[f"test/{metric}"], rel=1e-6)
    assert runs.payload["checkpoint"] == str(runs.checkpoint)
    assert runs.payload["zeroshot_from"] == str(runs.source)
    assert runs.payload["templates"] == PROMPT and runs.payload["class_names"] == SHAPES


def test_a_middle_alpha_equals_the_state_dicts_interpolated_by_hand(runs):
    datamodule, module = module_of_checkpoint(runs.checkpoint)
    _, contrastive = module_of_checkpoint(runs.source)
    finetuned = torch.load(runs.checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    pretrained = contrastive.state_dict()
    zero = dict(finetuned)
    for key in finetuned:
        if key.startswith("encoders.image."):
            zero[key] = pretrained[key]
    scale = contrastive.loss_fn.logit_scale.item()
    zero["head.1.weight"] = scale * direct_class_embeddings(contrastive, SHAPES, PROMPT)
    zero["head.1.bias"] = torch.zeros_like(finetuned["head.1.bias"])
    mixed = {
        k: 0.5 * zero[k] + 0.5 * v if v.is_floating_point() else v for k, v in finetuned.items()
    }
    module.load_state_dict(mixed)
    module.eval()
    datamodule.setup("test")
    logits, labels = [], []
    with torch.no_grad():
        for batch in datamodule.test_dataloader():
            logits.append(module(batch))
            labels.append(batch["label"])
    logits, labels = torch.cat(logits), torch.cat(labels)
    assert runs.rows[0.5]["acc"] == pytest.approx(accuracy_score(labels, logits.argmax(dim=1)))
    loss = torch.nn.functional.cross_entropy(logits, labels).item()
    assert runs.rows[0.5]["loss"] == pytest.approx(loss, rel=1e-5)
    # the three points differ: the finetuning moved the weights
    assert len({round(runs.rows[a]["loss"], 4) for a in (0.0, 0.5, 1.0)}) == 3


def test_the_finetuning_starts_from_the_zero_shot_head(runs):
    datamodule, module = module_of_checkpoint(runs.checkpoint)
    _, contrastive = module_of_checkpoint(runs.source)
    ZeroShotHeadInit(str(runs.source), PROMPT).setup(
        SimpleNamespace(datamodule=datamodule), module, "fit"
    )
    expected = contrastive.loss_fn.logit_scale.item() * direct_class_embeddings(
        contrastive, SHAPES, PROMPT
    )
    torch.testing.assert_close(module.head[1].weight.detach(), expected, atol=1e-5, rtol=1e-5)
    assert not module.head[1].bias.any()
    # the finetuned head moved away from it
    assert not torch.allclose(
        torch.load(runs.checkpoint, weights_only=False)["state_dict"]["head.1.weight"], expected
    )


def test_the_table_plot_and_record(runs):
    folder = runs.root / "finetune"
    assert runs.record["wiseft"]["alphas"] == [0.0, 0.5, 1.0]
    with open(folder / "wiseft.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [float(row["alpha"]) for row in rows] == [0.0, 0.5, 1.0]
    assert [float(row["acc"]) for row in rows] == pytest.approx(
        [runs.rows[a]["acc"] for a in (0.0, 0.5, 1.0)]
    )
    assert (folder / "wiseft.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for alpha, name in ((0.0, "0"), (0.5, "0.5"), (1.0, "1")):
        assert runs.record["metrics"][f"wiseft/{name}/acc"] == pytest.approx(
            runs.rows[alpha]["acc"]
        )


def test_interpolation_keeps_integer_buffers_and_refuses_other_shapes():
    zero = {"w": torch.zeros(2), "n": torch.tensor(3)}
    one = {"w": torch.ones(2), "n": torch.tensor(7)}
    mixed = interpolate(zero, one, 0.25)
    assert mixed["w"].tolist() == [0.25, 0.25] and mixed["n"].item() == 7
    with pytest.raises(ValueError, match=r"w is \(2,\) zero-shot, \(3,\) finetuned"):
        interpolate(zero, {"w": torch.ones(3), "n": torch.tensor(7)}, 0.5)
    with pytest.raises(ValueError, match=r"wiseft.alphas: values in \[0, 1\]"):
        WiseFT(alphas=[0.5, 1.5])


@pytest.mark.parametrize(
    ("overrides", "error", "match"),
    [
        (
            ["objective=contrastive"],
            TypeError,
            r"wiseft: the zero-shot model is an image tower and a linear head; "
            r"ContrastivePretrainer has towers \['image', 'text'\]",
        ),
        (
            IMAGE_ONLY[:2],
            TypeError,
            r"wiseft: the head must be one linear layer of the normalised image features",
        ),
        (
            [*IMAGE_ONLY[:2], "model.head.hidden_dims=[]", "++model.head.input_norm=l2"],
            ValueError,
            r"wiseft: the evaluated run has no finetune.checkpoint",
        ),
    ],
)
def test_models_it_cannot_interpolate_are_named(tmp_path, data_dir, overrides, error, match):
    cfg = compose_config(
        "eval",
        [*TINY_OVERRIDES, "ckpt_path=null", "wiseft=grid", "callbacks=none", *overrides],
        tmp_path / "eval",
        data_dir,
    )
    with pytest.raises(error, match=match):
        evaluate(cfg)
    assert not (tmp_path / "eval" / "wiseft.json").exists()
