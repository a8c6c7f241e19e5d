"""The extension guides (docs/extending/*.md): their code runs and does what the page says.

Fenced blocks are marked in their info string. ``file=<path>`` writes the block to that
path in a temporary folder (the page's own package and configs, e.g. ``mylab/fusion.py``;
the page's text names the path, since a rendered page does not show the info string), and
Python files are imported. ``python test`` blocks are then executed, in order, in one fresh
namespace with that folder as working directory and on ``sys.path``, and the ``test_*``
functions they define are called. ``bash test`` blocks hold ``mmexp-train`` command lines,
run in process with small data and one epoch. Each page then has its own checks of what it
says, and a page whose code is broken fails them.
"""

from __future__ import annotations

import csv
import importlib
import json
import re
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra.utils import get_class
from omegaconf import OmegaConf, open_dict
from PIL import Image
from torch import nn

from mmexp.builders import build_data_and_model, build_encoders, build_fusion_and_head
from mmexp.data.contract import MultimodalDataModule, missing_members
from mmexp.data.manifest import read_manifest
from mmexp.encoders.base import EncoderOutput
from mmexp.encoders.freezing import BackboneEncoder, find_blocks
from mmexp.fusion.cost import count_params
from mmexp.lit.heads import MLPHead
from mmexp.train import train
from mmexp.utils.checkpoints import TRUSTED_TARGETS_ENV, load_checkpoint
from tests.helpers import fusion as shipped
from tests.helpers.configs import compose_config

