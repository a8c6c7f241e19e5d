"""What the builders declare: fusion choices, injected arguments, the data-module contract."""

import importlib
import inspect
import pkgutil
from collections import defaultdict
from pathlib import Path

import pytest
import yaml
from hydra.utils import get_class, instantiate

import mmexp.builders
import mmexp.fusion
import mmexp.utils.instantiate
from mmexp import CONFIG_DIR
from mmexp.builders import (
    INJECTED,
    build_data_and_model,
    build_encoders,
    build_module,
    fusion_choices,
    tower_modalities,
)
from mmexp.data.contract import MultimodalDataModule, missing_members
from mmexp.data.loaders import SplitLoaders
from mmexp.encoders import SmallConvEncoder
from mmexp.fusion.base import FusionStrategy
from mmexp.lit.classifier import MultimodalClassifier
from mmexp.lit.contrastive import ContrastivePretrainer
from mmexp.lit.regressor import MultimodalRegressor
from mmexp.utils.instantiate import build_trainer

STRATEGIES = [
    getattr(mmexp.fusion, name)
    for name in mmexp.fusion.__all__
    if getattr(mmexp.fusion, name) is not FusionStrategy
]


def fusion_targets() -> dict[str, str]:
    return {
        path.stem: yaml.safe_load(path.read_text())["_target_"]
        for path in (Path(CONFIG_DIR) / "fusion").glob("*.yaml")
    }


@pytest.mark.parametrize("cls", STRATEGIES, ids=lambda cls: cls.__name__)
def test_every_strategy_names_its_config(cls):
    target = fusion_targets().get(cls.config_name)
    assert target is not None, f"no conf/fusion/{cls.config_name}.yaml"
    assert get_class(target) is cls


def test_every_fusion_config_builds_an_exported_strategy():
    for name, target in fusion_targets().items():
        assert get_class(target) in STRATEGIES, name


def test_fusion_choices_filter_the_exported_strategies():
    assert fusion_choices(lambda cls: True) == sorted(cls.config_name for cls in STRATEGIES)
    assert "late" not in fusion_choices(lambda cls: not cls.produces_logits)


@pytest.mark.parametrize(
    "module", [MultimodalClassifier, MultimodalRegressor, ContrastivePretrainer]
)
def test_every_module_takes_the_arguments_injected_into_all_modules(module):
    accepted = set(inspect.signature(module).parameters)
    assert {"encoders", "optimizer", "scheduler", "run_config", "save_frozen_weights"} <= accepted
    assert accepted & INJECTED["objective.module"] >= {"run_config", "save_frozen_weights"}


# Between them the builders pass every argument they can: decision-level logits (late), a
# matching head (itm), no fusion (contrastive), one output (regression), ModDrop.
INJECTING_RUNS = [
    [],
    ["fusion=late"],
    ["objective=itm"],
    ["objective=contrastive"],
    ["objective=regression"],
    ["objective=multilabel"],
    ["model.modality_dropout=0.3"],
    ["training=unimodal_aux"],
    ["finetune=coop"],  # a prompt classifier: the class names, a text tower beside the data's
]


def _record_injections(monkeypatch, cfg) -> dict[str, list[set[str]]]:
    """Intercept the builders' instantiate calls: the keyword names passed, per node path."""
    paths = {cfg.model.encoders[m]._target_: "model.encoders.*" for m in tower_modalities(cfg)}
    nodes = {"model.head": cfg.model.head, "fusion": cfg.fusion}
    nodes |= {"objective.module": cfg.objective.module, "trainer": cfg.trainer}
    for path, node in nodes.items():
        assert node._target_ not in paths, f"{path} shares its target with {paths[node._target_]}"
        paths[node._target_] = path
    seen: dict[str, list[set[str]]] = defaultdict(list)

    def recording(config, *args, **kwargs):
        path = paths.get(config.get("_target_"))
        if path is None or not kwargs.pop("_partial_", False):
            if path is not None:
                seen[path].append(set(kwargs))
            return instantiate(config, *args, **kwargs)
        factory = instantiate(config, *args, _partial_=True, **kwargs)

        def called(**parts):
            seen[path].append(set(parts))
            return factory(**parts)

        return called

    monkeypatch.setattr(mmexp.builders, "instantiate", recording)
    monkeypatch.setattr(mmexp.utils.instantiate, "instantiate", recording)
    return seen


