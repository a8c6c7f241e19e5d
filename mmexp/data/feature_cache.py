"""Feature cache: the outputs of frozen encoders, computed once and reused from disk.

An ablation over fusion strategies or seeds with frozen encoders recomputes the same
encoder outputs in every epoch of every run. With ``feature_cache.enabled=true`` each
frozen encoder's outputs (the pooled vector and, when the fusion reads them, the tokens)
are computed once per split, stored under ``feature_cache.dir`` and read back by every
later run whose key matches. The key hashes everything that changes them: the encoder's
config and frozen weights, its preprocessing, the data config (loader options aside), the
split's source file, and whether tokens are kept. Only what trains after the frozen part
(projections, fusion, head) runs during training, on batches that skip file decoding.

Refused, with the encoder named, when an encoder's frozen part trains or its
preprocessing augments (features would differ between epochs).
"""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file, save_file

from mmexp.data.cache_ranks import builds_entries, wait_for_entry
from mmexp.data.cached_datamodule import CachedDataModule, SplitFeatures
from mmexp.data.contract import STAGES
from mmexp.encoders.base import ModalityEncoder
from mmexp.utils.digest import hash_parts, tensor_bytes, tensors_digest
from mmexp.utils.rng import rng_untouched

if TYPE_CHECKING:  # the data layer does not import the LightningModules
    from mmexp.data.contract import MultimodalDataModule
    from mmexp.lit.common import MultimodalModule

log = logging.getLogger(__name__)

# Loader options (and data.missing) do not change what a sample is; they stay out of the key.
LOADER_KEYS = (
    "batch_size",
    "eval_batch_size",
    "num_workers",
    "pin_memory",
    "persistent_workers",
    "prefetch_factor",
    "check_files",
    # which samples lack a modality: marked on the cached batches, every sample is encoded
    "missing",
)
FORMAT_VERSION = 1


def weights_digest(module: torch.nn.Module) -> str:
    """Hash of a module's parameters and buffers (names, dtypes, shapes and values)."""
    return tensors_digest(module.state_dict())


class _StablePickler(pickle.Pickler):
    """Pickles tensors by value: default tensor pickles name their storage by address."""

    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, torch.Tensor):
            return ("tensor", str(obj.dtype), tuple(obj.shape), hash_parts(tensor_bytes(obj)))
        return None


def processor_digest(processor: Any) -> str:
    """Hash of an encoder's preprocessing (transform, tokenizer, feature extractor)."""
    buffer = io.BytesIO()
    _StablePickler(buffer, protocol=4).dump(processor)
    return hash_parts(buffer.getvalue())


def source_stamp(datamodule: MultimodalDataModule, stage: str) -> str:
    """Path, size and modification time of the file a split is read from, if any."""
    source_of = getattr(datamodule, "source_of", None)
    path = Path(source_of(stage)) if source_of else None
    if path is None or not path.exists():
        return ""
    stat = path.stat()
    return f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


def encoder_stamp(encoder: ModalityEncoder, encoder_cfg: Any) -> tuple[bytes, ...]:
    """What identifies an encoder's outputs on any split: config, frozen weights, preprocessing."""
    return (
        json.dumps(
            OmegaConf.to_container(encoder_cfg, resolve=True), sort_keys=True, default=str
        ).encode(),
        weights_digest(encoder.frozen_part()).encode(),
        processor_digest(encoder.processor(train=False)).encode(),
    )


def cache_key(
    stamp: tuple[bytes, ...],
    data_cfg: Any,
    datamodule: MultimodalDataModule,
    stage: str,
    tokens: bool,
) -> str:
    """The key of one encoder's features on one split (see the module docstring).

    Args:
        stamp: The encoder's :func:`encoder_stamp` (hashing the weights once per encoder).
        data_cfg: The ``data`` config; loader options stay out of the key.
        datamodule: Names the file each split is read from, if any.
        stage: ``train``, ``val`` or ``test``.
        tokens: Whether token sequences are stored.
    """
    data = {
        k: v
        for k, v in OmegaConf.to_container(data_cfg, resolve=True).items()
        if k not in LOADER_KEYS
    }
    return hash_parts(
        str(FORMAT_VERSION).encode(),
        *stamp,
        json.dumps(data, sort_keys=True, default=str).encode(),
        source_stamp(datamodule, stage).encode(),
        f"{stage}:tokens={tokens}".encode(),
    )