ROOT = Path(__file__).resolve().parents[2]
GUIDES = ROOT / "docs" / "extending"
FENCE = re.compile(r"^```(?P<info>[^\n]*)\n(?P<body>.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
# Appended to every command of a page: one short epoch on the CPU, no console extras.
SMALL_RUN = [
    "trainer.max_epochs=1",
    "trainer.accelerator=cpu",
    "logger=csv",
    "++callbacks.model_summary=null",
    "++callbacks.rich_progress_bar=null",
    "data.num_workers=0",
    "data.pin_memory=false",
    "data.batch_size=16",
]
# The sizes of the embedded default (shapes) in those runs.
SMALL_SHAPES = {"num_train": 64, "num_val": 32, "num_test": 32}


@dataclass
class Block:
    language: str
    test: bool
    file: str | None
    code: str
    line: int  # of the page, before the block's first line


@dataclass
class Guide:
    """A page whose blocks have run: its folder, its files and its command lines."""

    page: Path
    root: Path
    files: dict[str, str]
    commands: list[str] = field(default_factory=list)

    def config(self, group: str) -> tuple[Path, str]:
        """The page's config file under ``<conf>/<group>/`` and its choice name."""
        found = [path for path in self.files if f"/conf/{group}/" in f"/{path}"]
        assert len(found) == 1, f"{self.page.name}: expected one conf/{group}/ file, got {found}"
        return self.root / found[0], Path(found[0]).stem

    def config_dirs(self) -> list[Path]:
        return sorted(
            {
                self.root / path.split("/conf/")[0] / "conf"
                for path in self.files
                if "/conf/" in path
            }
        )


def blocks(text: str) -> list[Block]:
    found = []
    for match in FENCE.finditer(text):
        language, *words = match["info"].split() or [""]
        files = [word.partition("=")[2] for word in words if word.startswith("file=")]
        line = text.count("\n", 0, match.start("body"))
        file = files[0] if files else None
        found.append(Block(language, "test" in words, file, match["body"], line))
    return found


def top_packages(files: dict[str, str]) -> set[str]:
    return {Path(path).parts[0] for path in files if path.endswith(".py")}


def forget(packages: set[str]) -> None:
    for name in list(sys.modules):
        if name.split(".")[0] in packages:
            del sys.modules[name]


@pytest.fixture
def run_guide(tmp_path, monkeypatch):
    """``run_guide(page)``: write the page's files, run its test blocks, return a :class:`Guide`."""
    packages: set[str] = set()

    def run(page: Path | str, text: str | None = None) -> Guide:
        page = Path(page)
        text = page.read_text() if text is None else text
        found = blocks(text)
        assert any(b.test or b.file for b in found), f"{page.name}: no block is marked to run"
        root = tmp_path / page.stem
        root.mkdir()
        files: dict[str, str] = {}
        for block in found:
            if block.file:
                assert block.file not in files, f"{page.name}: {block.file} written twice"
                # The rendered page does not show the info string: the text names the file.
                assert f"`{block.file}`" in text, f"{page.name} does not name {block.file}"
                files[block.file] = block.code
                (root / block.file).parent.mkdir(parents=True, exist_ok=True)
                (root / block.file).write_text(block.code)
        packages.update(top_packages(files))
        forget(packages)
        monkeypatch.syspath_prepend(str(root))
        monkeypatch.chdir(root)
        for path in files:  # every module imports: a broken one fails here
            if path.endswith(".py"):
                importlib.import_module(path.removesuffix(".py").replace("/", "."))
        namespace: dict[str, Any] = {"__name__": f"guide_{page.stem}"}
        for block in found:
            if block.language == "python" and block.test:
                # Padded to its place in the page, so that tracebacks give the page's lines.
                code = "\n" * block.line + block.code
                exec(compile(code, str(page), "exec"), namespace)
        for name, value in list(namespace.items()):
            if name.startswith("test_") and callable(value):
                value()
        commands = [
            line
            for block in found
            if block.language == "bash" and block.test
            for line in block.code.replace("\\\n", " ").splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        ]
        return Guide(page, root, files, commands)

    yield run
    forget(packages)


def command_overrides(guide: Guide, command: str) -> list[str]:
    """The overrides of an ``mmexp-train`` line, ``--config-dir`` as a search path entry."""
    words = shlex.split(command, comments=True)
    assert words[0] == "mmexp-train", command
    overrides, rest = [], iter(words[1:])
    for word in rest:
        if word in ("--config-dir", "-cd"):
            overrides.append(f"hydra.searchpath=[file://{(guide.root / next(rest)).resolve()}]")
        else:
            overrides.append(word)
    return overrides


def mmexp_train(guide: Guide, command: str, data_dir: Path, run_name: str) -> dict[str, Any]:
    """Run one ``mmexp-train`` line of a page in process, with :data:`SMALL_RUN`."""
    overrides = command_overrides(guide, command)
    cfg = compose_config("train", [*overrides, *SMALL_RUN], guide.root / run_name, data_dir)
    with open_dict(cfg):
        for key, value in SMALL_SHAPES.items():
            if key in cfg.data:
                cfg.data[key] = value
    result = train(cfg)
    assert result["status"] == "completed", (command, result.get("error"))
    assert 0.0 <= result["metrics"]["test/acc"] <= 1.0
    return result


def compose(guide: Guide, data_dir: Path, *overrides: str):
    dirs = ",".join(f"file://{path}" for path in guide.config_dirs())
    return compose_config(
        "train", [f"hydra.searchpath=[{dirs}]", *overrides], guide.root / "composed", data_dir
    )


# --- fusion ---------------------------------------------------------------------------------


def with_nan_placeholders(modalities, absent: str) -> dict[str, EncoderOutput]:
    features = shipped.make_features(modalities, grad=True)
    with torch.no_grad():
        features[absent].pooled[1] = float("nan")
        features[absent].tokens[1] = float("nan")
    features[absent].present = torch.tensor([True, False, True, True])
    return features


def check_fusion_strategy(guide: Guide) -> type:
    """The shipped invariance checks on the page's config, and non-finite placeholders."""
    path, _ = guide.config("fusion")
    cls = get_class(OmegaConf.load(path)._target_)
    for modalities in shipped.MODALITY_SETS:
        shipped.check_shape_finite_and_gradients(path, modalities)
        shipped.check_padding_does_not_change_output(path, modalities)
        shipped.check_absent_modality_is_ignored(path, modalities)
        shipped.check_sample_without_any_modality_stays_finite(path, modalities)
        # Placeholders may be non-finite (mmexp/fusion/layers.py): nothing of them may leak,
        # neither into the output nor into the gradients.
        for absent in modalities:
            torch.manual_seed(0)
            fusion = shipped.build(path, modalities)
            features = with_nan_placeholders(modalities, absent)
            out = fusion(features)
            assert bool(torch.isfinite(out).all()), f"absent {absent}: non-finite output"
            out.sum().backward()
            for name, parameter in fusion.named_parameters():
                finite = parameter.grad is None or bool(torch.isfinite(parameter.grad).all())
                assert finite, f"absent {absent}: non-finite gradient of {name}"
    shipped.check_fusion_cost(path)
    return cls


def test_fusion_guide(run_guide, data_dir, monkeypatch):
    guide = run_guide(GUIDES / "fusion.md")
    cls = check_fusion_strategy(guide)
    _, name = guide.config("fusion")
    # Through the config machinery: the class, the shared head on its out_dim, the budget.
    cfg = compose(guide, data_dir, f"fusion={name}", "fusion.match_params=200000")
    fusion, head = build_fusion_and_head(cfg, 3)
    assert type(fusion) is cls
    reference = MLPHead(fusion.out_dim, 3, (256,), 0.1)
    assert [type(m) for m in head] == [type(m) for m in reference]
    assert count_params(head) == count_params(reference)
    assert 0.95 * 200_000 <= count_params(fusion) + count_params(head) <= 200_000
    results = [mmexp_train(guide, c, data_dir, f"run{i}") for i, c in enumerate(guide.commands)]
    assert any("fusion.match_params" in command for command in guide.commands)
    # Its checkpoints name a target outside mmexp: refused unless trusted.
    monkeypatch.delenv(TRUSTED_TARGETS_ENV, raising=False)
    with pytest.raises(ValueError, match=TRUSTED_TARGETS_ENV):
        load_checkpoint(results[0]["last_checkpoint"])
    prefix = cls.__module__.split(".")[0] + "."
    monkeypatch.setenv(TRUSTED_TARGETS_ENV, prefix)
    assert load_checkpoint(results[0]["last_checkpoint"])["mmexp_config"]["fusion"]["_target_"]


def broken(page: Path, old: str, new: str) -> str:
    text = page.read_text()
    assert text.count(old) == 1, f"{page.name} no longer holds {old!r}"
    return text.replace(old, new)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        # absent modalities take part in the max
        (
            "projected.masked_fill(~present[..., None], lowest).amax(dim=1)",
            "projected.amax(dim=1)",
            "not close",
        ),
        # placeholders enter the projections: a NaN one poisons the gradients
        (
            "self.proj[m](zero_absent(features[m].pooled, present[:, i]))",
            "self.proj[m](features[m].pooled)",
            "non-finite gradient",
        ),
    ],
    ids=["absent-in-max", "placeholders-projected"],
)
def test_a_fusion_guide_with_broken_masking_fails(run_guide, old, new, message):
    text = broken(GUIDES / "fusion.md", old, new)
    with pytest.raises(AssertionError, match=message):
        check_fusion_strategy(run_guide(GUIDES / "fusion.md", text))


