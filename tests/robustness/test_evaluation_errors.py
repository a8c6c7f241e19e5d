"""A robustness grid that cannot score a checkpoint is refused, by name, before any pass."""

import json

import pytest
from hydra.errors import MissingConfigException

import mmexp.robustness.evaluate as evaluation
from mmexp.eval import evaluate
from tests.helpers.configs import compose_config
from tests.helpers.tiny_runs import train_tiny

TYPOS = "{_target_: mmexp.robustness.text_perturbations.Typos, _partial_: true}"
NOWHERE = "{_target_: mmexp.robustness.no_such_module.Blur, _partial_: true}"
BLUR = "{_target_: mmexp.robustness.perturbations.ImageBlur, _partial_: true, max_sigma: -1}"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, data_dir):
    """A classifier's and a contrastive pretrainer's last.ckpt, tiny, one epoch each."""
    root = tmp_path_factory.mktemp("runs")
    return {
        "classify": train_tiny(root / "classify", data_dir)["last_checkpoint"],
        "contrastive": train_tiny(root / "contrastive", data_dir, "objective=contrastive")[
            "last_checkpoint"
        ],
    }


@pytest.fixture(autouse=True)
def no_pass(monkeypatch):
    def scored(*args):
        raise AssertionError("a pass over the test split ran before the grid was refused")

    monkeypatch.setattr(evaluation, "_score", scored)


def refused(checkpoint, tmp_path, data_dir, *overrides, error=ValueError, match):
    cfg = compose_config(
        "eval",
        [
            f"ckpt_path={checkpoint}",
            "trainer.accelerator=cpu",
            "callbacks=none",
            *overrides,
            f"robustness.output_dir={tmp_path / 'scores'}",
        ],
        tmp_path / "eval",
        data_dir,
    )
    with pytest.raises(error, match=match):
        evaluate(cfg)
    assert not (tmp_path / "scores" / "robustness.json").exists()
    record = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert record["status"] == "failed"


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (
            ["robustness=missing", "robustness.levels=[1.5]"],
            r"robustness\.levels has levels \[1\.5\] outside \[0, 1\]",
        ),
        (
            ["robustness=missing", "robustness.missing_rates=[0.5,-0.1]"],
            r"robustness\.missing_rates has levels \[-0\.1\] outside \[0, 1\]",
        ),
        (
            [
                "robustness=noise",
                "robustness.levels=[0.5]",
                f"+robustness.perturbations.image.typos={TYPOS}",
            ],
            r"robustness\.perturbations\.image\.typos: perturbation 'typos' takes text values, "
            r"but modality 'image' holds image values",
        ),
        (
            ["robustness=missing", "robustness.modalities=[image,audio]"],
            r"robustness\.modalities=\['image', 'audio'\] but the checkpoint's modalities are "
            r"\['image', 'text'\]",
        ),
        (  # a grid written for this model refuses the noise grid's audio perturbations
            ["robustness=noise", "robustness.modalities=[text,image]"],
            r"robustness\.perturbations has \['audio'\], but the checkpoint's modalities",
        ),
        (
            ["robustness=noise", f"+robustness.perturbations.image.blur_elsewhere={NOWHERE}"],
            r"robustness\.perturbations\.image\.blur_elsewhere\._target_: cannot import",
        ),
        (
            ["robustness=noise", f"+robustness.perturbations.image.wide_blur={BLUR}"],
            r"(?s)robustness\.perturbations\.image\.wide_blur: cannot be built .*"
            r"perturbation 'blur': max_sigma must be >= 0, got -1",
        ),
    ],
    ids=[
        "level",
        "rate",
        "text perturbation on images",
        "modalities",
        "strict",
        "target",
        "option",
    ],
)
def test_a_grid_that_does_not_fit_is_named(checkpoints, tmp_path, data_dir, overrides, match):
    refused(checkpoints["classify"], tmp_path, data_dir, *overrides, match=match)


def test_a_contrastive_checkpoint_cannot_be_scored(checkpoints, tmp_path, data_dir):
    match = r"robustness evaluation scores modules that fuse .* ContrastivePretrainer needs every"
    refused(
        checkpoints["contrastive"],
        tmp_path,
        data_dir,
        "robustness=missing",
        error=TypeError,
        match=match,
    )


@pytest.mark.parametrize("config", ["eval", "train"])
def test_an_unknown_grid_is_named(config, tmp_path, data_dir):
    with pytest.raises(MissingConfigException, match=r"Could not find 'robustness/mising'"):
        compose_config(config, ["ckpt_path=x", "robustness=mising"], tmp_path / "run", data_dir)
