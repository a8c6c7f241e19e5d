"""Fake analysis.json payloads and run folders, as analysis=[contribution,emap,pid] writes them."""

import json
from pathlib import Path

from tests.helpers.run_folders import write_run_folder

MODALITIES = ("image", "text")


def pid_entry(redundancy, unique, synergy, modalities=MODALITIES):
    """One decomposition: ``unique`` is ``(U of the first modality, U of the second)``."""
    entry = {
        "redundancy": redundancy,
        "synergy": synergy,
        "total": redundancy + sum(unique) + synergy,
        "status": "optimal",
        "solver": "CLARABEL",
        "gap": 1e-8,
    }
    entry.update({f"unique_{m}": u for m, u in zip(modalities, unique, strict=True)})
    return entry


def make_analysis(acc, shapley, gap, pid_model, pid_data, modalities=MODALITIES, seed=0):
    """An analysis.json with every component.

    Args:
        acc: The full model's accuracy.
        shapley: ``{modality: φ}``; the empty coalition is ``acc - sum(φ)``.
        gap: EMAP gap (the projection's accuracy is ``acc - gap``).
        pid_model: ``(R, (U1, U2), S)`` of the model's predictions; ``None`` leaves PID out.
        pid_data: The same, of the labels.
    """
    empty = acc - sum(shapley.values())
    components = {
        "contribution": {
            "metric": "acc",
            "subsets": {"+".join(sorted(modalities)): {"acc": acc, "loss": 1.0 - acc}},
            "empty": {"acc": empty, "loss": 1.1},
            "drop": dict.fromkeys(modalities, 0.1),
            "shapley": dict(shapley),
            "shapley_total": sum(shapley.values()),
            "full_minus_empty": acc - empty,
            "seconds": 0.1,
        },
        "emap": {
            "accuracy": acc,
            "emap_accuracy": acc - gap,
            "gap": gap,
            "agreement": 1.0 - gap,
            "n": 100,
            "seconds": 0.2,
        },
    }
    if pid_model is not None:
        components["pid"] = {
            "modalities": list(modalities),
            "model": pid_entry(*pid_model, modalities=modalities),
            "data": pid_entry(*pid_data, modalities=modalities),
            "seconds": 0.3,
        }
    return {
        "format": 1,
        "checkpoint": f"/runs/seed{seed}/checkpoints/last.ckpt",
        "modalities": list(modalities),
        "max_samples": 2000,
        "seed": 0,
        "components": components,
        "set": {"n": 100, "total": 100, "seed": 0},
    }


def write_run(
    root: Path,
    name,
    fusion,
    seed,
    payload=None,
    task="synergy",
    status="completed",
    modalities=MODALITIES,
):
    """A run folder: results.json + config.yaml (+ analysis.json when payload is given)."""
    acc = payload["components"]["emap"]["accuracy"] if payload else 0.5
    config = {"data": {"task": task, "modalities": list(modalities)}}
    folder = write_run_folder(root / name, fusion, seed, {"test/acc": acc}, config, status)
    if payload is not None:
        (folder / "analysis.json").write_text(json.dumps(payload))
    return folder
