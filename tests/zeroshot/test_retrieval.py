"""Zero-shot retrieval on a Karpathy-format caption set: the contrastive test, kept.

From config (``ckpt_path=null``, towers of a fixed seed) the recalls equal a brute-force
ranking of the towers' embeddings; on a checkpoint they equal the test recalls its training
run reported, since the mode runs the same test step.
"""

import json

import pytest
import pytorch_lightning as pl
import torch

from mmexp.builders import build_data_and_model
from mmexp.eval import evaluate
from mmexp.train import train
from tests.helpers.caption_fixtures import write_karpathy
from tests.helpers.configs import compose_config
from tests.helpers.retrieval import brute_force_grouped
from tests.helpers.tiny_runs import TINY_OVERRIDES

CAPTIONS = [
    "data=flickr30k",
    "data.num_workers=0",
    "data.persistent_workers=false",
    "data.batch_size=4",
    "data.eval_batch_size=3",
    "data.pin_memory=false",
    "objective=contrastive",
]
# the tiny runs' towers, without the shapes split sizes
TINY = [o for o in TINY_OVERRIDES if not o.startswith("data.")]
RECALLS = [f"r@{k}_{d}" for d in ("i2t", "t2i") for k in (1, 5, 10)]


def eval_config(tmp_path, data_dir, *overrides):
    return compose_config(
        "eval",
        ["zeroshot=retrieval", "trainer.accelerator=cpu", "callbacks=none", *overrides],
        tmp_path / "eval",
        data_dir,
    )


def test_recall_of_towers_built_from_config_equals_a_brute_force_ranking(tmp_path, data_dir):
    root = write_karpathy(tmp_path / "f30k", "flickr30k")
    run = [*TINY, *CAPTIONS, f"data.root={root}", "seed=5"]
    record = evaluate(eval_config(tmp_path, data_dir, "ckpt_path=null", *run))
    entry = json.loads((tmp_path / "eval" / "zeroshot.json").read_text())["modes"]["retrieval"]
    recall = entry["recall"]
    assert recall["gallery_size"] == 4 and recall["gallery_size_text"] == 20

    pl.seed_everything(5, workers=True)
    datamodule, module = build_data_and_model(compose_config("train", run, tmp_path, data_dir))
    datamodule.setup("test")
    module.eval()
    images, captions, owner = [], [], []
    with torch.no_grad():
        for batch in datamodule.test_dataloader():
            features = module.encode(batch)
            images.append(module.embed(features["image"]))
            captions.append(module.embed(features["text"]))
            owner.append(batch["group"])
    images, captions, owner = torch.cat(images), torch.cat(captions), torch.cat(owner)
    for k in (1, 5, 10):
        i2t, t2i = brute_force_grouped(images, captions, owner, k)
        assert recall[f"r@{k}_i2t"] == pytest.approx(i2t) and recall[f"r@{k}_t2i"] == pytest.approx(
            t2i
        )
    for name in RECALLS:
        assert record["metrics"][f"zeroshot/retrieval/{name}"] == pytest.approx(recall[name])


def test_recall_of_a_checkpoint_is_the_test_its_run_reported(tmp_path, data_dir):
    root = write_karpathy(tmp_path / "coco")
    folder = tmp_path / "run"
    overrides = [*CAPTIONS, "data=coco_captions", f"data.root={root}", "trainer.max_epochs=1"]
    result = train(compose_config("train", [*TINY, *overrides], folder, data_dir))
    record = evaluate(eval_config(tmp_path, data_dir, f"ckpt_path={result['best_checkpoint']}"))
    payload = json.loads((folder / "zeroshot.json").read_text())  # beside results.json
    assert payload["checkpoint"] == str(result["best_checkpoint"])
    recall = payload["modes"]["retrieval"]["recall"]
    for name in [*RECALLS, "rsum", "gallery_size"]:
        assert recall[name] == pytest.approx(result["metrics"][f"test/{name}"]), name
        assert record["metrics"][f"test/{name}"] == pytest.approx(recall[name])
