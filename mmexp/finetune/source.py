"""Pretraining checkpoints as finetuning sources: a local path or a W&B model artifact.

A checkpoint written by ``mmexp-train`` carries the resolved config of its run and its
provenance (run folder, W&B run, epoch). Finetuning reads both: the encoder configs, so the
towers are rebuilt exactly as pretrained, and the provenance, so the finetune run records
where its initial weights came from.
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from mmexp.lit.frozen_weights import FROZEN_WEIGHTS_KEY, restore_frozen_weights
from mmexp.utils.checkpoints import load_checkpoint

log = logging.getLogger(__name__)

KEY = "finetune.checkpoint"
#: Where a contrastive pretraining checkpoint keeps its loss's log logit scale
#: (:class:`~mmexp.losses.ClipLoss`, :class:`~mmexp.losses.SigLipLoss` as ``loss_fn``).
LOG_LOGIT_SCALE_KEY = "loss_fn.log_logit_scale"
WANDB_PREFIX = "wandb:"


@functools.cache
def download_wandb_artifact(name: str, cache_dir: Path) -> Path:
    """Fetch the W&B model artifact ``name`` and return the checkpoint file in it.

    Fetched once per process: resolving the run config and building the model read the same
    file, and the jobs of a sweep run in one process finetune from the same version of an
    alias (``:latest``, ``:best``) even if it moves meanwhile.

    Raises:
        RuntimeError: W&B cannot be reached or the artifact does not exist; the message says
            how to fetch it elsewhere and point at the file.
        FileNotFoundError: The artifact holds no (or several) ``.ckpt`` files.
    """
    import wandb

    folder = cache_dir / re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    try:
        artifact = wandb.Api().artifact(name, type="model")
        downloaded = Path(artifact.download(root=str(folder)))
    except Exception as error:  # wandb raises CommError, ValueError, HTTP errors...
        raise RuntimeError(
            f"{KEY}={WANDB_PREFIX}{name}: could not fetch the W&B artifact ({error}). On a "
            f"machine with access run `wandb artifact get {name} --root DIR`, then set "
            f"{KEY}=DIR/<file>.ckpt"
        ) from error
    files = sorted(downloaded.glob("*.ckpt"))
    if len(files) != 1:
        raise FileNotFoundError(
            f"{KEY}={WANDB_PREFIX}{name}: expected one .ckpt file in the artifact, found "
            f"{[f.name for f in files]} in {downloaded}"
        )
    return files[0]


def resolve_checkpoint(reference: str, cache_dir: Path) -> Path:
    """The local checkpoint file a ``finetune.checkpoint`` reference points at.

    Args:
        reference: A file path, or ``wandb:<entity>/<project>/<artifact>:<alias>``.
        cache_dir: Where W&B artifacts are downloaded.

    Its existence is checked when it is loaded (:func:`mmexp.utils.checkpoints.load_checkpoint`).
    """
    if reference.startswith(WANDB_PREFIX):
        return download_wandb_artifact(reference.removeprefix(WANDB_PREFIX), cache_dir)
    return Path(reference).expanduser()


@dataclass
class PretrainedCheckpoint:
    """A loaded pretraining checkpoint.

    Attributes:
        reference: ``finetune.checkpoint`` as given (path or W&B reference).
        path: The local file.
        state_dict: Its weights.
        config: The resolved config of the pretraining run.
        provenance: Run folder, task, objective, W&B run and progress of that run.
        left_out: The frozen tower weights the checkpoint does not hold, per modality
            (:mod:`mmexp.lit.frozen_weights`); they come from the towers built from its config.
    """

    reference: str
    path: Path
    state_dict: dict[str, torch.Tensor]
    config: dict[str, Any]
    provenance: dict[str, Any] = field(default_factory=dict)
    left_out: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, reference: str, cache_dir: Path, mmap: bool = False) -> PretrainedCheckpoint:
        """Resolve and read ``reference`` (``mmap``: map the weights, reading only the rest).

        Raises:
            FileNotFoundError: No file at the resolved path.
            ValueError: The file is not a checkpoint written by ``mmexp-train``.
        """
        path = resolve_checkpoint(reference, cache_dir)
        checkpoint = load_checkpoint(path, KEY, mmap)
        return cls(
            reference,
            path,
            checkpoint["state_dict"],
            checkpoint["mmexp_config"],
            checkpoint.get("mmexp_provenance", {}),
            checkpoint.get(FROZEN_WEIGHTS_KEY) or {},
        )

    @property
    def towers(self) -> list[str]:
        """Modalities whose encoder weights the checkpoint holds."""
        names = {key.split(".")[1] for key in self.state_dict if key.startswith("encoders.")}
        return sorted(names | set(self.left_out))

    def log_logit_scale(self) -> float | None:
        """The learned log logit scale of the pretraining loss (contrastive runs), if any."""
        value = self.state_dict.get(LOG_LOGIT_SCALE_KEY)
        return float(value.reshape(-1)[0]) if value is not None else None

    def adopt_encoders(self, cfg: DictConfig, modalities: list[str]) -> None:
        """Set ``model.encoders.<m>`` and ``model.width`` in ``cfg`` to the pretraining run's.

        The weights only fit the architecture they were trained with, so the towers are
        rebuilt from the pretraining config whatever ``cfg`` says.
        """
        model = self.config.get("model", {})
        with open_dict(cfg):
            cfg.model.width = model["width"]
            for modality in modalities:
                cfg.model.encoders[modality] = OmegaConf.create(model["encoders"][modality])
        log.info(
            "encoders %s and model.width=%s taken from the pretraining run %s",
            modalities,
            model["width"],
            self.provenance.get("run_dir") or self.path,
        )

    def load_encoder(self, modality: str, encoder: nn.Module) -> None:
        """Load the pretrained weights of one tower (all keys must match).

        Raises:
            RuntimeError: The weights do not fit the encoder; the message names the keys.
        """
        prefix = f"encoders.{modality}."
        state = {k: v for k, v in self.state_dict.items() if k.startswith(prefix)}
        built = {prefix + k: v for k, v in encoder.state_dict().items()}
        restore_frozen_weights(state, self.left_out, built, str(self.path), [modality])
        weights = {k[len(prefix) :]: v for k, v in state.items()}
        try:
            encoder.load_state_dict(weights, strict=True)
        except RuntimeError as error:
            raise RuntimeError(
                f"{KEY}: the {modality} tower of {self.path} does not fit "
                f"model.encoders.{modality}: {error}"
            ) from error

    def load_fusion(self, fusion: nn.Module) -> bool:
        """Load pretrained fusion weights (a classifier's or an ITM model's) if they fit.

        Returns:
            Whether weights were loaded; ``False`` when the checkpoint has no fusion of the
            same architecture (the fusion then starts from scratch).
        """
        expected = fusion.state_dict()
        for prefix in ("fusion.", "matching.fusion."):
            weights = {
                k[len(prefix) :]: v for k, v in self.state_dict.items() if k.startswith(prefix)
            }
            fits = (
                weights
                and set(weights) == set(expected)
                and all(weights[k].shape == expected[k].shape for k in expected)
            )
            if fits:
                fusion.load_state_dict(weights)
                return True
        return False
