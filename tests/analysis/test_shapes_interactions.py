"""The analyses find the interaction each shapes task was built with (medians over 3 seeds).

* ``synergy`` on image + audio (the tone's colour matches the image's or not): a model that
  learned it (concat) has a large EMAP gap and most of its model PID in synergy; late
  fusion, additive by construction, has a zero gap and stays at chance.
* ``unique_text``: the text's Shapley value is the whole accuracy above the empty
  coalition's, the image's about zero.
* The data PID (the labels against the k-means codes of each encoder's features) of
  ``redundant`` is mostly redundancy, of ``unique_image`` mostly the image's unique
  information. It sees the data through the checkpoint's encoders, so they must each have
  learned their modality: late fusion with per-modality losses (``fusion.aux_weight``).
  Concat's encoders, trained only jointly, split the shape between them: on redundant
  (one seed, 6 epochs, 6 clusters) they read R 0.44 of 1.39 bits and U 0.54 + 0.38, and
  with late fusion after 5 epochs (each modality ~85 % alone) R is still about half. The
  plug-in joint needs samples in each of its 8 x 8 x 3 cells: 8 clusters per modality,
  2000 test samples (its bias on ``I(X1, X2; Y)`` is then about 0.05 bits).
"""

import json
import statistics

import pytest
import torch

from mmexp.train import train
from tests.helpers.configs import FAST_OVERRIDES, compose_config

pytestmark = pytest.mark.slow

SEEDS = (0, 1, 2)
COMMON = [
    *FAST_OVERRIDES,
    "data.num_train=800",
    "data.num_val=200",
    "data.eval_batch_size=500",
    "callbacks.early_stopping=null",
    "callbacks.test_report=null",
    "analysis_set.batch_size=4096",
]
# Towers a few times narrower than the defaults: synergy and unique_text are learned in a
# few epochs all the same.
NARROW = [
    "model.width=32",
    "model.head.hidden_dims=[32]",
    "model.encoders.image.channels=[8,16]",
    "model.encoders.audio.channels=[8,16]",
    "model.encoders.text.width=32",
    "model.encoders.text.depth=1",
    "model.encoders.text.heads=2",
    "model.encoders.text.max_length=48",
]
SYNERGY = [
    *NARROW,
    "data.task=synergy",
    "data.modalities=[image,audio]",
    "data.num_test=1000",
    "trainer.max_epochs=6",
    "analysis=[emap,pid]",
    "analysis.emap.max_samples=500",
    "analysis.pid.n_clusters=6",
]
UNIQUE_TEXT = [
    *NARROW,
    "data.task=unique_text",
    "data.num_test=1000",
    "fusion=concat",
    "trainer.max_epochs=4",
    "analysis=[contribution]",
]
# Default towers, each trained on the label by itself too, for the data PID.
DATA_PID = [
    "fusion=late",
    "fusion.aux_weight=1.0",
    "data.num_test=2000",
    "analysis=[pid]",
    "analysis.pid.n_clusters=8",
]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small models: one intra-op thread is faster than two that wait on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def analysed(tmp_path_factory, data_dir, *overrides):
    """Train one run per seed; their test accuracy and analysis components."""
    runs = []
    for seed in SEEDS:
        folder = tmp_path_factory.mktemp("runs") / f"seed{seed}"
        cfg = compose_config("train", [*COMMON, *overrides, f"seed={seed}"], folder, data_dir)
        record = train(cfg)
        components = json.loads((folder / "analysis.json").read_text())["components"]
        runs.append({"acc": record["metrics"]["test/acc"], **components})
    return runs


def median(runs, value):
    return statistics.median(value(run) for run in runs)


def share(entry, atom):
    return entry[atom] / entry["total"]


@pytest.fixture(scope="module")
def synergy_concat(tmp_path_factory, data_dir):
    return analysed(tmp_path_factory, data_dir, *SYNERGY, "fusion=concat")


@pytest.fixture(scope="module")
def synergy_late(tmp_path_factory, data_dir):
    return analysed(tmp_path_factory, data_dir, *SYNERGY, "fusion=late")


def test_a_model_that_learned_synergy_needs_interactions(synergy_concat):
    runs = synergy_concat
    assert median(runs, lambda r: r["acc"]) > 0.75, [r["acc"] for r in runs]  # learned
    gaps = [r["emap"]["gap"] for r in runs]
    assert statistics.median(gaps) > 0.2, gaps  # its additive projection is near chance
    synergy = [share(r["pid"]["model"], "synergy") for r in runs]
    assert statistics.median(synergy) > 0.75, synergy
    assert all(r["pid"]["model"]["status"] == "optimal" for r in runs)


def test_late_fusion_is_additive_and_stays_at_chance_on_synergy(synergy_late):
    gaps = [r["emap"]["gap"] for r in synergy_late]
    assert max(abs(gap) for gap in gaps) < 0.01, gaps
    assert median(synergy_late, lambda r: r["emap"]["agreement"]) > 0.99
    assert median(synergy_late, lambda r: r["acc"]) < 0.65


def test_unique_text_is_credited_to_the_text(tmp_path_factory, data_dir):
    runs = analysed(tmp_path_factory, data_dir, *UNIQUE_TEXT)
    assert median(runs, lambda r: r["acc"]) > 0.6, [r["acc"] for r in runs]
    entries = [r["contribution"] for r in runs]
    above = [e["subsets"]["image+text"]["acc"] - e["empty"]["acc"] for e in entries]
    text = [e["shapley"]["text"] for e in entries]
    image = [e["shapley"]["image"] for e in entries]
    assert statistics.median(t - a for t, a in zip(text, above, strict=True)) == pytest.approx(
        0.0, abs=0.03
    ), (text, above)
    assert statistics.median(image) == pytest.approx(0.0, abs=0.03), image
    assert statistics.median(text) > 0.25, text


def test_the_data_of_redundant_is_mostly_redundancy(tmp_path_factory, data_dir):
    runs = analysed(
        tmp_path_factory, data_dir, *DATA_PID, "data.task=redundant", "trainer.max_epochs=8"
    )
    data = [r["pid"]["data"] for r in runs]
    redundancy = [share(entry, "redundancy") for entry in data]
    assert statistics.median(redundancy) > 0.6, data
    for atom in ("unique_image", "unique_text", "synergy"):
        assert statistics.median(share(e, atom) for e in data) < 0.2, (atom, data)


def test_the_data_of_unique_image_is_the_images_own(tmp_path_factory, data_dir):
    runs = analysed(
        tmp_path_factory, data_dir, *DATA_PID, "data.task=unique_image", "trainer.max_epochs=5"
    )
    data = [r["pid"]["data"] for r in runs]
    assert statistics.median(share(e, "unique_image") for e in data) > 0.9, data
    assert statistics.median(e["unique_text"] + e["redundancy"] for e in data) < 0.05, data
