"""Check a composed config against the callables it names, before anything is built.

The schema of a node with a ``_target_`` is the signature of its target (a class's
``__init__``): no second copy of the code to keep in step. All problems are collected and one
:class:`ConfigError` lists them, each with its key path:

* unknown keys, with the closest parameter as a hint. ``**kwargs`` that a class passes on
  to ``super().__init__`` are checked against the parent's signature (the data modules);
  any other ``**kwargs`` (``create_wandb_logger``, ``minilm_encoder``, ``DDPStrategy``)
  accept anything, so those keys are **not** checked.
* wrong types, for annotations made of ``int``, ``float`` (an int is one), ``bool`` (not an
  int), ``str``, ``None``, ``Literal``, sequences and mappings; other annotations, nested
  ``_target_`` nodes, ``???`` and interpolations that do not resolve are skipped.
* missing required parameters of the target's own signature that the node does not set and
  the code does not pass (:data:`mmexp.builders.INJECTED`); not for ``_partial_`` nodes or
  ``_args_``.
* widths. Encoders project to ``model.width`` and the head reads the fusion's ``out_dim``
  (:mod:`mmexp.builders` passes them), so those cannot disagree in the config. What can:
  the fusion's ``heads`` must divide ``model.width``, a transformer encoder's its ``width``
  (``null``: ``model.width``); an encoder's ``input_dim`` must equal
  ``data.feature_dims.<m>``; each of ``data.modalities`` needs an encoder (and each tower a
  module adds, :func:`mmexp.builders.tower_modalities`). Skipped when
  ``finetune.checkpoint`` is set (the pretraining run's encoders and width replace them).

The keys mmexp reads itself (the top level, ``model``, ``objective``, ``feature_cache``,
shared ``data`` and ``trainer`` keys) have no signature: their types are declared in
:mod:`mmexp.config_schema`. Not checked: values the code passes anyway (``fusion.dim``), and
what only the data or the target's own code can tell.
"""

from __future__ import annotations

import ast
import difflib
import functools
import inspect
import logging
import textwrap
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Literal, Union

from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf

from mmexp.builders import (
    CONSUMED,
    INJECTED,
    available_fusions,
    check_matching_fusion,
    tower_modalities,
)
from mmexp.config_schema import check_schemas

SPECIAL_KEYS = frozenset({"_target_", "_partial_", "_recursive_", "_convert_", "_args_"})

_SIMPLE = (bool, int, float, str)
_SEQUENCES = (list, tuple, set, frozenset, Sequence)


