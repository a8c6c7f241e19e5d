"""``mmexp-eval ckpt_path=null``: the model built from config, no checkpoint read.

A contrastive model from scratch with a fixed seed stands in for public towers (the path is
the same: the encoders keep whatever weights their config gives them). Its zero-shot scores
equal the direct computation on the same towers built by the builders with that seed.
"""

import json

import pytest
import pytorch_lightning as pl
import yaml

from mmexp.builders import build_data_and_model
from mmexp.config_check import check_config
from mmexp.eval import evaluate
from tests.helpers.configs import compose_config
from tests.helpers.tiny_runs import TINY_OVERRIDES
from tests.helpers.zeroshot import assert_matches, direct_scores, sklearn_metrics

SHAPES = ["circle", "square", "triangle"]
RUN = [*TINY_OVERRIDES, "objective=contrastive", "seed=3"]


def test_a_model_built_from_config_equals_the_towers_of_its_seed(tmp_path, data_dir):
    cfg = compose_config(
        "eval",
        [*RUN, "ckpt_path=null", "zeroshot=classify", "zeroshot/templates=[simple]"]
        + ["trainer.accelerator=cpu", "callbacks=none"],
        tmp_path / "eval",
        data_dir,
    )
    record = evaluate(cfg)
    assert record["status"] == "completed" and record["checkpoint"] is None
    # no run folder to write into: the eval folder holds the results
    payload = json.loads((tmp_path / "eval" / "zeroshot.json").read_text())
    assert payload["checkpoint"] is None
    saved = yaml.safe_load((tmp_path / "eval" / "run_config.yaml").read_text())
    assert saved["eval_checkpoint"] is None and saved["seed"] == 3

    train_cfg = compose_config("train", RUN, tmp_path / "direct", data_dir)
    pl.seed_everything(3, workers=True)
    datamodule, module = build_data_and_model(train_cfg)
    logits, labels = direct_scores(module, datamodule, SHAPES, ["a photo of a {}."])
    entry = payload["modes"]["classify"]["sets"]["simple"]
    assert_matches(entry, sklearn_metrics(logits, labels), SHAPES)
    assert record["metrics"]["zeroshot/simple/top1"] == pytest.approx(entry["metrics"]["top1"])


@pytest.mark.parametrize("mode", ["zeroshot=classify", "zeroshot=retrieval", "wiseft=grid"])
def test_the_shipped_modes_validate_clean(tmp_path, data_dir, mode):
    check_config(compose_config("eval", ["ckpt_path=null", mode], tmp_path / "eval", data_dir))