def test_the_declared_injections_are_what_the_builders_pass(make_train_cfg, monkeypatch):
    passed: dict[str, set[str]] = defaultdict(set)
    for overrides in INJECTING_RUNS:
        cfg = make_train_cfg(*overrides)
        seen = _record_injections(monkeypatch, cfg)
        build_module(cfg, num_classes=3, label_names=["circle", "square", "triangle"])
        build_trainer(cfg)
        expected = {"model.encoders.*", "objective.module", "trainer"}
        if cfg.objective.get("uses_fusion", True):
            # late fusion outputs the logits itself: its head is an identity, not built
            expected |= {"fusion"} if overrides == ["fusion=late"] else {"fusion", "model.head"}
        assert set(seen) == expected, overrides
        for path, calls in seen.items():
            for names in calls:
                assert names <= INJECTED[path], (overrides, path)
                passed[path] |= names
    assert dict(passed) == {path: set(names) for path, names in INJECTED.items()}


def test_an_argument_missing_from_the_declaration_is_refused(make_train_cfg, monkeypatch):
    monkeypatch.setitem(INJECTED, "model.head", frozenset({"in_dim"}))
    with pytest.raises(TypeError, match=r"model\.head: the builders pass \['out_dim'\]"):
        build_module(make_train_cfg(), num_classes=3)


def test_a_fusion_for_a_module_without_one_is_refused(make_train_cfg):
    cfg = make_train_cfg("objective=classify")
    cfg.objective.module._target_ = "tests.test_builders.NoFusionModule"
    with pytest.raises(TypeError, match="takes no fusion argument"):
        build_module(cfg, num_classes=3)


class NoFusionModule(ContrastivePretrainer):
    def __init__(self, encoders, loss, optimizer, **options):
        options.pop("head", None)
        options.pop("num_classes", None)
        super().__init__(encoders, loss, optimizer, **options)


class NotADataModule:
    def __init__(self, **options) -> None:
        self.options = options

    def prepare_data(self) -> None:
        pass


def test_a_data_module_lacking_the_contract_is_named(make_train_cfg):
    assert missing_members(NotADataModule())[:3] == ["bad_samples", "num_classes", "label_names"]
    cfg = make_train_cfg()
    cfg.data = {"_target_": "tests.test_builders.NotADataModule", "modalities": ["image", "text"]}
    with pytest.raises(TypeError, match=r"NotADataModule, which lacks \['bad_samples'"):
        build_data_and_model(cfg)


def test_the_shipped_data_module_satisfies_the_contract(make_train_cfg):
    datamodule, _ = build_data_and_model(make_train_cfg())
    assert isinstance(datamodule, MultimodalDataModule)
    assert missing_members(datamodule) == []


def _shipped_data_modules() -> list[type]:
    """Every data-module class of mmexp (subclasses of SplitLoaders), imported from its files."""
    import mmexp.data

    for info in pkgutil.walk_packages(mmexp.data.__path__, "mmexp.data."):
        importlib.import_module(info.name)
    found, todo = [], [SplitLoaders]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls is not SplitLoaders and cls.__module__.startswith("mmexp."):
            found.append(cls)
    return sorted(found, key=lambda cls: cls.__qualname__)


def test_missing_members_asks_for_every_member_of_the_protocol():
    declared = {n for n in vars(MultimodalDataModule) if not n.startswith("_")}
    declared |= set(MultimodalDataModule.__annotations__)
    assert set(missing_members(object())) == declared
    assert {"label_names", "label_report", "num_classes", "bad_samples"} <= declared


@pytest.mark.parametrize("cls", _shipped_data_modules(), ids=lambda cls: cls.__name__)
def test_every_shipped_data_module_class_defines_the_protocol_members(cls):
    # bad_samples is an instance attribute set in __init__: checked on built data modules
    members = [m for m in missing_members(object()) if m != "bad_samples"]
    assert [m for m in members if not hasattr(cls, m)] == []


class Unmarked(SmallConvEncoder):
    """Says it is pretrained without saying so from its config."""

    def __init__(self, **options) -> None:
        super().__init__(**options)
        self.pretrained = True


def test_an_encoder_whose_pretrained_flag_disagrees_with_its_config_is_refused(make_train_cfg):
    cfg = make_train_cfg()
    cfg.model.encoders.image._target_ = "tests.test_builders.Unmarked"
    with pytest.raises(TypeError, match="override loads_pretrained"):
        build_encoders(cfg)


def test_a_module_that_is_no_multimodal_module_is_refused(make_train_cfg):
    cfg = make_train_cfg()
    cfg.objective.module = {"_target_": "torch.nn.Identity"}
    with pytest.raises(TypeError, match="is not a mmexp.lit.common.MultimodalModule"):
        build_module(cfg, num_classes=3)