def check_cacheable(encoders: Mapping[str, ModalityEncoder]) -> None:
    """Refuse the cache when an encoder's outputs would change during training.

    Raises:
        ValueError: Naming each such encoder and why.
    """
    reasons = {name: encoder.cache_blocker() for name, encoder in encoders.items()}
    blocked = {name: why for name, why in reasons.items() if why}
    if blocked:
        details = "; ".join(f"model.encoders.{name}: {why}" for name, why in blocked.items())
        raise ValueError(f"feature_cache.enabled=true needs fixed encoder outputs, but {details}")


@torch.inference_mode()
def compute_features(
    encoder: ModalityEncoder, name: str, loader: Any, tokens: bool, device: torch.device
) -> SplitFeatures:
    """Run the frozen part of ``encoder`` over every batch; rows placed by sample index."""
    was_training = encoder.training
    encoder.eval().to(device)
    rows: dict[int, dict[str, torch.Tensor]] = {}
    labels: dict[int, torch.Tensor] = {}
    for batch in loader:
        inputs = _to_device(batch[name], device)
        features = encoder.frozen_features(inputs, tokens)
        for row, index in enumerate(batch["index"].tolist()):
            rows[index] = {
                key: (value[row].float() if value.is_floating_point() else value[row]).cpu()
                for key, value in features.items()
            }
            labels[index] = batch["label"][row]
    encoder.train(was_training)
    positions = sorted(rows)
    return SplitFeatures.from_rows(
        [rows[i] for i in positions],
        torch.stack([labels[i] for i in positions]),
        torch.tensor(positions, dtype=torch.long),
    )


def _to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, Mapping):
        return {key: _to_device(item, device) for key, item in value.items()}
    return value


