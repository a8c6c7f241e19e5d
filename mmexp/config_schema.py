"""Typed schemas of the config keys that no ``_target_`` signature describes.

:mod:`mmexp.config_check` takes the schema of a ``_target_`` node from its target's
signature. The keys mmexp's own code reads (``model.width``, ``model.save_frozen_weights``,
``feature_cache.enabled``, ``seed``, ``objective.uses_fusion`` ...) have no signature, so
their types are declared here, one dataclass per config node:

* :class:`RunSchema`: the top-level keys of ``train.yaml``, ``eval.yaml`` and
  ``bench.yaml``; each entry point composes only some of them, so none is required.
* :class:`ModelSchema`, :class:`ObjectiveSchema`, :class:`FeatureCacheSchema`: ``model``,
  ``objective`` and ``feature_cache``, whose keys are all known (an unknown key is named).
* :class:`DataSchema`: the keys the shipped data modules share; data sets take more
  (``task``, ``feature_dims`` ...), so any other key is allowed (its data module's
  signature checks it).
* :class:`TrainerSchema`: the ``trainer`` keys mmexp reads itself (the benchmarks, the
  feature cache); ``pytorch_lightning.Trainer``'s signature checks all of them too.

A field without a default is required wherever its node is present. Values are checked,
never converted: a boolean is ``true`` or ``false`` (not ``no``, ``1`` or ``"true"``), an
integer is not a boolean, a float may be an integer, ``null`` only fits an ``Optional``
field; a count annotated with :class:`AtLeast` (``data.batch_size``, ``data.num_workers``)
must reach its bound. OmegaConf's own validation of structured configs is not used because
it converts (``"no"`` to ``False``, ``"3"`` to ``3``), which is what these checks refuse.
Missing values (``???``) and interpolations that do not resolve are skipped, as are nested
``_target_`` nodes (checked against their own signature).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal, Union

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException


@dataclass(frozen=True)
class AtLeast:
    """A lower bound of a number field, as ``Annotated[int, AtLeast(1)]``."""

    minimum: int | float


#: A count of one or more (batch sizes).
PositiveInt = Annotated[int, AtLeast(1)]
#: A count of zero or more (loader workers).
NonNegativeInt = Annotated[int, AtLeast(0)]

#: ``torch.compile`` modes (``model.compile_mode``).
CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]


@dataclass(kw_only=True)
class RunSchema:
    """Top-level keys; the other config groups (``fusion``, ``callbacks`` ...) have targets."""

    #: Only some of these keys are in each entry point's config (``eval.yaml`` has no
    #: ``seed`` or ``train``), and config groups are top-level keys too.
    KEYS_MAY_BE_ABSENT: ClassVar[bool] = True
    OTHER_KEYS_ALLOWED: ClassVar[bool] = True

    task_name: str
    study: str
    tags: list[str] = field(default_factory=list)
    seed: int | None = None
    monitor: str | None = None
    monitor_mode: Literal["min", "max"] = "max"
    # one metric, or one per direction of a multi-objective Optuna search
    optimized_metric: str | list[str] | None = None
    optuna_trial: dict[str, Any] | None = None
    device_slots: DeviceSlotsSchema | None = None
    train: bool = True
    test: bool = True
    ckpt_path: str | None = None
    pretrained_checkpoint: str | None = None
    # the contrastive loss's initial logit scale / bias nodes (init=open_clip|hf_clip)
    logit_init: dict[str, Any] | None = None
    skip_completed: bool = True
    fail_fast: bool = False
    # mmexp-eval: dotlist overrides of the checkpoint's run config
    overrides: list[str] = field(default_factory=list)
    # null turns the cache off like enabled=false (mmexp.data.feature_cache)
    feature_cache: FeatureCacheSchema | None = None
    model: ModelSchema
    data: DataSchema
    objective: ObjectiveSchema
    trainer: TrainerSchema
    callbacks: dict[str, Any] | None = None
    logger: dict[str, Any] | None = None


@dataclass(kw_only=True)
class ModelSchema:
    """``model``: encoders, width, head, optimizer and speed options."""

    encoders: dict[str, Any]
    width: int
    head: dict[str, Any]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any] | None = None
    save_frozen_weights: bool = True
    # ModDrop: one drop probability, or one per modality (mmexp.lit.presence)
    modality_dropout: float | dict[str, float] | None = None
    # per-modality classifiers beside the fused head (training=unimodal_aux|gradient_blending)
    unimodal_losses: dict[str, Any] | None = None
    # training steps held before the training metrics are updated (null: once per epoch)
    train_metrics_every_n_steps: int | None = 50
    compile: bool = False
    compile_mode: CompileMode | None = None
    channels_last: bool = False
    gradient_checkpointing: bool = False


@dataclass(kw_only=True)
class ObjectiveSchema:
    """``objective``: the LightningModule to build and the metric it is judged by."""

    module: dict[str, Any]
    uses_fusion: bool = True
    monitor: str
    monitor_mode: Literal["min", "max"]
    num_outputs: int | None = None
    # the contrastive objectives' loss, referenced by objective.module.loss
    loss: dict[str, Any] | None = None
    # the captioning objective's decoder, referenced by objective.module.decoder
    decoder: dict[str, Any] | None = None


@dataclass(kw_only=True)
class DataSchema:
    """``data``: the keys every shipped data module takes; data sets add their own."""

    OTHER_KEYS_ALLOWED: ClassVar[bool] = True

    modalities: list[str]
    batch_size: PositiveInt = 64
    eval_batch_size: PositiveInt | None = None
    num_workers: NonNegativeInt = 0
    pin_memory: bool = False
    persistent_workers: bool = False
    # mmexp.data.screening.POLICIES
    on_bad_sample: Literal["raise", "skip"] = "raise"
    # a count or a fraction of the training split
    train_subset: int | float | None = None
    subset_seed: int = 0
    # features per step of sequence data sets, read by the width checks
    feature_dims: dict[str, int] | None = None
    # samples lacking modalities (conf/data/missing/, mmexp.data.missing); {} for none
    missing: dict[str, Any] | None = None


@dataclass(kw_only=True)
class TrainerSchema:
    """``trainer``: the keys mmexp reads itself; Lightning takes many more."""

    OTHER_KEYS_ALLOWED: ClassVar[bool] = True

    accelerator: str = "auto"
    devices: int | str | list[int] = "auto"
    num_nodes: int = 1
    precision: int | str | None = None
    max_epochs: int | None = None
    gradient_clip_val: float | None = None
    accumulate_grad_batches: int = 1
    benchmark: bool | None = None


@dataclass(kw_only=True)
class FeatureCacheSchema:
    """``feature_cache``: encoder outputs computed once and reused (frozen encoders)."""

    enabled: bool = False
    dir: str
    # auto: when the fusion reads token sequences
    tokens: Literal["auto"] | bool = "auto"
    # DDP: seconds the other processes of a node wait for its first one to build an entry
    wait_s: float = 3600.0


@dataclass(kw_only=True)
class DeviceSlotsSchema:
    """``device_slots``: GPUs shared by parallel multirun jobs (``launcher=local_parallel``)."""

    # GPU indices; null: every visible GPU
    gpus: list[int] | None = None
    jobs_per_gpu: int = 1
    lock_dir: str | None = None


def check_schemas(cfg: DictConfig, problems: list[str]) -> None:
    """Check ``cfg`` against :class:`RunSchema`, adding what is wrong to ``problems``.

    A key path ``problems`` already names (the ``_target_`` signature checks ran first) is
    not named twice.

    Args:
        cfg: A composed config; ``hydra`` is skipped.
        problems: Problems found so far, each starting with its key path; extended in place.
    """
    named = {problem.split(":", 1)[0] for problem in problems}
    found: list[str] = []
    _check_node(cfg, RunSchema, "", found)
    problems.extend(p for p in found if p.split(":", 1)[0] not in named)


def _check_node(node: DictConfig, schema: type, prefix: str, problems: list[str]) -> None:
    hints = typing.get_type_hints(schema, include_extras=True)  # keeps the AtLeast bounds
    fields = {f.name: f for f in dataclasses.fields(schema)}
    for name, spec in fields.items():
        path = f"{prefix}{name}"
        if name not in node:
            required = spec.default is spec.default_factory is dataclasses.MISSING
            if required and not getattr(schema, "KEYS_MAY_BE_ABSENT", False):
                problems.append(f"{path}: missing, expected {_type_name(hints[name])}")
            continue
        if OmegaConf.is_missing(node, name):
            continue  # ??? is for the user to give; Hydra names it when it is read
        try:
            value = node[name]
        except OmegaConfBaseException:  # an interpolation that does not resolve (yet)
            continue
        _check_value(value, hints[name], path, problems)
    if not getattr(schema, "OTHER_KEYS_ALLOWED", False):
        for key in (str(k) for k in node if k not in fields):
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append(f"{prefix}{key}: unknown key{hint}")


def _check_value(value: Any, expected: Any, path: str, problems: list[str]) -> None:
    schema = _schema_of(expected)
    if schema is not None and isinstance(value, DictConfig):
        _check_node(value, schema, f"{path}.", problems)
        return
    try:
        if _matches(value, expected):
            minimum = _minimum(expected)
            if minimum is not None and isinstance(value, (int, float)) and value < minimum:
                problems.append(f"{path}: must be >= {minimum}, got {value!r}")
            return
        shown = (
            OmegaConf.to_container(value, resolve=True)
            if isinstance(value, (DictConfig, ListConfig))
            else value
        )
    except OmegaConfBaseException:  # an item is ??? or does not resolve (yet)
        return
    problems.append(
        f"{path}: expected {_type_name(expected)}, got {shown!r} ({type(shown).__name__})"
    )


def _schema_of(expected: Any) -> type | None:
    """The schema dataclass ``expected`` names (alone or with ``None``), if any."""
    members = typing.get_args(expected) if _is_union(expected) else (expected,)
    return next((m for m in members if dataclasses.is_dataclass(m)), None)


def _minimum(expected: Any) -> int | float | None:
    """The :class:`AtLeast` bound of ``expected`` (alone or in a union), if any."""
    members = typing.get_args(expected) if _is_union(expected) else (expected,)
    for member in members:
        if typing.get_origin(member) is Annotated:
            for extra in member.__metadata__:
                if isinstance(extra, AtLeast):
                    return extra.minimum
    return None


def _is_union(expected: Any) -> bool:
    return typing.get_origin(expected) in (Union, types.UnionType)


def _matches(value: Any, expected: Any) -> bool:
    """Whether ``value`` fits ``expected``, strictly: nothing is converted."""
    if isinstance(value, DictConfig) and "_target_" in value:
        return True  # an object built from its own node, checked against its signature
    if expected is Any:
        return True
    if typing.get_origin(expected) is Annotated:  # the type; its bound is checked apart
        return _matches(value, typing.get_args(expected)[0])
    if _is_union(expected):
        return any(_matches(value, member) for member in typing.get_args(expected))
    if expected is type(None):
        return value is None
    if typing.get_origin(expected) is Literal:
        # True == 1: a Literal[1] must not take true, nor Literal["auto"] | bool take 1
        return any(
            value == choice and type(value) is type(choice) for choice in typing.get_args(expected)
        )
    if expected is bool:
        return isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is str:
        return isinstance(value, str)
    if dataclasses.is_dataclass(expected):
        return isinstance(value, DictConfig)
    origin, args = typing.get_origin(expected), typing.get_args(expected)
    if origin is list:
        return isinstance(value, ListConfig) and all(_matches(item, args[0]) for item in value)
    if origin in (dict, Mapping):
        if not isinstance(value, DictConfig):
            return False
        # values typed Any are nodes of their own (encoders, a head): left unresolved
        return args[1] is Any or all(_matches(item, args[1]) for item in value.values())
    raise TypeError(f"config_schema: unsupported annotation {expected!r}")


def _type_name(expected: Any) -> str:
    if typing.get_origin(expected) is Annotated:
        base, *extras = typing.get_args(expected)
        bounds = [f" >= {e.minimum}" for e in extras if isinstance(e, AtLeast)]
        return _type_name(base) + "".join(bounds)
    if _is_union(expected):
        return " | ".join(_type_name(member) for member in typing.get_args(expected))
    if typing.get_origin(expected) is Literal:
        return " | ".join(repr(choice) for choice in typing.get_args(expected))
    if expected is type(None):
        return "None"
    if dataclasses.is_dataclass(expected):
        return "a mapping"
    origin, args = typing.get_origin(expected), typing.get_args(expected)
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in args)}]"
    return "Any" if expected is Any else expected.__name__