# --- encoder --------------------------------------------------------------------------------

# Decoded values of each modality, as the data sets hand them to processors: unequal lengths
# and sizes, so that batches pad.
RAW = {
    "text": ["a red square", "a big blue circle in the top left", "x"],
    "image": [
        Image.new("RGB", size, colour)
        for size, colour in [((40, 30), "red"), ((32, 32), "blue"), ((20, 48), "grey")]
    ],
}


def encoder_configs(guide: Guide) -> list[tuple[str, str]]:
    """``(modality, name)`` of each ``conf/model/encoders/<modality>/<name>.yaml`` of a page."""
    found = []
    for path in guide.files:
        parts = Path(path).parts
        if "encoders" in parts and path.endswith(".yaml"):
            found.append((parts[parts.index("encoders") + 1], Path(path).stem))
    assert found, f"{guide.page.name}: no encoder config"
    return found


def encode(encoder: nn.Module, raw: list[Any]) -> EncoderOutput:
    processor = encoder.processor(train=False)
    return encoder(processor.collate([processor(value) for value in raw]))


def check_encoder(guide: Guide, data_dir: Path, modality: str, name: str, *overrides: str):
    """Build through the config, check the declared shapes, padding and gradients."""
    cfg = compose(guide, data_dir, f"model/encoders/{modality}={name}", *overrides)
    node = cfg.model.encoders[modality]
    encoder = build_encoders(cfg)[modality]
    width = int(cfg.model.width)
    assert type(encoder) is get_class(node._target_)
    assert encoder.modality == modality and encoder.out_dim == width
    assert (
        encoder.loads_pretrained(OmegaConf.to_container(node, resolve=True)) == encoder.pretrained
    )
    raw = RAW[modality]
    encoder.eval()
    output = encode(encoder, raw)
    batch, length = output.tokens.shape[:2]
    assert output.tokens.shape == (len(raw), length, width)
    assert output.mask.dtype == torch.bool and output.mask.shape == (batch, length)
    assert output.pooled.shape == (batch, width)
    assert output.mask.any(dim=1).all(), "a sample without a real token"
    for index, value in enumerate(raw):  # alone, without the padding of the batch
        alone = encode(encoder, [value])
        torch.testing.assert_close(alone.pooled[0], output.pooled[index], atol=1e-5, rtol=1e-4)
    encoder.train()
    encode(encoder, raw).pooled.sum().backward()
    for parameter_name, parameter in encoder.named_parameters():
        if parameter.requires_grad:
            assert parameter.grad is not None, f"{parameter_name} gets no gradient"
    return encoder


