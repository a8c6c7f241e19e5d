"""OmegaConf resolvers used by the configs; registered when the entry points are imported."""

from __future__ import annotations

import hashlib
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

MAX_JOB_DIR = 120


def job_dir_name(override_dirname: str) -> str:
    """A folder name for a multirun job that is stable across reruns and never too long.

    Short override lists are used as they are (readable); longer ones keep a readable prefix
    and a hash of the whole string, because file systems cap a name at 255 bytes.
    """
    name = override_dirname.replace("/", "_") or "default"
    if len(name) <= MAX_JOB_DIR:
        return name
    digest = hashlib.sha1(name.encode("utf-8")).hexdigest()[:12]
    return f"{name[: MAX_JOB_DIR - 13]}-{digest}"


def _choices() -> dict[str, Any]:
    return dict(HydraConfig.get().runtime.choices) if HydraConfig.initialized() else {}


def run_axes(root: DictConfig) -> dict[str, str]:
    """The axes a run is compared on: fusion, data, task, modalities with encoders, seed."""
    choices = _choices()
    axes: dict[str, str] = {}
    fusion = choices.get("fusion") or OmegaConf.select(root, "fusion._target_", default=None)
    if fusion:
        axes["fusion"] = str(fusion).rsplit(".", 1)[-1]
    data = choices.get("data")
    task = OmegaConf.select(root, "data.task", default=None)
    if data or task:
        axes["data"] = "/".join(str(part) for part in (data, task) if part)
    modalities = OmegaConf.select(root, "data.modalities", default=None) or []
    if modalities:
        axes["modalities"] = "+".join(
            f"{m}:{choices.get(f'model/encoders/{m}', 'default')}" for m in modalities
        )
    seed = OmegaConf.select(root, "seed", default=None)
    if seed is not None:
        axes["seed"] = str(seed)
    return axes


def run_name(*, _root_: DictConfig) -> str:
    """A readable run name from the config axes, e.g. ``concat shapes/redundant ... s42``."""
    axes = run_axes(_root_)
    seed = axes.pop("seed", None)
    return " ".join([*axes.values(), *([f"s{seed}"] if seed is not None else [])])


def run_tags(*, _root_: DictConfig) -> list[str]:
    """The user's ``tags`` plus one ``axis:value`` tag per config axis (filterable in W&B)."""
    user = list(OmegaConf.select(_root_, "tags", default=None) or [])
    return user + [f"{axis}:{value}" for axis, value in run_axes(_root_).items()]


def slurm_tasks_per_node(devices: Any) -> int:
    """SLURM tasks per node for ``trainer.devices``: one process per device.

    Raises:
        ValueError: ``devices`` is not a positive count (``-1`` or ``auto`` cannot size a
            SLURM allocation).
    """
    if isinstance(devices, int) and not isinstance(devices, bool) and devices > 0:
        return devices
    raise ValueError(
        f"launcher=slurm needs trainer.devices as a number of devices per node "
        f"(one SLURM task each), got {devices!r}: set trainer.devices=<n>"
    )


def slurm_gpus_per_node(accelerator: Any, devices: Any) -> int | None:
    """GPUs to request per node: the devices of a GPU trainer, none for CPU runs."""
    if str(accelerator) in ("gpu", "cuda"):
        return slurm_tasks_per_node(devices)
    return None


def required(key: str, expected: str) -> Any:
    """A value the user must give: a config's ``???`` that another config's value cannot fill.

    OmegaConf keeps an included config's value where a later one is ``???``, so a config that
    includes another (``eval.yaml`` includes ``train.yaml``) marks its mandatory keys with
    ``${mmexp_required:<key>,<what to give>}`` instead.

    Raises:
        ValueError: Always, naming the key and what it takes; read only when not given.
    """
    raise ValueError(f"{key} is required: give {expected}, e.g. {key}=<value>")


def given_or(key: str, default: Any, *, _root_: DictConfig) -> Any:
    """A top-level key's value, ``default`` where the config has no such key.

    For a config group that a study can point elsewhere (``init=open_clip`` reads the
    public model of ``experiment=pretrain_finetune_public``), and that keeps its own default
    otherwise. A study that sets the key to ``???`` makes it required where it is read.

    Raises:
        ValueError: ``key`` is ``???`` (see :func:`required`).
    """
    # ``key in config`` is false for a ``???`` value: ask for it first
    if OmegaConf.is_missing(_root_, key):
        required(key, "its value (this config reads it and no default fills it)")
    return _root_.get(key, default)


def affect_width(dataset: str, release: str | None, modality: str) -> int:
    """Features per step of ``modality`` in a CMU-MOSI / MOSEI release (``data.feature_dims``).

    One value per call: OmegaConf cannot select keys inside a resolver's mapping, and the
    encoders read ``data.feature_dims.<modality>``.
    """
    # Imported when a config reads it: the data set module loads numpy and torch.
    from mmexp.data.sets.multibench_affect import feature_widths

    return feature_widths(dataset, release)[modality]


def conditioning_fuses(conditioning: str) -> bool:
    """Whether a caption conditioning goes through the fusion strategy (``objective.uses_fusion``).

    So that ``objective.module.conditioning=fused`` alone builds the ``fusion=`` strategy.
    """
    from mmexp.lit.caption_memory import FUSED

    return conditioning in FUSED


def register_resolvers() -> None:
    """Register mmexp's resolvers (idempotent)."""
    OmegaConf.register_new_resolver("mmexp_job_dir", job_dir_name, replace=True)
    OmegaConf.register_new_resolver("mmexp_run_name", run_name, replace=True)
    OmegaConf.register_new_resolver("mmexp_run_tags", run_tags, replace=True)
    OmegaConf.register_new_resolver("mmexp_slurm_tasks", slurm_tasks_per_node, replace=True)
    OmegaConf.register_new_resolver("mmexp_slurm_gpus", slurm_gpus_per_node, replace=True)
    OmegaConf.register_new_resolver("mmexp_required", required, replace=True)
    OmegaConf.register_new_resolver("mmexp_given_or", given_or, replace=True)
    OmegaConf.register_new_resolver("mmexp_affect_width", affect_width, replace=True)
    OmegaConf.register_new_resolver("mmexp_conditioning_fuses", conditioning_fuses, replace=True)
