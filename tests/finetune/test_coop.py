"""CoOp: the prompts against the towers' own encodings, what trains, whole runs, bad input."""

import copy
import hashlib
import json
from functools import partial
from pathlib import Path

import pytest
import torch
from hydra.errors import InstantiationException

from mmexp.assemble import assemble
from mmexp.config_check import ConfigError
from mmexp.encoders.hf_clip import HFClipTextEncoder
from mmexp.encoders.open_clip_towers import OpenClipImageEncoder, OpenClipTextEncoder
from mmexp.encoders.text_transformer import SmallTextTransformer
from mmexp.eval import evaluate
from mmexp.finetune.coop import CoOp, PromptContext
from mmexp.finetune.prompt_towers import NoPromptAdapterError
from mmexp.lit.prompt_classifier import PromptClassifier
from mmexp.resolve import resolve_run_config
from mmexp.train import train
from tests.helpers.cli import run_cli
from tests.helpers.configs import compose_config
from tests.helpers.tiny_prompt_clip import write_tiny_hf_clip, write_tiny_open_clip
from tests.helpers.tiny_runs import TINY_OVERRIDES

NAMES = ["circle", "square", "triangle", "traffic_light"]
# What the reference writes for each class with the context "a photo of a" ("_" as a space).
PROMPTS = [f"a photo of a {name}." for name in ("circle", "square", "triangle", "traffic light")]


@pytest.fixture(scope="module")
def open_clip_files(tmp_path_factory) -> dict[str, str]:
    return write_tiny_open_clip(tmp_path_factory.mktemp("coop_open_clip"))


@pytest.fixture(scope="module")
def open_clip_towers(open_clip_files):
    image = OpenClipImageEncoder(out_dim=32, augment=False, **open_clip_files)
    return {"image": image, "text": OpenClipTextEncoder(out_dim=32, **open_clip_files).eval()}


def open_clip_reference(files: dict[str, str]):
    """open_clip's own model and tokenizer for the same files: ``encode_text`` of texts."""
    import open_clip

    model = open_clip.create_model(files["name"], pretrained=files["pretrained"]).eval()
    tokenizer = open_clip.get_tokenizer(files["name"])
    return lambda texts: model.encode_text(tokenizer(texts))


def test_a_phrase_context_embeds_each_class_as_open_clip_encodes_its_prompt(
    open_clip_towers, open_clip_files
):
    # The context is the token embeddings of "a photo of a", the class tokens and the period
    # follow, and the tower pools at the end-of-text token after the period: exactly what
    # open_clip's encode_text computes for "a photo of a <class>.".
    text = open_clip_towers["text"]
    prompts = PromptContext(text, NAMES, ctx_init="a photo of a")
    assert prompts.texts == PROMPTS and prompts.n_ctx == 4 and prompts.start == 1
    with torch.no_grad():
        torch.testing.assert_close(prompts(text), open_clip_reference(open_clip_files)(PROMPTS))


def test_the_random_context_stands_where_the_phrase_would(open_clip_towers, open_clip_files):
    # Random initialisation: "X X X X <class>." with the context at the X positions. With the
    # phrase's embeddings put there the classes embed as the phrase prompts.
    text = open_clip_towers["text"]
    torch.manual_seed(0)
    prompts = PromptContext(text, NAMES, n_ctx=4)
    assert prompts.texts[0] == "X X X X circle."
    assert 0.015 < float(prompts.context.detach().std()) < 0.025  # N(0, 0.02)
    phrase = PromptContext(text, NAMES, ctx_init="a photo of a")
    with torch.no_grad():
        prompts.context.copy_(phrase.context)
        torch.testing.assert_close(prompts(text), open_clip_reference(open_clip_files)(PROMPTS))


