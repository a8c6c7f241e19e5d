"""Zero-shot classification of a public open_clip model equals open_clip's own computation.

``mmexp-eval ckpt_path=null init=open_clip zeroshot=classify`` on a tiny open_clip model
written to disk (the same loading path as a published tag) against the zero-shot classifier
built by open_clip's ``build_zero_shot_classifier`` and the model's ``encode_image`` on the
test images, each opened from the manifest and preprocessed with open_clip's own validation
transform: nothing of mmexp's towers, processors or batching is shared with the reference.
"""

import json

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy.special import softmax
from sklearn.metrics import accuracy_score, log_loss

from mmexp.builders import instantiate_datamodule
from mmexp.eval import evaluate
from tests.helpers.configs import FAST_OVERRIDES, compose_config
from tests.helpers.tiny_clip import write_tiny_open_clip

SHAPES = ["circle", "square", "triangle"]
TEMPLATES = ["a photo of a {}.", "a drawing of a {}."]


def open_clip_zero_shot(tiny, rows) -> tuple[np.ndarray, np.ndarray]:
    """``(logits [N, C], labels [N])`` of open_clip's zero-shot classifier on the manifest rows."""
    from open_clip.zero_shot_classifier import build_zero_shot_classifier

    model, _, preprocess = open_clip.create_model_and_transforms(
        tiny.name, pretrained=str(tiny.weights)
    )
    model.eval()
    tokenizer = open_clip.get_tokenizer(tiny.name)
    with torch.no_grad():
        classifier = build_zero_shot_classifier(
            model,
            tokenizer,
            SHAPES,
            [lambda c, t=t: t.format(c) for t in TEMPLATES],
            use_tqdm=False,
        )
        images = torch.stack([preprocess(Image.open(path).convert("RGB")) for path, _ in rows])
        logits = model.logit_scale.exp() * F.normalize(model.encode_image(images), dim=-1)
        logits = (logits @ classifier).numpy()
    labels = np.array([int(label) for _, label in rows])  # indices into label_names
    return logits, labels


def test_public_init_zero_shot_equals_open_clips_classifier(tmp_path, data_dir):
    tiny = write_tiny_open_clip(tmp_path / "clip")
    cfg = compose_config(
        "eval",
        [
            *FAST_OVERRIDES,
            *tiny.overrides(),
            "objective=contrastive",
            "data.task=unique_image",
            "ckpt_path=null",
            "zeroshot=classify",
            "zeroshot/templates=[simple]",
            f"zeroshot.templates.simple={json.dumps(TEMPLATES)}",
            "callbacks=none",
        ],
        tmp_path / "eval",
        data_dir,
    )
    record = evaluate(cfg)
    assert record["status"] == "completed", record
    entry = json.loads((tmp_path / "eval" / "zeroshot.json").read_text())
    classify = entry["modes"]["classify"]
    scored = classify["sets"]["simple"]
    assert scored["templates"] == TEMPLATES

    datamodule = instantiate_datamodule(cfg)
    datamodule.prepare_data()
    rows = [
        (datamodule.root / row[datamodule.columns["image"]], row[datamodule.label_column])
        for row in datamodule.read_splits()["test"]
    ]
    assert datamodule.label_names == SHAPES
    assert len(rows) == 80 and classify["samples"] == 80
    logits, labels = open_clip_zero_shot(tiny, rows)
    predictions = logits.argmax(axis=1)
    # The loss is a smooth function of every logit, so it checks the whole computation (a
    # tiny random model may predict few classes, which accuracy alone would hardly test).
    assert scored["metrics"]["loss"] == pytest.approx(
        log_loss(labels, softmax(logits, axis=1), labels=[0, 1, 2]), rel=1e-4
    )
    assert scored["metrics"]["top1"] == pytest.approx(accuracy_score(labels, predictions))
    for index, name in enumerate(SHAPES):
        rows_of = labels == index
        assert scored["per_class"][name]["acc"] == pytest.approx(
            accuracy_score(labels[rows_of], predictions[rows_of])
        )
