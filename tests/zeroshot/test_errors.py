"""Bad zero-shot input is named before anything is encoded.

The models are built from config (``ckpt_path=null``), so no checkpoint has to be trained;
encoding an image or a prompt, or running a test, fails these tests.
"""

import json

import pytest
from pytorch_lightning import Trainer

from mmexp.eval import evaluate
from mmexp.zeroshot import classify
from mmexp.zeroshot.prompts import check_templates, class_names_for
from mmexp.zeroshot.towers import AlignedTowers
from tests.helpers.configs import compose_config
from tests.helpers.tiny_runs import TINY_OVERRIDES


@pytest.fixture(autouse=True)
def no_compute(monkeypatch):
    def computed(*args, **kwargs):
        raise AssertionError("encoded before the input was checked")

    monkeypatch.setattr(classify, "embed_texts", computed)
    monkeypatch.setattr(AlignedTowers, "embed_images", computed)
    monkeypatch.setattr(Trainer, "test", computed)


def refused(tmp_path, data_dir, *overrides, error=ValueError, match):
    cfg = compose_config(
        "eval",
        [*TINY_OVERRIDES, "ckpt_path=null", "trainer.accelerator=cpu", "callbacks=none"]
        + list(overrides),
        tmp_path / "eval",
        data_dir,
    )
    with pytest.raises(error, match=match):
        evaluate(cfg)
    assert not (tmp_path / "eval" / "zeroshot.json").exists()
    return json.loads((tmp_path / "eval" / "results.json").read_text())


CONTRASTIVE = ["objective=contrastive", "zeroshot=classify", "zeroshot/templates=[simple]"]


def test_a_template_without_braces_is_named(tmp_path, data_dir):
    record = refused(
        tmp_path,
        data_dir,
        *CONTRASTIVE,
        "+zeroshot.templates.mine=['a photo of a {}.', 'a photo']",
        match=r"zeroshot.templates.mine: template 'a photo' has no \{\} where the class name",
    )
    assert record["status"] == "failed"
    assert not (tmp_path / "eval" / "run_config.yaml").exists()  # before anything was built


def test_templates_that_are_no_format_strings_or_empty_sets_are_named():
    with pytest.raises(ValueError, match=r"zeroshot.templates.x: template 'a \{}\ \{name\}'"):
        check_templates({"x": ["a {} {name}"]})
    with pytest.raises(ValueError, match=r"zeroshot.templates.x: a non-empty list"):
        check_templates({"x": []})
    with pytest.raises(ValueError, match=r"zeroshot.templates: no template set"):
        check_templates({})


def test_a_names_file_with_another_count_is_named(tmp_path, data_dir):
    names = tmp_path / "names.txt"
    names.write_text("disc\nbox\n")
    refused(
        tmp_path,
        data_dir,
        *CONTRASTIVE,
        f"zeroshot.class_names={names}",
        match=rf"zeroshot.class_names={names}: 2 class names for 3 classes \(the data's classes "
        r"\['circle', 'square', 'triangle'\]\)",
    )


def test_names_missing_from_a_file_or_the_data_are_named(tmp_path):
    mapping = tmp_path / "names.json"
    mapping.write_text(json.dumps({"circle": "disc"}))
    with pytest.raises(ValueError, match=r"no name for \['square'\] of the data's classes"):
        class_names_for(["circle", "square"], str(mapping))
    with pytest.raises(FileNotFoundError, match=r"zeroshot.class_names=.*nothing.txt: no such"):
        class_names_for(["circle", "square"], str(tmp_path / "nothing.txt"))
    with pytest.raises(ValueError, match=r"at least two classes; the data module has \['pair'\]"):
        class_names_for(["pair"], None)  # a caption data set
    (tmp_path / "names.csv").write_text("a,b")
    with pytest.raises(ValueError, match=r"names.csv: a .txt .* or .json file"):
        class_names_for(["a", "b"], str(tmp_path / "names.csv"))


def test_a_module_without_a_text_tower_is_named(tmp_path, data_dir):
    refused(
        tmp_path,
        data_dir,
        *CONTRASTIVE,
        "data.modalities=[image,audio]",
        error=TypeError,
        match=r"zeroshot: ContrastivePretrainer has towers \['audio', 'image'\]; zero-shot "
        "evaluation needs an image and a text tower",
    )


def test_a_classifier_without_a_logit_scale_is_named(tmp_path, data_dir):
    refused(
        tmp_path,
        data_dir,
        "zeroshot=classify",
        error=TypeError,
        match=r"MultimodalClassifier has no loss with a logit scale",
    )


def test_retrieval_needs_a_contrastive_module(tmp_path, data_dir):
    refused(
        tmp_path,
        data_dir,
        "zeroshot=retrieval",
        error=TypeError,
        match=r"zeroshot=retrieval: MultimodalClassifier does not score retrieval in its test",
    )


def test_zeroshot_and_robustness_together_are_refused(tmp_path, data_dir):
    refused(
        tmp_path,
        data_dir,
        *CONTRASTIVE,
        "robustness=missing",
        match=r"robustness and zeroshot each replace the test",
    )