def test_a_phrase_context_embeds_as_hf_clip_and_mmexp_towers_encode_the_prompt(tmp_path):
    from transformers import AutoTokenizer, CLIPModel

    folder = write_tiny_hf_clip(tmp_path / "hf_clip")
    hf = HFClipTextEncoder(out_dim=32, name_or_path=str(folder)).eval()
    model = CLIPModel.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        expected = model.get_text_features(**tokenizer(PROMPTS, padding=True, return_tensors="pt"))
        expected = getattr(expected, "pooler_output", expected)  # an output object in v5
        torch.testing.assert_close(PromptContext(hf, NAMES, ctx_init="a photo of a")(hf), expected)
    # mmexp's byte-level tower: the context is the phrase's 12 bytes, the space before the
    # class name is the first byte after it.
    torch.manual_seed(0)
    own = SmallTextTransformer(out_dim=32, width=32, depth=1, heads=2, max_length=48).eval()
    prompts = PromptContext(own, NAMES, ctx_init="a photo of a")
    assert prompts.n_ctx == 12 and prompts.start == 0
    with torch.no_grad():
        torch.testing.assert_close(prompts(own), own(own.processor(False).collate(PROMPTS)).pooled)


def digest(module: torch.nn.Module, skip: str) -> str:
    """A hash of every parameter and buffer of ``module`` but ``skip``."""
    hashed = hashlib.sha256()
    for name, value in sorted(module.state_dict().items()):
        if name != skip:
            hashed.update(name.encode() + value.detach().cpu().numpy().tobytes())
    return hashed.hexdigest()


def test_training_changes_only_the_context_and_lowers_the_loss(open_clip_towers):
    loss = torch.nn.CrossEntropyLoss()
    optimizer = partial(torch.optim.AdamW, lr=0.05, weight_decay=0.0)
    module = PromptClassifier(copy.deepcopy(open_clip_towers), loss, 4, NAMES, optimizer)
    lineage = CoOp(n_ctx=4).apply(module, None)
    assert lineage["towers"] == ["image", "text"] and lineage["prompts"]["n_ctx"] == 4
    trainable = [name for name, p in module.named_parameters() if p.requires_grad]
    assert trainable == ["prompts.context"]
    before, context = digest(module, "prompts.context"), module.prompts.context.detach().clone()
    step = module.configure_optimizers()["optimizer"]
    torch.manual_seed(0)
    batch = {"image": torch.randn(16, 3, 32, 32), "label": torch.arange(16) % 4}
    module.train()
    losses = []
    for _ in range(8):
        value = module.loss_fn(module(batch), batch["label"])
        step.zero_grad()
        value.backward()
        step.step()
        losses.append(value.item())
    assert losses[-1] < 0.9 * losses[0], losses
    assert digest(module, "prompts.context") == before
    assert not torch.equal(module.prompts.context, context)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, data_dir) -> str:
    """A tiny contrastive pretraining of mmexp's own towers on shapes (the last checkpoint)."""
    folder = tmp_path_factory.mktemp("coop_pretrain")
    overrides = [*TINY_OVERRIDES, "objective=contrastive", "seed=0"]
    return train(compose_config("train", overrides, folder, data_dir))["last_checkpoint"]


def coop_overrides(checkpoint: str, *more: str) -> list[str]:
    return [
        *TINY_OVERRIDES,
        "finetune=coop",
        "init=contrastive",
        f"pretrained_checkpoint={checkpoint}",
        *more,
    ]


PHRASE = "finetune.ctx_init='a photo of a'"


@pytest.fixture(scope="module")
def coop_run(pretrained, tmp_path_factory, data_dir) -> tuple[dict, Path]:
    """CoOp from the tiny pretraining, context from the phrase: its result and folder."""
    folder = tmp_path_factory.mktemp("coop_run")
    cfg = compose_config("train", coop_overrides(pretrained, PHRASE), folder, data_dir)
    return train(cfg), folder


def test_coop_on_shapes_from_a_contrastive_checkpoint(pretrained, coop_run, tmp_path, data_dir):
    result, folder = coop_run
    record = json.loads((folder / "results.json").read_text())
    assert record["status"] == "completed"
    assert 0 <= record["metrics"]["test/acc"] <= 1
    lineage = record["pretrained_from"]
    assert lineage["towers_from_checkpoint"] == ["image", "text"]
    assert lineage["prompts"]["example"] == "a photo of a circle."
    source = torch.load(pretrained, weights_only=True)["state_dict"]
    tuned = torch.load(result["last_checkpoint"], weights_only=True)["state_dict"]
    for key, value in source.items():
        if key.startswith("encoders."):  # the towers did not move
            torch.testing.assert_close(tuned[key], value, rtol=0, atol=0)
    # The logit scale is the pretraining loss's; the context started at the phrase's bytes.
    torch.testing.assert_close(tuned["log_logit_scale"], source["loss_fn.log_logit_scale"])
    phrase = source["encoders.text.embed.weight"][torch.tensor(list(b"a photo of a")) + 3]
    assert tuned["prompts.context"].shape == phrase.shape
    assert not torch.equal(tuned["prompts.context"], phrase)
    # The checkpoint alone rebuilds the prompts: mmexp-eval scores it the same.
    evaluated = evaluate(
        compose_config(
            "eval",
            [f"ckpt_path={result['best_checkpoint']}", "logger=csv", "trainer.accelerator=cpu"],
            tmp_path / "eval",
            data_dir,
        )
    )
    assert evaluated["metrics"]["test/acc"] == pytest.approx(record["metrics"]["test/acc"])