class ConfigError(ValueError):
    """The config has problems; ``problems`` lists them, one per line of the message."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid config:\n" + "\n".join(f"  {p}" for p in problems))
        self.problems = problems


@dataclass(frozen=True)
class _Schema:
    params: dict[str, inspect.Parameter]
    hints: dict[str, Any]
    required: tuple[str, ...]
    open: bool  # takes **kwargs that are not checked


def check_config(cfg: DictConfig) -> None:
    """Validate every ``_target_`` node of ``cfg`` and the widths that must agree.

    Args:
        cfg: A composed config (``conf/train.yaml`` or ``conf/eval.yaml``); ``hydra`` is
            skipped.

    Raises:
        ConfigError: With every problem found, each naming its key path.
    """
    problems: list[str] = []
    for key in cfg:
        if key != "hydra" and not _is_opaque(cfg, key):
            _walk(cfg[key], str(key), problems)
    check_schemas(cfg, problems)
    _check_widths(cfg, _towers(cfg, problems), problems)
    _check_matching(cfg, problems)
    _check_finetune_module(cfg, problems)
    if problems:
        raise ConfigError(problems)


def _target_object(target: str) -> Any:
    """``hydra.utils.get_object``, without the ERROR line Hydra logs before raising.

    The config check reports an unimportable target itself, with its key path.
    """
    hydra_log = logging.getLogger("hydra.utils")
    level = hydra_log.level
    hydra_log.setLevel(logging.CRITICAL)
    try:
        return get_object(target)
    finally:
        hydra_log.setLevel(level)


def _is_opaque(node: DictConfig | ListConfig, key: Any) -> bool:
    return OmegaConf.is_missing(node, key) or OmegaConf.is_interpolation(node, key)


def _walk(node: Any, path: str, problems: list[str]) -> None:
    if isinstance(node, DictConfig):
        if "_target_" in node:
            _check_node(node, path, problems)
        children = [(key, f"{path}.{key}") for key in node]
    elif isinstance(node, ListConfig):
        children = [(index, f"{path}[{index}]") for index in range(len(node))]
    else:
        return
    for key, child_path in children:
        # an interpolated node is checked where it is defined (objective.module.loss)
        if not _is_opaque(node, key):
            _walk(node[key], child_path, problems)


def _lookup(table: Mapping[str, frozenset[str]], path: str) -> set[str]:
    depth = path.count(".")
    return set().union(
        *(
            names
            for pattern, names in table.items()
            if pattern.count(".") == depth and fnmatchcase(path, pattern)
        )
    )


def _check_node(node: DictConfig, path: str, problems: list[str]) -> None:
    try:
        target = node._target_
        schema = _schema(_target_object(str(target)))
    except ImportError as error:
        reason = " ".join(str(error).split())
        # A strategy's class is the one target users type by hand (fusion._target_=...).
        hint = f"; {available_fusions()}" if path == "fusion" else ""
        problems.append(f"{path}._target_: cannot import {target!r} ({reason}){hint}")
        return
    except Exception:  # ??? target, or no inspectable signature (builtins)
        return
    extra = _lookup(CONSUMED, path)
    for key in (str(k) for k in node if k not in SPECIAL_KEYS):
        if key in schema.params and key in schema.hints:
            _check_type(node, key, schema, f"{path}.{key}", problems)
        if key not in schema.params and key not in extra and not schema.open:
            close = difflib.get_close_matches(key, [*schema.params, *extra], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append(f"{path}.{key}: unknown key for {target}{hint}")
    if not node.get("_partial_") and "_args_" not in node:
        given = set(node) | _lookup(INJECTED, path)
        problems.extend(
            f"{path}.{name}: missing, required by {target}"
            for name in schema.required
            if name not in given
        )


@functools.cache
def _schema(target: Any) -> _Schema:
    """Parameters of ``target``, following ``**kwargs`` passed on to ``super().__init__``."""
    is_class = isinstance(target, type)
    chain = (
        [vars(k)["__init__"] for k in target.__mro__ if k is not object and "__init__" in vars(k)]
        if is_class
        else [target]
    )
    params: dict[str, inspect.Parameter] = {}
    hints: dict[str, Any] = {}
    required: tuple[str, ...] = ()
    for index, function in enumerate(chain):
        own = list(inspect.signature(function).parameters.values())[int(is_class) :]
        if index == 0:  # a parent's required parameters are usually passed by the subclass
            required = tuple(
                p.name
                for p in own
                if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            )
        for parameter in own:
            if parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                params.setdefault(parameter.name, parameter)
        for name, hint in _hints(function).items():
            hints.setdefault(name, hint)
        kwargs = next((p.name for p in own if p.kind is p.VAR_KEYWORD), None)
        if kwargs is None:
            break
        if index + 1 == len(chain) or not _forwards_to_super(function, kwargs):
            return _Schema(params, hints, required, open=True)
    return _Schema(params, hints, required, open=False)


def _forwards_to_super(function: Any, kwargs_name: str) -> bool:
    """Whether ``function`` calls ``super().__init__(..., **kwargs_name)``."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(inspect.unwrap(function))))
    except (OSError, TypeError, SyntaxError):
        return False
    for call in ast.walk(tree):
        if isinstance(call, ast.Call) and ast.unparse(call.func) == "super().__init__":
            return any(
                k.arg is None and isinstance(k.value, ast.Name) and k.value.id == kwargs_name
                for k in call.keywords
            )
    return False


def _hints(function: Any) -> dict[str, Any]:
    """Evaluated annotations; those that cannot be evaluated are left out."""
    function = inspect.unwrap(function)
    try:
        return typing.get_type_hints(function)
    except Exception:  # names only imported under TYPE_CHECKING, or Python-version syntax
        return {}


def _check_type(
    node: DictConfig, key: str, schema: _Schema, path: str, problems: list[str]
) -> None:
    expected = schema.hints[key]
    try:
        value = node[key]
        if (
            isinstance(value, DictConfig)
            and "_target_" in value
            or value is None
            and schema.params[key].default is None
            or _matches(value, expected) is not False
        ):
            return
        shown = (
            OmegaConf.to_container(value, resolve=True)
            if isinstance(value, (DictConfig, ListConfig))
            else value
        )
    except Exception:  # ??? or an interpolation that does not resolve (yet)
        return
    problems.append(
        f"{path}: expected {_type_name(expected)}, got {shown!r} ({type(shown).__name__})"
    )


def _matches(value: Any, expected: Any) -> bool | None:
    """Whether ``value`` fits ``expected``; ``None`` when the annotation is not checked."""
    origin = typing.get_origin(expected)
    if origin in (Union, types.UnionType):
        results = [_matches(value, member) for member in typing.get_args(expected)]
        return True if True in results else None if None in results else False
    if expected is type(None):
        return value is None
    if origin is Literal:
        return value in typing.get_args(expected)
    if expected in _SIMPLE:
        if isinstance(value, bool):
            return expected is bool
        return isinstance(value, (int, float) if expected is float else expected)
    if expected in (dict, Mapping) or origin in (dict, Mapping):
        return isinstance(value, DictConfig)
    if expected in _SEQUENCES or origin in _SEQUENCES:
        if not isinstance(value, ListConfig):
            return False
        members = {a for a in typing.get_args(expected) if a is not Ellipsis}
        if len(members) != 1:
            return True  # element types are checked for homogeneous sequences only
        member = members.pop()
        return all(_matches(item, member) is not False for item in value)
    return None


