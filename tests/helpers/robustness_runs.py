"""Fake robustness.json payloads and run folders, as mmexp-eval robustness=<grid> writes them."""

import json
from pathlib import Path

from tests.helpers.run_folders import write_run_folder


def condition(kind, level, value, modality=None, perturbation=None, present=("image", "text")):
    metrics = {"acc": value, "loss": 1.0 - value}
    return {
        "kind": kind,
        "modality": modality,
        "perturbation": perturbation,
        "level": level,
        "present": list(present),
        "metrics": metrics,
    }


def make_payload(clean, subsets=None, missing=None, noise=None, mode="max", seed=0):
    """A robustness.json.

    Args:
        clean: acc on the clean test set.
        subsets: {modality: acc with only that modality}.
        missing: {modality: {rate: acc}} (rate 0 may be left out: then the clean value).
        noise: {(modality, perturbation): {level: acc}}.
    """
    conditions = {"clean": condition("clean", 0.0, clean)}
    for modality, value in (subsets or {}).items():
        conditions[f"subset:{modality}"] = condition("subset", None, value, present=[modality])
    for modality, points in (missing or {}).items():
        for level, value in points.items():
            conditions[f"missing:{modality}@{level}"] = condition(
                "missing_rate", level, value, modality
            )
    for (modality, perturbation), points in (noise or {}).items():
        for level, value in points.items():
            conditions[f"noise:{modality}/{perturbation}@{level}"] = condition(
                "noise", level, value, modality, perturbation
            )
    return {
        "format": 1,
        "checkpoint": f"/runs/seed{seed}/checkpoints/last.ckpt",
        "grid": "all",
        "metric": "acc",
        "mode": mode,
        "modalities": ["image", "text"],
        "seed": seed,
        "conditions": conditions,
        "summary": {},
    }


def write_run(root: Path, name, fusion, seed, payload=None, task="redundant", status="completed"):
    """A run folder: results.json + config.yaml (+ robustness.json when payload is given)."""
    clean = payload["conditions"]["clean"]["metrics"]["acc"] if payload else 0.5
    config = {"data": {"task": task, "modalities": ["image", "text"]}}
    folder = write_run_folder(root / name, fusion, seed, {"test/acc": clean}, config, status)
    if payload is not None:
        (folder / "robustness.json").write_text(json.dumps(payload))
    return folder
