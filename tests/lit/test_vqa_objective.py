"""objective=vqa: any fusion, the shared head, BCE on the answers, accuracy per answer type."""

import json
from collections import Counter
from pathlib import Path

import pytest
import torch

from mmexp.builders import build_module
from mmexp.lit.vqa import VQAClassifier
from mmexp.metrics.vqa import ANSWER_TYPES, VQABCELoss
from mmexp.train import train


def test_objective_builds_a_vqa_classifier_with_bce_and_vqa_metrics(make_train_cfg):
    cfg = make_train_cfg("objective=vqa", "data.task=vqa", "fusion=film")
    module = build_module(cfg, num_classes=18)
    assert isinstance(module, VQAClassifier) and isinstance(module.loss_fn, VQABCELoss)
    assert cfg.monitor == "val/vqa_acc" and module.test_confusion is None
    assert set(module.test_metrics.keys()) == {
        "test/vqa_acc",
        "test/vqa_acc_yes_no",
        "test/vqa_acc_number",
        "test/vqa_acc_other",
    }


def test_validation_and_test_score_each_answer_type(make_train_cfg):
    module = build_module(make_train_cfg("objective=vqa"), num_classes=3)
    logits = torch.tensor([[5.0, 0, 0], [0, 5.0, 0], [0, 0, 5.0]])
    module._shared_step = lambda batch: (logits, torch.tensor(0.0))
    batch = {"label": torch.tensor([0, 0, 2]), "answer_type": torch.tensor([0, 1, 2])}
    module.test_step(batch, 0)
    values = {k: v.item() for k, v in module.test_metrics.compute().items()}
    assert values == pytest.approx(
        {
            "test/vqa_acc": 2 / 3,
            "test/vqa_acc_yes_no": 1.0,
            "test/vqa_acc_number": 0.0,
            "test/vqa_acc_other": 1.0,
        }
    )


@pytest.mark.parametrize("fusion", ["concat", "late", "cross_attention"])
def test_a_shapes_vqa_run_reports_vqa_accuracy_per_answer_type(make_train_cfg, fusion):
    cfg = make_train_cfg("objective=vqa", "data.task=vqa", f"fusion={fusion}", run_name=fusion)
    metrics = train(cfg)["metrics"]
    assert 0 <= metrics["val/vqa_acc_best"] <= 1
    # the overall figure is the per-type figures weighted by the test questions of each type
    rows = [json.loads(line) for line in manifest(cfg).read_text().splitlines()]
    counts = Counter(r["answer_type"] for r in rows if r["split"] == "test")
    weighted = sum(
        counts[t] * metrics[f"test/vqa_acc_{t.replace('/', '_')}"] for t in ANSWER_TYPES
    ) / sum(counts.values())
    assert metrics["test/vqa_acc"] == pytest.approx(weighted, abs=1e-6)


def manifest(cfg) -> Path:
    folders = sorted(Path(cfg.data.cache_dir).glob("shapes-vqa-*"))
    matching = [
        f
        for f in folders
        if json.loads((f / "meta.json").read_text())["splits"]["test"] == cfg.data.num_test
    ]
    return matching[0] / "manifest.jsonl"