class FeatureCache:
    """Build or read the cached features of every encoder and split.

    Args:
        directory: Where cache entries live (``<modality>-<key>.safetensors``).
        tokens: Keep token sequences: ``"auto"`` (when the fusion reads them), or a bool.
        device: Where the encoders run while the cache is built.
        wait_s: How long a process other than the first of its node waits for that one to
            write a missing entry (:mod:`mmexp.data.cache_ranks`).
    """

    def __init__(
        self,
        directory: str | Path,
        tokens: str | bool = "auto",
        device: str | torch.device = "cpu",
        wait_s: float = 3600.0,
    ) -> None:
        if tokens not in ("auto", True, False):
            raise ValueError(f"feature_cache.tokens must be auto, true or false, got {tokens!r}")
        if not wait_s > 0:
            raise ValueError(f"feature_cache.wait_s must be positive, got {wait_s!r}")
        self.directory = Path(directory)
        self.tokens = tokens
        self.device = torch.device(device)
        self.wait_s = float(wait_s)

    def keeps_tokens(self, module: MultimodalModule) -> bool:
        """Whether tokens are stored: ``feature_cache.tokens``, or what ``module`` reads."""
        if self.tokens != "auto":
            return bool(self.tokens)
        return module.reads_tokens

    def entry(self, name: str, key: str) -> Path:
        """File of one encoder's features on one split."""
        return self.directory / f"{name}-{key}.safetensors"

    def split_features(
        self,
        name: str,
        encoder: ModalityEncoder,
        key: str,
        datamodule: MultimodalDataModule,
        stage: str,
        tokens: bool,
    ) -> tuple[SplitFeatures, bool]:
        """Read a cache entry, or compute and write it; ``(features, was_cached)``."""
        path = self.entry(name, key)
        if path.is_file():
            try:
                return SplitFeatures.from_tensors(load_file(str(path))), True
            except Exception as error:  # a truncated or foreign file: rebuild it
                log.warning("feature cache: unreadable %s (%s); recomputing it", path, error)
        elif not builds_entries():
            # Under DDP the first process of the node encodes the split; the others read it.
            wait_for_entry(path, self.wait_s)
            return SplitFeatures.from_tensors(load_file(str(path))), True
        loader = {
            "train": datamodule.train_dataloader,
            "val": datamodule.val_dataloader,
            "test": datamodule.test_dataloader,
        }[stage]()
        features = compute_features(encoder, name, loader, tokens, self.device)
        self.directory.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.partial")
        # Written aside, then renamed: a run stopped mid-write leaves no entry that looks
        # complete, and concurrent sweep jobs or DDP ranks (each writes its own file) never
        # read or truncate a half-written one.
        save_file(features.tensors(), str(partial), metadata={"split": stage, "modality": name})
        partial.replace(path)
        return features, False

    def wrap(
        self, cfg: DictConfig, module: MultimodalModule, datamodule: MultimodalDataModule
    ) -> CachedDataModule:
        """A data module serving the cached features of every encoder of ``module``.

        Raises:
            ValueError: An encoder whose outputs cannot be cached.
        """
        # The encoders of the data's modalities: a prompt classifier's text tower reads no
        # batches (it embeds the class prompts).
        encoders: Mapping[str, ModalityEncoder] = {
            name: encoder
            for name, encoder in module.encoders.items()
            if name in cfg.data.modalities
        }
        check_cacheable(encoders)
        tokens = self.keeps_tokens(module)
        # Keys first: fast tokenizers keep truncation and padding settings from their first
        # use, which would change the pickled preprocessing once any loader has run.
        stamps = {
            name: encoder_stamp(encoder, cfg.model.encoders[name])
            for name, encoder in encoders.items()
        }
        keys = {
            (name, stage): cache_key(stamps[name], cfg.data, datamodule, stage, tokens)
            for name in encoders
            for stage in STAGES
        }
        datamodule.setup("fit")
        datamodule.setup("test")
        splits: dict[str, dict[str, SplitFeatures]] = {stage: {} for stage in STAGES}
        report = {}
        for (name, stage), key in keys.items():
            splits[stage][name], hit = self.split_features(
                name, encoders[name], key, datamodule, stage, tokens
            )
            report[f"{name}/{stage}"] = {"key": key, "reused": hit}
        log.info("feature cache in %s (tokens=%s): %s", self.directory, tokens, report)
        return CachedDataModule(datamodule, splits, report)


def with_feature_cache(
    cfg: DictConfig, module: MultimodalModule, datamodule: MultimodalDataModule
) -> MultimodalDataModule:
    """``datamodule``, or its cached-feature version when ``feature_cache.enabled``.

    The encoders run on the GPU while the cache is built when the trainer uses one.
    """
    options = cfg.get("feature_cache")
    if not options or not options.get("enabled"):
        return datamodule
    uncached = sorted(module.data_processors(train=True))
    if uncached:
        # the cache stores encoder outputs and labels only: a captioner's target captions
        # (tokenized by its decoder) would be missing from every cached batch
        raise ValueError(
            f"feature_cache.enabled: {type(module).__name__} reads {uncached} from the "
            "batches beside the encoder outputs, which the feature cache does not store; "
            "set feature_cache.enabled=false"
        )
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    use_gpu = torch.cuda.is_available() and accelerator in ("gpu", "cuda", "auto")
    cache = FeatureCache(
        options.dir,
        options.get("tokens", "auto"),
        "cuda" if use_gpu else "cpu",
        options.get("wait_s", 3600.0),
    )
    # Only the run that builds an entry runs its loaders here: the generators are left as
    # they were, so that run trains exactly like every later run reading the entry.
    with rng_untouched():
        return cache.wrap(cfg, module, datamodule)
