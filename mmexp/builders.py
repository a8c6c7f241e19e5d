"""Assemble a LightningModule from the composed config.

Widths flow from one piece to the next (every encoder projects to ``model.width``, the head
reads the fusion's ``out_dim``, the class count comes from the data), so the builder passes
them at instantiation instead of asking the user to keep them consistent by hand.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from mmexp.data.contract import MultimodalDataModule, missing_members
from mmexp.data.loaders import SplitLoaders
from mmexp.data.missing import MissingModalities
from mmexp.encoders.base import ModalityEncoder
from mmexp.encoders.freezing import count_parameters
from mmexp.encoders.processors import ModalityProcessor
from mmexp.fusion.base import FusionStrategy, can_judge_pairs, takes_modalities
from mmexp.fusion.cost import count_params, fusion_cost, match_params
from mmexp.lit.common import MultimodalModule
from mmexp.lit.presence import ModalityDropout
from mmexp.utils.instantiate import TRAINER_INJECTED, declared_injection


def module_class(cfg: DictConfig) -> type[MultimodalModule]:
    """The class of ``objective.module``.

    Raises:
        TypeError: It is not a :class:`~mmexp.lit.common.MultimodalModule`.
    """
    target = cfg.objective.module._target_
    cls = get_class(target)
    if not (isinstance(cls, type) and issubclass(cls, MultimodalModule)):
        raise TypeError(
            f"objective.module._target_={target} is not a "
            "mmexp.lit.common.MultimodalModule (which takes the encoders, run_config and "
            "save_frozen_weights the builder passes)"
        )
    return cls


def tower_modalities(cfg: DictConfig) -> list[str]:
    """The modalities whose ``model.encoders.<m>`` the module is built with.

    ``data.modalities``, unless the objective's module says otherwise
    (:meth:`~mmexp.lit.common.MultimodalModule.tower_modalities`: a prompt classifier reads
    images and has a text tower for its class prompts).

    Raises:
        ValueError: The module cannot take ``data.modalities``.
    """
    return module_class(cfg).tower_modalities(list(cfg.data.modalities))


def build_encoders(cfg: DictConfig) -> dict[str, ModalityEncoder]:
    """Instantiate ``model.encoders.<m>`` for every modality of :func:`tower_modalities`.

    Raises:
        KeyError: A modality has no encoder configured.
        TypeError: The configured encoder is for another modality.
    """
    width = int(cfg.model.width)
    encoders: dict[str, ModalityEncoder] = {}
    for modality in tower_modalities(cfg):
        node = cfg.model.encoders.get(modality)
        if node is None:
            configured = [m for m, v in cfg.model.encoders.items() if v is not None]
            raise KeyError(
                f"the model needs a {modality} encoder (data.modalities="
                f"{list(cfg.data.modalities)}) but model.encoders.{modality} is not set "
                f"(configured: {configured}); add model/encoders/{modality}=<name>"
            )
        encoder = instantiate(node, **injected("model.encoders.*", out_dim=width))
        if not isinstance(encoder, ModalityEncoder) or encoder.modality != modality:
            raise TypeError(
                f"model.encoders.{modality} built {type(encoder).__name__}, which is not a "
                f"{modality} encoder"
            )
        options = OmegaConf.to_container(node, resolve=True)
        if encoder.pretrained != type(encoder).loads_pretrained(options):  # type: ignore[arg-type]
            # The run config records which towers a finetuning protocol applies to from
            # loads_pretrained, before anything is built; the two must agree.
            raise TypeError(
                f"model.encoders.{modality}: {type(encoder).__name__}.pretrained is "
                f"{encoder.pretrained} but its loads_pretrained() says otherwise for this "
                "config; override loads_pretrained to match"
            )
        encoders[modality] = encoder
    return encoders


def _fusion_class(cfg: DictConfig) -> type[FusionStrategy]:
    target = cfg.fusion.get("_target_")
    try:
        cls = get_class(target)
    except Exception as error:  # hydra raises ImportError or ValueError variants
        raise ValueError(
            f"fusion._target_={target!r} cannot be imported ({error}); {available_fusions()}"
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, FusionStrategy)):
        raise TypeError(
            f"fusion._target_={target!r} is not a FusionStrategy; {available_fusions()}"
        )
    return cls


def _strategies() -> list[type[FusionStrategy]]:
    """The strategies :mod:`mmexp.fusion` exports (``__all__``) that have a config."""
    import mmexp.fusion

    exported = (getattr(mmexp.fusion, name) for name in mmexp.fusion.__all__)
    return [
        cls
        for cls in exported
        if isinstance(cls, type) and issubclass(cls, FusionStrategy) and cls.config_name
    ]


def fusion_choices(accepts: Callable[[type[FusionStrategy]], bool]) -> list[str]:
    """The ``fusion=`` choices of the strategies in :mod:`mmexp.fusion` that ``accepts``."""
    return sorted(cls.config_name for cls in _strategies() if accepts(cls))


def available_fusions() -> str:
    """The strategies of :mod:`mmexp.fusion`, each with its ``fusion=`` choice, for messages."""
    listed = ", ".join(
        f"mmexp.fusion.{cls.__name__} (fusion={cls.config_name})"
        for cls in sorted(_strategies(), key=lambda cls: cls.config_name)
    )
    return f"the strategies of mmexp.fusion are {listed}"


def check_fusion(cfg: DictConfig) -> None:
    """Fail before any data or model work when the fusion cannot take the modalities.

    Raises:
        ValueError: The strategy needs more modalities than ``data.modalities`` has, or is
            defined for fewer; the message lists the strategies that can take them.
    """
    cls = _fusion_class(cfg)
    fused = fused_modalities(cfg)
    count = len(fused)
    if takes_modalities(cls, count):
        return
    valid = fusion_choices(lambda candidate: takes_modalities(candidate, count))
    bound = (
        f"needs at least {cls.min_modalities}"
        if count < cls.min_modalities
        else f"is defined for at most {cls.max_modalities}"
    )
    fused_note = "" if fused == list(cfg.data.modalities) else f" (fused: {fused})"
    raise ValueError(
        f"fusion {cls.__name__} {bound} modalities but data.modalities="
        f"{list(cfg.data.modalities)}{fused_note}; with {count} "
        f"{'modality' if count == 1 else 'modalities'} choose one of fusion={valid}"
    )


def fused_modalities(cfg: DictConfig) -> list[str]:
    """The modalities the fusion strategy fuses: ``data.modalities``, or what the module says.

    (:meth:`~mmexp.lit.common.MultimodalModule.fused_modalities`: a captioner fuses the
    modalities it conditions on, not the text it generates.) Without an objective module
    (``mmexp-eval``'s own config), ``data.modalities``.
    """
    objective = cfg.get("objective")
    if objective is None or objective.get("module") is None:
        return list(cfg.data.modalities)
    return module_class(cfg).fused_modalities(list(cfg.data.modalities))


def check_matching_fusion(cfg: DictConfig) -> str | None:
    """Why the fusion cannot serve image-text matching, or ``None`` when it can (or is unused).

    Matching (``objective=itm``: ``objective.module.matching_weight > 0``) scores whether two
    inputs belong together; a strategy that keeps one modality, pools them additively or
    outputs class logits gives a head nothing to compare, and training would sit at the
    "no match" rate of 2/3 while looking plausible.
    """
    objective = cfg.get("objective")  # absent from mmexp-eval's own config
    module = (objective.get("module") if objective is not None else None) or {}
    if not module or not uses_fusion(cfg) or float(module.get("matching_weight") or 0) <= 0:
        return None
    cls = _fusion_class(cfg)
    if can_judge_pairs(cls):
        return None
    reason = (
        "it outputs class logits"
        if cls.produces_logits
        else "its output cannot tell whether the two inputs belong together (one modality "
        "only, or an additive pooling: with towers aligned by the contrastive loss, a "
        "pair's a + b looks like c + c)"
    )
    return (
        f"{cls.__name__} cannot judge image-text pairs: {reason}; choose one of "
        f"fusion={fusion_choices(can_judge_pairs)} (cross_attention and early_tokens are "
        "the published choices)"
    )


#: Arguments the builders pass at instantiation, per config path pattern (``*`` is one path
#: segment): the config check does not ask for them in the config. Each site passes its
#: arguments through :func:`injected`, which refuses one missing here.
INJECTED: dict[str, frozenset[str]] = {
    "model.encoders.*": frozenset({"out_dim"}),
    "model.head": frozenset({"in_dim", "out_dim"}),
    # num_classes: decision-level strategies only. (fusion.match_params writes the widths
    # into the node instead, where the config check sees them.)
    "fusion": frozenset({"modalities", "dim", "num_classes"}),
    "objective.module": frozenset(
        {
            "encoders",
            "fusion",
            "head",
            "matching_head",
            "num_classes",
            "label_names",
            "optimizer",
            "scheduler",
            "run_config",
            "save_frozen_weights",
            "modality_dropout",
            "train_metrics_every_n_steps",
            "unimodal_losses",
        }
    ),
    "trainer": TRAINER_INJECTED,
}


def injected(path: str, **arguments: Any) -> dict[str, Any]:
    """The ``arguments`` a builder passes to the node at ``path``, checked against INJECTED.

    ``path`` is the pattern of :data:`INJECTED` (``model.encoders.*``, ``fusion``, ...).
    """
    return declared_injection(INJECTED[path], path, arguments)


#: Keys the builders remove from a node before instantiating it.
CONSUMED: dict[str, frozenset[str]] = {
    "fusion": frozenset({"match_params"}),
    # the caption vocabulary a data set names, read by objective=caption's decoder
    "data": frozenset({"missing", "caption_tokenizer"}),
    # where zeroshot.json goes, read by mmexp-eval (mmexp.zeroshot.run)
    "zeroshot": frozenset({"output_dir"}),
    # where wiseft.json goes, read by mmexp-eval (mmexp.eval)
    "wiseft": frozenset({"output_dir"}),
}

#: How far under its budget a matched row may end (``fusion.match_params``).
MATCH_TOLERANCE = 0.05
#: Largest width ``fusion.match_params`` tries.
MAX_MATCHED_WIDTH = 1 << 16


def build_fusion_and_head(
    cfg: DictConfig, num_classes: int, head_outputs: int | None = None
) -> tuple[FusionStrategy, nn.Module]:
    """Instantiate ``fusion`` over the modalities at ``model.width`` and the head after it.

    Decision-level strategies also get ``num_classes`` and an identity head. With
    ``fusion.match_params`` set to a parameter budget, the width that scales (see
    :func:`budget_scaling`) is the largest whose fusion + head parameters fit the budget, so
    that every row of an ablation spends the same parameters on what differs between rows.

    Args:
        cfg: The composed run config.
        num_classes: Outputs of decision-level strategies and, by default, of the head.
        head_outputs: Outputs of the head when they differ from ``num_classes`` (the two
            match / no-match scores of image-text matching).

    Returns:
        ``(fusion, head)``.
    """
    check_fusion(cfg)
    cls = _fusion_class(cfg)
    fusion_node: dict[str, Any] = OmegaConf.to_container(cfg.fusion, resolve=True)  # type: ignore[assignment]
    head_node: dict[str, Any] = OmegaConf.to_container(cfg.model.head, resolve=True)  # type: ignore[assignment]
    budget = fusion_node.pop("match_params", None)
    options: dict[str, Any] = {"modalities": fused_modalities(cfg), "dim": int(cfg.model.width)}
    if cls.produces_logits:
        options["num_classes"] = num_classes

    def make(fusion_config: dict[str, Any], head_config: dict[str, Any]) -> nn.ModuleList:
        fusion = instantiate(fusion_config, **injected("fusion", **options))
        if not isinstance(fusion, FusionStrategy):
            raise TypeError(f"fusion._target_ built {type(fusion).__name__}, not a FusionStrategy")
        head = (
            nn.Identity()
            if fusion.produces_logits
            else instantiate(
                head_config,
                **injected(
                    "model.head", in_dim=fusion.out_dim, out_dim=head_outputs or num_classes
                ),
            )
        )
        return nn.ModuleList([fusion, head])

    if budget is not None:
        at_width = budget_scaling(cls, fusion_node, head_node)
        width = match_params(lambda w: make(*at_width(w)), int(budget), high=MAX_MATCHED_WIDTH)
        fusion_node, head_node = at_width(width)
    fusion, head = make(fusion_node, head_node)
    if budget is not None:
        total = count_params(fusion) + count_params(head)
        if total < (1 - MATCH_TOLERANCE) * int(budget):
            raise ValueError(
                f"fusion.match_params={budget}: {cls.__name__} reaches only {total} "
                f"parameters (fusion + head) at width {fusion_node.get('hidden_dim', width)}, "
                "more than "
                f"{MATCH_TOLERANCE:.0%} under the budget (the widest tried is "
                f"{MAX_MATCHED_WIDTH}); choose another budget"
            )
    return fusion, head  # type: ignore[return-value]


def budget_scaling(
    cls: type[FusionStrategy], fusion_node: dict[str, Any], head_node: dict[str, Any]
) -> Callable[[int], tuple[dict[str, Any], dict[str, Any]]]:
    """Which width ``fusion.match_params`` scales: the fusion's, else the head's.

    A strategy with an internal width (``hidden_dim``) scales it with the head fixed, in
    multiples of its ``width_multiple_of`` argument where it has one (MISA's heads);
    decision-level strategies scale their per-modality classifiers (``hidden_dims``); those
    without a width of their own (concat, sum, product, unimodal, mi_vector, mi_scalar,
    nl_gate) scale the hidden layers of the shared head, which is where the rest of their
    capacity is.

    Returns:
        ``width -> (fusion config, head config)`` at that width.

    Raises:
        ValueError: Nothing to scale (no width in the fusion, and a head without
            ``hidden_dims``).
    """
    accepted = inspect.signature(cls).parameters
    if "hidden_dim" in accepted:
        step = 1
        if cls.width_multiple_of is not None:
            default = accepted[cls.width_multiple_of].default
            step = int(fusion_node.get(cls.width_multiple_of) or default)
        return lambda width: ({**fusion_node, "hidden_dim": width * step}, head_node)
    if "hidden_dims" in accepted:
        return lambda width: (_widths(fusion_node, width), head_node)
    head_class = get_class(head_node["_target_"])
    if cls.produces_logits or "hidden_dims" not in inspect.signature(head_class).parameters:
        raise ValueError(
            f"fusion.match_params: neither {cls.__name__} nor the head "
            f"{head_node['_target_']} has a width to scale; match capacity through "
            "model.width instead"
        )
    return lambda width: (fusion_node, _widths(head_node, width))


def _widths(node: dict[str, Any], width: int) -> dict[str, Any]:
    """``node`` with every hidden layer ``width`` wide (one layer if it had none)."""
    return {**node, "hidden_dims": [width] * max(1, len(node.get("hidden_dims") or []))}


def uses_fusion(cfg: DictConfig) -> bool:
    """Whether a fusion strategy and head are built for the objective (``objective.uses_fusion``).

    The one switch: contrastive pretraining takes a fusion only for image-text matching, and
    its objective says whether it is built.
    """
    return bool(cfg.objective.get("uses_fusion", True))


def build_module(
    cfg: DictConfig, num_classes: int, label_names: list[str] | None = None
) -> MultimodalModule:
    """Build the parts the objective's module takes and inject them into it.

    Encoders, optimizer and schedule are always built; the fusion strategy when the
    objective uses one (``objective.uses_fusion``), the head, class count and class names
    when the module's signature asks for them.

    Args:
        cfg: The composed run config.
        num_classes: Number of classes of the data set (``objective.num_outputs`` wins).
        label_names: The data set's class names, in label order.

    Returns:
        The LightningModule of ``objective.module``, carrying the resolved config so that
        its checkpoints can be evaluated on their own.
    """
    cls = module_class(cfg)
    accepted = inspect.signature(cls).parameters
    # A regression predicts objective.num_outputs values (one score) whatever the data's
    # class count: the head and decision-level fusion are built that wide.
    num_classes = int(cfg.objective.get("num_outputs") or num_classes)
    parts: dict[str, Any] = {
        "encoders": build_encoders(cfg),
        "optimizer": instantiate(cfg.model.optimizer),
        "scheduler": instantiate(cfg.model.scheduler) if cfg.model.get("scheduler") else None,
    }
    if uses_fusion(cfg):
        if "fusion" not in accepted:
            raise TypeError(
                f"objective.uses_fusion is true but {cfg.objective.module._target_} takes no "
                "fusion argument; set objective.uses_fusion=false"
            )
        # A module with a matching head (image-text matching) scores pairs: two outputs.
        matching = "matching_head" in accepted
        fusion, head = build_fusion_and_head(cfg, num_classes, 2 if matching else None)
        parts["fusion"] = fusion
        if matching:
            parts["matching_head"] = head
        elif "head" in accepted:
            parts["head"] = head
    if "num_classes" in accepted:
        parts["num_classes"] = num_classes
    if "label_names" in accepted:
        parts["label_names"] = list(label_names or [])
    # Stored in every checkpoint so that a checkpoint alone rebuilds the model (mmexp-eval);
    # read by the checkpoint hooks (mmexp.lit.frozen_weights).
    parts["run_config"] = OmegaConf.to_container(cfg, resolve=True)
    parts["save_frozen_weights"] = cfg.model.get("save_frozen_weights", True)
    if "train_metrics_every_n_steps" in accepted:
        parts["train_metrics_every_n_steps"] = cfg.model.get("train_metrics_every_n_steps", 50)
    dropout = cfg.model.get("modality_dropout")
    if dropout:
        refuse_missing(cls, "model.modality_dropout")
        parts["modality_dropout"] = ModalityDropout(
            OmegaConf.to_container(dropout) if isinstance(dropout, DictConfig) else dropout
        )
        parts["modality_dropout"].check(list(cfg.data.modalities))
    unimodal = cfg.model.get("unimodal_losses")
    if unimodal:
        if "unimodal_losses" not in accepted:
            raise TypeError(
                f"model.unimodal_losses (training=unimodal_aux|gradient_blending) needs a "
                f"classifier with per-modality heads; {cfg.objective.module._target_} takes none"
            )
        parts["unimodal_losses"] = instantiate(unimodal)
    # The parts go to the constructor as they are: merged into the node, the run config's
    # own _target_ entries would be instantiated too.
    factory = instantiate(cfg.objective.module, _partial_=True)
    try:
        return factory(**injected("objective.module", **parts))
    except (ValueError, TypeError) as error:
        # The module's own validation error (wrong modalities, fusion, ...), under its key.
        raise type(error)(f"objective.module: {error}") from error


def build_data_and_model(cfg: DictConfig) -> tuple[MultimodalDataModule, MultimodalModule]:
    """Instantiate the data module, build the model for its classes, wire the processors.

    The data are prepared first because the class count and label names come from them;
    the encoders' own preprocessing is then installed in the data module.

    Raises:
        TypeError: The data module lacks members of
            :class:`~mmexp.data.contract.MultimodalDataModule`.
    """
    if uses_fusion(cfg):
        check_fusion(cfg)
    missing = build_missing(cfg)
    datamodule = instantiate_datamodule(cfg)
    if missing is not None:
        install_missing(datamodule, missing, cfg)
    datamodule.prepare_data()
    lacking = missing_members(datamodule)
    if lacking:
        raise TypeError(
            f"data._target_={cfg.data._target_} built {type(datamodule).__name__}, which "
            f"lacks {lacking} of mmexp.data.contract.MultimodalDataModule"
        )
    # Class names only for a module that names its classes (some data sets compute them).
    names = "label_names" in inspect.signature(module_class(cfg)).parameters
    label_names = list(datamodule.label_names) if names else None
    module = build_module(cfg, datamodule.num_classes, label_names)
    datamodule.set_processors(*encoder_processors(module, list(cfg.data.modalities)))
    return datamodule, module


def instantiate_datamodule(cfg: DictConfig, **options: Any) -> Any:
    """Instantiate ``data`` without the keys the builders consume (``data.missing``)."""
    node: dict[str, Any] = OmegaConf.to_container(cfg.data, resolve=True)  # type: ignore[assignment]
    for key in CONSUMED["data"]:
        node.pop(key, None)
    return instantiate(node, **options)


def refuse_missing(module_class: type, key: str) -> None:
    """Raise unless the objective's module predicts from any subset of the modalities.

    Raises:
        ValueError: The module needs every modality of every sample (contrastive pairs).
    """
    if not getattr(module_class, "handles_missing", False):
        raise ValueError(
            f"{key}: {module_class.__name__} needs every modality of every sample (it "
            "scores pairs of them); missing modalities apply to the objectives that fuse "
            "them (classify, multilabel, regression)"
        )


def build_missing(cfg: DictConfig) -> MissingModalities | None:
    """The per-sample missing modalities of ``data.missing``, checked; ``None`` when unset.

    Raises:
        ValueError: Rates for modalities the data does not load, or assignments that could
            leave a sample with no modality, or an objective that needs every modality.
    """
    node = cfg.data.get("missing")
    if not node:
        return None
    missing = instantiate(node)
    if not isinstance(missing, MissingModalities):
        raise TypeError(f"data.missing built {type(missing).__name__}, not a MissingModalities")
    missing.check(list(cfg.data.modalities))
    if any(missing.rates.values()):
        refuse_missing(module_class(cfg), "data.missing")
    return missing


def install_missing(datamodule: Any, missing: MissingModalities, cfg: DictConfig) -> None:
    """Give the data module its missing assignment (its loaders mark the batches)."""
    if not isinstance(datamodule, SplitLoaders):
        raise TypeError(
            f"data.missing: data._target_={cfg.data._target_} is not a "
            "mmexp.data.loaders.SplitLoaders, whose loaders mark the missing modalities; "
            "set batch['present'] in its own batches instead"
        )
    datamodule.missing = missing


def encoder_processors(
    module: MultimodalModule, modalities: list[str] | None = None
) -> tuple[dict[str, ModalityProcessor], dict[str, ModalityProcessor]]:
    """The training and evaluation preprocessing of every encoder of ``module``.

    Args:
        module: The built module.
        modalities: Only these encoders' (those of the data; a prompt classifier's text
            tower reads no batches); ``None``: all.
    """
    encoders: Any = {
        name: encoder
        for name, encoder in module.encoders.items()
        if modalities is None or name in modalities
    }
    train = {name: encoder.processor(train=True) for name, encoder in encoders.items()}
    evaluation = {name: encoder.processor(train=False) for name, encoder in encoders.items()}
    # what the encoders do not read: a captioner's targets
    train.update(module.data_processors(train=True))
    evaluation.update(module.data_processors(train=False))
    return train, evaluation


def measure_fusion_cost(
    module: MultimodalModule, datamodule: MultimodalDataModule
) -> dict[str, int] | None:
    """Parameters of fusion and head, and forward FLOPs per sample of the fusion.

    Token counts come from encoding a few validation samples, so the figure matches what the
    strategy costs on this data set (token-level strategies scale with sequence length).
    ``params`` and ``flops_per_sample`` are the fusion's; ``head_params`` the head's; and
    ``trainable_params`` what of both trains (what differs between the rows of an ablation,
    the figure :func:`build_fusion_and_head` budgets with ``fusion.match_params``).
    For image-text matching these are its fusion and match head; ``None`` for a module
    without a fusion strategy (contrastive pretraining alone).
    """
    fusion: Any = getattr(module, "fusion", None)
    head: nn.Module = getattr(module, "head", None) or nn.Identity()
    matching: Any = getattr(module, "matching", None)  # image-text matching's fusion + head
    if fusion is None and matching is not None:
        fusion, head = matching.fusion, matching.head
    if fusion is None:
        return None
    datamodule.setup("validate")
    loader = datamodule.val_dataloader()
    batch = next(iter(loader))
    encoders: Any = module.encoders
    # In eval mode: a training-mode pass would move BatchNorm statistics towards this
    # validation batch before training starts.
    was_training = encoders.training
    encoders.eval()
    try:
        with torch.no_grad():
            lengths = {
                name: int(encoder(batch[name]).tokens.shape[1])
                for name, encoder in encoders.items()
            }
    finally:
        encoders.train(was_training)
    cost = fusion_cost(fusion, lengths, fusion.dim)
    cost["head_params"] = count_params(head)
    cost["trainable_params"] = sum(count_parameters(part)[0] for part in (fusion, head))
    return cost
