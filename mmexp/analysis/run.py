"""Run the analyses of a checkpoint and keep their results in ``analysis.json``.

The test split is encoded once (:func:`~mmexp.analysis.data.encode_test_set`); each
component then reads the encoded set. The file is rewritten after every component, so an
interrupted analysis, run again on the same checkpoint with the same settings, runs only the
components it had not finished; a component whose settings changed runs again (each
component's settings are kept under ``configs``). A file of another checkpoint or analysis
set is kept as ``analysis.previous-<n>.json``. The results also go to the loggers as flat
``analysis/<component>/...`` numbers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from mmexp.analysis.data import AnalysisSet, encode_test_set
from mmexp.analysis.keys import ANALYSIS_FILE, PREFIX, flat_numbers, read_analysis
from mmexp.analysis.samples import RawSamples
from mmexp.robustness.evaluate import complete_test_split
from mmexp.tracking.run_record import write_json_atomic

log = logging.getLogger(__name__)

FORMAT = 1


def _set_aside(path: Path) -> Path:
    number = 1
    while (target := path.with_name(f"analysis.previous-{number}.json")).exists():
        number += 1
    path.rename(target)
    return target


def open_results(folder: Path, header: Mapping[str, Any]) -> dict[str, Any]:
    """The results to extend: the file's if it is of the same checkpoint and set, else new."""
    path = folder / ANALYSIS_FILE
    existing = read_analysis(path)
    fresh = {"format": FORMAT, **header, "components": {}, "configs": {}}
    if existing is None:
        if path.exists():
            _set_aside(path)
        return fresh
    if all(existing.get(key) == header.get(key) for key in header):
        done = sorted(existing.get("components", {}))
        log.info("analysis: resuming %s (done: %s)", path, done)
        return {
            **fresh,
            "components": dict(existing.get("components", {})),
            "configs": dict(existing.get("configs") or {}),
        }
    log.warning("analysis: %s is of another checkpoint or set; kept as %s", path, _set_aside(path))
    return fresh


def check_components(module: Any, components: Mapping[str, Any]) -> None:
    """Refuse, before anything is encoded, what a component would refuse on this module.

    A component may define ``check(modalities)``, raising on modalities it cannot analyse
    (too many for exact Shapley values, one where EMAP and PID need two).

    Raises:
        TypeError: A module that cannot be scored with modalities removed (contrastive).
        ValueError: What a component's ``check`` raises.
    """
    if not getattr(module, "handles_missing", False) or not hasattr(
        module, "predict_from_features"
    ):
        raise TypeError(
            "analysis scores modules that fuse modalities (classify, multilabel, regression); "
            f"{type(module).__name__} needs every modality of every sample"
        )
    modalities = list(module.encoders)
    for component in components.values():
        check = getattr(component, "check", None)
        if check is not None:
            check(modalities)