def _type_name(expected: Any) -> str:
    origin = typing.get_origin(expected)
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(member) for member in typing.get_args(expected))
    if origin is Literal:
        return " | ".join(repr(choice) for choice in typing.get_args(expected))
    if isinstance(expected, type) and not typing.get_args(expected):
        return "None" if expected is type(None) else expected.__name__
    return repr(expected).replace("typing.", "").replace("collections.abc.", "")


def _get(cfg: DictConfig, key: str) -> Any:
    try:
        return OmegaConf.select(cfg, key, default=None)
    except Exception:  # ??? or an interpolation that does not resolve
        return None


def _param(node: DictConfig, name: str) -> Any:
    """The node's value of ``name``, else the default of its target's parameter."""
    if name in node:
        return _get(node, name)
    try:
        parameter = _schema(_target_object(str(node._target_))).params.get(name)
    except Exception:
        return None
    return None if parameter is None or parameter.default is parameter.empty else parameter.default


def _check_matching(cfg: DictConfig, problems: list[str]) -> None:
    """Image-text matching needs a fusion whose output can tell pairs apart."""
    try:
        reason = check_matching_fusion(cfg)
    except (ImportError, TypeError, ValueError):  # a bad fusion target: the node check says
        return
    if reason is not None:
        problems.append(f"fusion: {reason}")


def _check_finetune_module(cfg: DictConfig, problems: list[str]) -> None:
    """A protocol for one kind of module (its ``applies_to``) needs that module."""
    protocol_target, module_target = (
        _get(cfg, "finetune._target_"),
        _get(cfg, "objective.module._target_"),
    )
    if not protocol_target or not module_target:
        return
    try:
        protocol, module = _target_object(str(protocol_target)), _target_object(str(module_target))
    except Exception:  # a bad target: the node check says
        return
    needed = getattr(protocol, "applies_to", None)
    if isinstance(needed, type) and isinstance(module, type) and not issubclass(module, needed):
        problems.append(
            f"objective.module._target_: finetune={getattr(protocol, 'name', protocol_target)} "
            f"applies to a {needed.__module__}.{needed.__name__}, not {module_target}"
        )


def _towers(cfg: DictConfig, problems: list[str]) -> list[str]:
    """The modalities the module has encoders for (:func:`mmexp.builders.tower_modalities`)."""
    modalities = _get(cfg, "data.modalities")
    if not isinstance(modalities, ListConfig):
        return []
    try:
        return tower_modalities(cfg)
    except ValueError as error:  # the module refuses the data's modalities
        problems.append(f"data.modalities: {error}")
    except Exception:  # no objective module, or a bad target: the node check says
        pass
    return list(modalities)


def _check_widths(cfg: DictConfig, towers: list[str], problems: list[str]) -> None:
    if _get(cfg, "finetune.checkpoint") is not None:
        return  # encoders and model.width come from the pretraining run
    width = _get(cfg, "model.width")
    modalities = _get(cfg, "data.modalities")
    encoders = _get(cfg, "model.encoders") or {}
    feature_dims = _get(cfg, "data.feature_dims") or {}
    fusion = _get(cfg, "fusion")
    heads = _param(fusion, "heads") if isinstance(fusion, DictConfig) else None
    if (
        isinstance(heads, int)
        and isinstance(width, int)
        and heads > 0
        and width % heads
        and _get(cfg, "objective.uses_fusion") is not False
    ):
        problems.append(f"fusion.heads: {heads} heads do not divide model.width={width}")
    for modality in towers:
        node = encoders.get(modality)
        prefix = f"model.encoders.{modality}"
        if node is None:
            needs = (
                f"data.modalities: includes {modality!r}"
                if modality in modalities
                else f"objective.module: the module has a {modality} tower"
            )
            problems.append(f"{needs} but {prefix} is not set")
            continue
        if not isinstance(node, DictConfig):
            continue
        heads, inner = _param(node, "heads"), _param(node, "width")
        inner_path = f"{prefix}.width"
        if inner is None:
            inner, inner_path = width, "model.width"
        if (
            isinstance(heads, int)
            and isinstance(inner, int)
            and heads > 0
            and inner % heads
            and _param(node, "kind") in (None, "transformer")
        ):
            problems.append(f"{prefix}.heads: {heads} heads do not divide {inner_path}={inner}")
        input_dim, data_dim = _get(node, "input_dim"), feature_dims.get(modality)
        if isinstance(input_dim, int) and isinstance(data_dim, int) and input_dim != data_dim:
            problems.append(
                f"{prefix}.input_dim={input_dim} does not match "
                f"data.feature_dims.{modality}={data_dim}"
            )