def check_backbone(guide: Guide, data_dir: Path, modality: str, name: str) -> None:
    """``freeze=last_n`` and ``checkpoint_path`` of a :class:`BackboneEncoder` (ResNet-18)."""
    import torchvision

    torch.manual_seed(0)
    weights = guide.root / "resnet18.pt"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    key = f"model.encoders.{modality}"
    overrides = [
        f"{key}.checkpoint_path={weights}",
        f"{key}.freeze=last_n",
        f"{key}.trainable_blocks=1",
    ]
    check_encoder(guide, data_dir, modality, name, *overrides)
    encoder = build_encoders(
        compose(guide, data_dir, f"model/encoders/{modality}={name}", *overrides)
    )[modality]
    assert isinstance(encoder, BackboneEncoder) and encoder.pretrained
    stored = torch.load(weights, weights_only=True)
    for parameter_name, value in encoder.backbone.state_dict().items():
        if parameter_name in stored:
            torch.testing.assert_close(value, stored[parameter_name], msg=parameter_name)
    last = find_blocks(encoder.backbone, key)[-1]
    for parameter_name, parameter in encoder.named_parameters():
        trains = not parameter_name.startswith("backbone.") or parameter_name.startswith(
            f"backbone.{last}."
        )
        assert parameter.requires_grad == trains, parameter_name
    encoder.train()
    for module_name, module in encoder.backbone.named_modules():
        if module_name:  # the frozen part stays in eval mode: fixed BatchNorm statistics
            assert module.training == module_name.startswith(last), module_name
    # A frozen backbone's outputs can be cached (feature_cache.enabled=true), a training one's not.
    assert encoder.cache_blocker() is not None
    frozen = compose(guide, data_dir, f"model/encoders/{modality}={name}", f"{key}.freeze=frozen")
    assert build_encoders(frozen)[modality].cache_blocker() is None


def check_encoders(guide: Guide, data_dir: Path) -> None:
    for modality, name in encoder_configs(guide):
        cls = get_class(OmegaConf.load(guide.config(f"model/encoders/{modality}")[0])._target_)
        if issubclass(cls, BackboneEncoder):
            check_backbone(guide, data_dir, modality, name)
        else:
            check_encoder(guide, data_dir, modality, name)


def test_encoder_guide(run_guide, data_dir):
    guide = run_guide(GUIDES / "encoder.md")
    check_encoders(guide, data_dir)
    assert len(guide.commands) == len(encoder_configs(guide))
    for number, command in enumerate(guide.commands):
        mmexp_train(guide, command, data_dir, f"run{number}")


def test_an_encoder_guide_that_pools_padding_fails(run_guide, data_dir):
    text = broken(
        GUIDES / "encoder.md", "pooled=masked_mean(tokens, mask)", "pooled=tokens.mean(1)"
    )
    with pytest.raises(AssertionError, match="not close"):
        check_encoders(run_guide(GUIDES / "encoder.md", text), data_dir)


# --- data set -------------------------------------------------------------------------------


def check_data_module(cfg, rows: list[dict[str, Any]]) -> MultimodalDataModule:
    """Build data and model as a run does; the splits and classes are those of ``rows``."""
    datamodule, _ = build_data_and_model(cfg)
    assert isinstance(datamodule, MultimodalDataModule) and not missing_members(datamodule)
    labels = sorted({str(row["label"]) for row in rows})
    assert datamodule.num_classes == len(labels)
    if cfg.data.get("label_names"):
        assert datamodule.label_names == list(cfg.data.label_names)
    else:
        assert sorted(datamodule.label_names) == labels
    datamodule.setup()
    for stage in ("train", "val", "test"):
        expected = sum(row["split"] == stage for row in rows)
        assert len(datamodule.datasets[stage]) == expected, stage
    batch = next(iter(datamodule.train_dataloader()))
    assert set(cfg.data.modalities) | {"label", "index"} <= set(batch)
    assert batch["label"].dtype == torch.long and batch["label"].shape == batch["index"].shape
    return datamodule