def run_analyses(
    module: Any,
    datamodule: Any,
    components: Mapping[str, Any],
    folder: Path,
    checkpoint: str,
    settings: Mapping[str, Any],
    loggers: Sequence[Any] = (),
    configs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Encode the test split once and run every component on it; write ``analysis.json``.

    Args:
        module: The trained module, its weights loaded.
        datamodule: Its data module (the preprocessing installed).
        components: ``{name: component}``; a component has ``run(AnalysisSet) -> dict``.
        folder: Where ``analysis.json`` goes (the run folder); components that write
            files put them in ``<folder>/analysis/<component>/``.
        checkpoint: The analysed checkpoint, recorded.
        settings: ``max_samples``, ``seed`` and ``batch_size`` of the analysis set.
        loggers: Loggers receiving the flat numbers.
        configs: ``{name: settings}`` of the components (JSON-ready), recorded; a finished
            component whose recorded settings differ runs again.

    Returns:
        The ``analysis.json`` payload.

    Raises:
        TypeError: A module that cannot be scored with modalities removed (contrastive).
        ValueError: A component that cannot analyse the module's modalities, named before
            the test split is encoded (see :func:`check_components`).
    """
    check_components(module, components)
    header = {
        "checkpoint": str(checkpoint),
        "modalities": list(module.encoders),
        "max_samples": settings.get("max_samples"),
        "seed": int(settings.get("seed", 0)),
    }
    payload = open_results(folder, header)
    wanted = {name: (configs or {}).get(name) for name in components}
    todo = [
        name
        for name in components
        if name not in payload["components"] or payload["configs"].get(name) != wanted[name]
    ]
    changed = [name for name in todo if name in payload["components"]]
    if changed:
        log.info("analysis: settings of %s changed; running again", changed)
    if not todo:
        log.info("analysis: every component is done in %s", folder / ANALYSIS_FILE)
        return payload
    analysis = _encoded(module, datamodule, settings)
    analysis.output_dir = folder
    payload["set"] = analysis.describe()
    for position, name in enumerate(todo, start=1):
        started = time.perf_counter()
        log.info("analysis %d/%d: %s", position, len(todo), name)
        result = components[name].run(analysis)
        result["seconds"] = round(time.perf_counter() - started, 3)
        payload["components"][name] = result
        payload["configs"][name] = wanted[name]
        folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(folder / ANALYSIS_FILE, payload)
        flat = flat_numbers(result, f"{PREFIX}/{name}")
        for logger in loggers:
            logger.log_metrics(flat)
            logger.save()
    return payload


def _encoded(module: Any, datamodule: Any, settings: Mapping[str, Any]) -> AnalysisSet:
    device = torch.device(settings.get("device") or "cpu")
    with complete_test_split(datamodule):
        datamodule.setup("test")
        loader = datamodule.test_dataloader()
        total = len(loader.dataset)
        analysis = encode_test_set(
            module,
            loader,
            total,
            settings.get("max_samples"),
            int(settings.get("seed", 0)),
            int(settings.get("batch_size", 256)),
            device,
        )
    analysis.samples = RawSamples.of_loader(loader, getattr(datamodule, "label_names", None))
    return analysis


def analysis_device(cfg: Any) -> str:
    """Where the analyses run: the GPU when the trainer uses one and it is there."""
    accelerator = str((cfg.get("trainer") or {}).get("accelerator", "cpu"))
    return "cuda" if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available() else "cpu"


def configured_components(cfg: Any) -> dict[str, Any]:
    """The components ``cfg.analysis`` selects, built; empty without analyses."""
    from hydra.utils import instantiate

    nodes = cfg.get("analysis") or {}
    return {str(name): instantiate(node) for name, node in nodes.items()}


def check_configured(cfg: Any, module: Any) -> None:
    """Refuse the analyses of ``cfg`` that would fail on ``module``, before any compute.

    ``mmexp-train`` calls it before training and ``mmexp-eval`` before testing.

    Raises:
        TypeError: See :func:`check_components`.
        ValueError: See :func:`check_components`.
    """
    components = configured_components(cfg)
    if components:
        check_components(module, components)


def run_configured(
    cfg: Any,
    module: Any,
    datamodule: Any,
    folder: Path,
    checkpoint: str,
    loggers: Sequence[Any] = (),
) -> dict[str, Any] | None:
    """Run the components of ``cfg.analysis`` with the settings of ``cfg.analysis_set``.

    Returns:
        What a run record keeps (the file and the components), ``None`` without analyses.
    """
    components = configured_components(cfg)
    if not components:
        return None
    configs = {
        str(name): OmegaConf.to_container(node, resolve=True) for name, node in cfg.analysis.items()
    }
    settings = dict(cfg.get("analysis_set") or {})
    settings.setdefault("device", analysis_device(cfg))
    chosen = settings.get("output_dir")
    target = Path(chosen) if chosen else folder
    payload = run_analyses(
        module, datamodule, components, target, checkpoint, settings, loggers, configs
    )
    return {"file": str(target / ANALYSIS_FILE), "components": sorted(payload["components"])}