def test_the_feature_cache_serves_the_frozen_image_tower(pretrained, coop_run, tmp_path, data_dir):
    # Only the image tower reads the data, so only its outputs are cached; the run trains as
    # the uncached one does.
    cached = [*coop_overrides(pretrained, PHRASE), "feature_cache.enabled=true"]
    result = train(compose_config("train", cached, tmp_path, data_dir))
    assert set(result["feature_cache"]) == {f"image/{split}" for split in ("train", "val", "test")}
    assert result["metrics"]["test/acc"] == pytest.approx(coop_run[0]["metrics"]["test/acc"])


@pytest.mark.slow
def test_mmexp_train_with_finetune_coop_writes_test_accuracy(pretrained, tmp_path):
    run = tmp_path / "run"
    run_cli("train", *coop_overrides(pretrained, f"hydra.run.dir={run}"), cwd=tmp_path)
    record = json.loads((run / "results.json").read_text())
    assert record["status"] == "completed" and "test/acc" in record["metrics"]
    assert record["pretrained_from"]["protocol"] == "coop"


def test_a_text_tower_without_prompt_adapter_is_named(make_train_cfg):
    cfg = resolve_run_config(make_train_cfg("finetune=coop", "init=minilm"), "train")
    with pytest.raises(NoPromptAdapterError, match="model.encoders.text: .*no adapter for"):
        assemble(cfg, "bench")


def test_bad_context_settings_are_named(make_train_cfg, open_clip_towers):
    cfg = resolve_run_config(make_train_cfg("finetune=coop", "finetune.n_ctx=0"), "train")
    with pytest.raises((ValueError, InstantiationException), match="finetune.n_ctx must be"):
        assemble(cfg, "bench")
    with pytest.raises(ValueError, match="finetune.ctx_init is empty"):
        CoOp(ctx_init=" ")
    with pytest.raises(ValueError, match="context tokens followed by the class name"):
        # 1 + 75 + "circle" "." + end of text: more than open_clip's 77 positions
        PromptContext(open_clip_towers["text"], ["circle"], n_ctx=75)


def test_missing_class_names_are_named(open_clip_towers):
    loss, optimizer = torch.nn.CrossEntropyLoss(), partial(torch.optim.SGD, lr=0.1)
    with pytest.raises(ValueError, match="gives 0 class names for 3 classes"):
        PromptClassifier(open_clip_towers, loss, 3, [], optimizer)
    with pytest.raises(ValueError, match=r"blank at \[1\].*data.label_names"):
        PromptContext(open_clip_towers["text"], ["circle", " "], n_ctx=2)


def test_configs_that_coop_cannot_take_are_refused(make_train_cfg):
    with pytest.raises(ConfigError, match="data.modalities: PromptClassifier classifies images"):
        resolve_run_config(make_train_cfg("finetune=coop", "data.modalities=[image,text]"), "train")
    with pytest.raises(ConfigError, match="finetune=coop applies to a .*PromptClassifier"):
        resolve_run_config(make_train_cfg("objective=classify", "finetune=coop"), "train")
    assert PromptClassifier.tower_modalities(["image"]) == ["image", "text"]


def test_coop_on_random_towers_freezes_them_all(make_train_cfg):
    # init=scratch: the towers are random (a baseline) and frozen too; only the context trains.
    cfg = resolve_run_config(make_train_cfg("finetune=coop", "init=scratch"), "train")
    module = assemble(cfg, "bench").module
    assert [n for n, p in module.named_parameters() if p.requires_grad] == ["prompts.context"]
    assert module.prompts.texts[0] == "XXXXXXXXXXXXXXXX circle."  # 16 bytes of context
