"""``finetune=zeroshot``: a run whose test scores are ``mmexp-eval zeroshot=classify``'s.

The same towers scored two ways: trained (nothing trains) with the protocol, and by the
zero-shot evaluation mode on the pretraining checkpoint or, for a public model, on the model
built from config. Accuracy and, more telling on a tiny model that predicts few classes, the
cross-entropy (a smooth function of every logit) agree; no weight moves.
"""

import json

import pytest
import torch

from mmexp.assemble import assemble
from mmexp.eval import evaluate
from mmexp.finetune.zeroshot import ZeroShot
from mmexp.resolve import resolve_run_config
from mmexp.train import train
from tests.helpers.configs import FAST_OVERRIDES, compose_config
from tests.helpers.tiny_clip import write_tiny_open_clip
from tests.helpers.tiny_runs import TINY_OVERRIDES

SET = "openai_imagenet"  # the protocol's default set, CLIP's 80 templates
EVAL = ["zeroshot=classify", f"zeroshot/templates=[{SET}]", "trainer.accelerator=cpu"]


def assert_same_scores(run: dict, evaluated: dict) -> None:
    metrics, zeroshot = run["metrics"], evaluated["metrics"]
    assert metrics["test/acc"] == pytest.approx(zeroshot[f"zeroshot/{SET}/top1"], abs=1e-6)
    assert metrics["test/loss"] == pytest.approx(zeroshot[f"zeroshot/{SET}/loss"], rel=1e-5)


def assert_nothing_moved(before: dict, checkpoint: str) -> None:
    after = torch.load(checkpoint, weights_only=True)["state_dict"]
    for key, value in before.items():
        torch.testing.assert_close(after[key], value, rtol=0, atol=0, msg=key)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, data_dir) -> str:
    folder = tmp_path_factory.mktemp("zeroshot_pretrain")
    overrides = [*TINY_OVERRIDES, "objective=contrastive", "seed=0"]
    return train(compose_config("train", overrides, folder, data_dir))["last_checkpoint"]


def test_the_run_scores_as_the_zero_shot_evaluation_of_its_checkpoint(
    pretrained, tmp_path, data_dir
):
    overrides = [
        *TINY_OVERRIDES,
        "finetune=zeroshot",
        "init=contrastive",
        f"pretrained_checkpoint={pretrained}",
    ]
    run_dir = tmp_path / "run"
    result = train(compose_config("train", overrides, run_dir, data_dir))
    record = json.loads((run_dir / "results.json").read_text())
    assert record["status"] == "completed"
    assert result["best_checkpoint"].endswith("zeroshot.ckpt")
    assert record["zeroshot"]["templates"] == 80 and record["zeroshot"]["template_set"] == SET
    assert record["pretrained_from"]["prompts"]["example"] == "a bad photo of a circle."
    evaluated = evaluate(
        compose_config("eval", [f"ckpt_path={pretrained}", *EVAL], tmp_path / "eval", data_dir)
    )
    assert_same_scores(result, evaluated)
    # The towers are the checkpoint's, the logit scale its loss's; nothing else trains.
    source = torch.load(pretrained, weights_only=True)["state_dict"]
    assert_nothing_moved(
        {k: v for k, v in source.items() if k.startswith("encoders.")}, result["best_checkpoint"]
    )
    tuned = torch.load(result["best_checkpoint"], weights_only=True)["state_dict"]
    torch.testing.assert_close(tuned["log_logit_scale"], source["loss_fn.log_logit_scale"])
    # The checkpoint alone (the class embeddings are in it) scores the same in mmexp-eval.
    again = evaluate(
        compose_config(
            "eval",
            [f"ckpt_path={result['best_checkpoint']}", "logger=csv", "trainer.accelerator=cpu"],
            tmp_path / "again",
            data_dir,
        )
    )
    assert again["metrics"]["test/acc"] == pytest.approx(result["metrics"]["test/acc"])
    assert again["metrics"]["test/loss"] == pytest.approx(result["metrics"]["test/loss"])


def test_a_public_model_scores_as_its_zero_shot_evaluation_from_config(tmp_path, data_dir):
    tiny = write_tiny_open_clip(tmp_path / "clip")
    common = [*FAST_OVERRIDES, *tiny.overrides(), "data.task=unique_image", "seed=1"]
    cfg = resolve_run_config(
        compose_config("train", [*common, "finetune=zeroshot"], tmp_path / "run", data_dir),
        "train",
    )
    module = assemble(cfg, "bench").module
    assert isinstance(assemble(cfg, "bench").finetuning.protocol, ZeroShot)
    assert not [name for name, p in module.named_parameters() if p.requires_grad]
    before = {k: v.clone() for k, v in module.state_dict().items()}
    result = train(cfg)
    assert_nothing_moved(before, result["best_checkpoint"])
    evaluated = evaluate(
        compose_config(
            "eval",
            [*common, "objective=contrastive", "ckpt_path=null", *EVAL, "callbacks=none"],
            tmp_path / "eval",
            data_dir,
        )
    )
    assert_same_scores(result, evaluated)


def test_one_template_set_is_taken(make_train_cfg):
    with pytest.raises(ValueError, match="finetune.templates: one template set"):
        ZeroShot(templates={"a": ["a {}."], "b": ["b {}."]})
    with pytest.raises(ValueError, match=r"finetune.templates.mine: template 'no slot'"):
        ZeroShot(templates={"mine": ["no slot"]})