def with_unknown_label(source: Path, target: Path, manifest: str) -> None:
    """A copy of the data set whose training split has one row labelled ``bird``."""
    shutil.copytree(source, target)
    rows = read_manifest(target / manifest)
    bird = {**next(r for r in rows if r["split"] == "train"), "id": "bird-row", "label": "bird"}
    write_rows(target / manifest, [*rows, bird])


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        return
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_dataset_guide(run_guide, data_dir):
    guide = run_guide(GUIDES / "dataset.md")
    (command,) = guide.commands
    overrides = command_overrides(guide, command)
    cfg = compose(guide, data_dir, *overrides, *SMALL_RUN)
    root = Path(cfg.data.root)
    rows = read_manifest(root / cfg.data.manifest)
    assert len(rows) >= 6
    check_data_module(cfg, rows)
    mmexp_train(guide, command, data_dir, "run")
    # A label outside data.label_names is refused at setup, naming the row and the classes.
    with_unknown_label(root, guide.root / "with_bird", cfg.data.manifest)
    bad = compose(guide, data_dir, *overrides, *SMALL_RUN, f"data.root={guide.root / 'with_bird'}")
    with pytest.raises(ValueError, match=r"(?s)bird-row.*unknown label.*bird.*\[.cat., .dog.\]"):
        build_data_and_model(bad)[0].setup()
    # The subclass: the same rows as one CSV per split.
    _, name = guide.config("data")
    split_root = guide.root / "split_files"
    shutil.copytree(root, split_root)
    for stage in ("train", "val", "test"):
        write_rows(split_root / f"{stage}.csv", [r for r in rows if r["split"] == stage])
    (split_root / cfg.data.manifest).unlink()
    split_cfg = compose(guide, data_dir, f"data={name}", f"data.root={split_root}", *SMALL_RUN)
    datamodule = check_data_module(split_cfg, rows)
    assert type(datamodule).__name__ == "SplitFilesDataModule"
    with_unknown_label(split_root, guide.root / "split_bird", "train.csv")
    split_bad = compose(
        guide,
        data_dir,
        f"data={name}",
        f"data.root={guide.root / 'split_bird'}",
        "data.label_names=[cat,dog]",
        *SMALL_RUN,
    )
    with pytest.raises(ValueError, match=r"train\.csv.*bird-row"):
        build_data_and_model(split_bad)[0].setup()


# --- evaluation -----------------------------------------------------------------------------


def test_evaluation_guide(run_guide, data_dir):
    guide = run_guide(GUIDES / "evaluation.md")
    (path,) = [p for p in guide.files if p.endswith(".py")]
    mode = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    trained = mmexp_train(guide, "mmexp-train data.modalities=[image,text]", data_dir, "run")
    eval_dir = guide.root / "eval"
    cfg = compose_config(
        "eval",
        [f"ckpt_path={trained['best_checkpoint']}", "trainer.accelerator=cpu", "callbacks=none"],
        eval_dir,
        data_dir,
    )
    returned = mode.main(cfg)
    written = json.loads((eval_dir / f"{mode.MODE}.json").read_text())
    assert written == pytest.approx(returned)
    conditions = ["all", "without_image", "without_text"]
    metrics = ["acc", "auroc", "f1_macro"]
    assert set(written) == {f"{mode.MODE}/{c}/{m}" for c in conditions for m in metrics}
    assert all(0.0 <= value <= 1.0 for value in written.values())
    # With every modality: the test metrics of the checkpoint, as mmexp-train measured them.
    for metric in metrics:
        assert written[f"{mode.MODE}/all/{metric}"] == pytest.approx(
            trained["metrics"][f"test/{metric}"], abs=1e-6
        )
    # An absent modality reaches the fusion: the scores change.
    for condition in conditions[1:]:
        assert written[f"{mode.MODE}/{condition}/auroc"] != written[f"{mode.MODE}/all/auroc"]


# --- the pages ------------------------------------------------------------------------------


def test_every_guide_is_linked_from_the_readme_and_checked_here():
    readme = (ROOT / "README.md").read_text()
    pages = sorted(path.name for path in GUIDES.glob("*.md"))
    assert pages == ["dataset.md", "encoder.md", "evaluation.md", "fusion.md"]
    for name in pages:
        assert f"](docs/extending/{name})" in readme, name
        assert f'GUIDES / "{name}"' in Path(__file__).read_text(), name
