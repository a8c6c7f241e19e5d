"""WiSE-FT: weight-space ensembles of a zero-shot and a finetuned model, over a grid of alpha.

Wortsman et al., "Robust fine-tuning of zero-shot models", CVPR 2022 (reference code:
github.com/mlfoundations/wise-ft, ``src/wise_ft.py``): with ``theta_0`` the zero-shot model
(image tower of the contrastive checkpoint + the zero-shot classifier as its linear head,
:mod:`mmexp.zeroshot.head`) and ``theta_1`` the same architecture finetuned from it, every
``alpha`` of the grid is scored on the test split with
``theta_alpha = (1 - alpha) * theta_0 + alpha * theta_1``. As in the reference, every
floating-point entry of the state dict is interpolated; integer buffers (BatchNorm's
``num_batches_tracked``) keep the finetuned value.

The finetuned checkpoint names its zero-shot source (``finetune.checkpoint``); the head's
templates and class names are those of its ``init=zeroshot_head`` unless ``wiseft`` sets
them. Results: ``wiseft.json``, ``wiseft.csv`` (one row per alpha) and ``wiseft.png`` (the
metric against alpha) in the run folder; ``wiseft/<alpha>/<metric>`` in the record.
"""

from __future__ import annotations

import copy
import csv
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mmexp.finetune.source import PretrainedCheckpoint
from mmexp.tracking.run_record import to_number, write_json_atomic
from mmexp.zeroshot.head import ZeroShotHeadInit, head_linear, set_head, zeroshot_weights
from mmexp.zeroshot.prompts import check_templates, class_names_for

log = logging.getLogger(__name__)

WISEFT_FILE = "wiseft.json"
PREFIX = "wiseft"
KEY = "wiseft"


def interpolate(
    theta_0: Mapping[str, torch.Tensor], theta_1: Mapping[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """``(1 - alpha) * theta_0 + alpha * theta_1`` per floating entry; others from ``theta_1``.

    Raises:
        ValueError: The two state dicts have different keys or shapes.
    """
    if set(theta_0) != set(theta_1):
        raise ValueError(f"{KEY}: the zero-shot and finetuned models have different parameters")
    mixed = {}
    for key, finetuned in theta_1.items():
        zero = theta_0[key]
        if zero.shape != finetuned.shape:
            raise ValueError(
                f"{KEY}: {key} is {tuple(zero.shape)} zero-shot, {tuple(finetuned.shape)} finetuned"
            )
        floating = finetuned.is_floating_point()
        mixed[key] = (1 - alpha) * zero + alpha * finetuned if floating else finetuned.clone()
    return mixed


class WiseFT:
    """``wiseft=grid``: the test metrics of the weight-space ensembles over ``alphas``.

    Args:
        alphas: Mixing coefficients, each in ``[0, 1]`` (0: zero-shot, 1: finetuned).
        metric: The test metric plotted against alpha.
        templates: The zero-shot head's templates; ``None``: the finetuning run's
            (``callbacks.zeroshot_head.templates``).
        class_names: Its class names; ``None``: the run's, else the data's.
        batch_size: Prompts encoded at a time.

    Raises:
        ValueError: No alpha, or one outside ``[0, 1]``; a template without ``{}``.
    """

    def __init__(
        self,
        alphas: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
        metric: str = "acc",
        templates: Sequence[str] | None = None,
        class_names: str | Sequence[str] | None = None,
        batch_size: int = 256,
    ) -> None:
        self.alphas = [float(a) for a in alphas]
        if not self.alphas or any(not 0.0 <= a <= 1.0 for a in self.alphas):
            raise ValueError(f"{KEY}.alphas: values in [0, 1], got {list(alphas)}")
        self.metric = metric
        self.templates = None if templates is None else [str(t) for t in templates]
        if self.templates is not None:
            check_templates({"templates": self.templates}, KEY)
        self.class_names = class_names
        self.batch_size = batch_size

    def settings(self, run_cfg: Any) -> tuple[str, list[str], Any]:
        """The zero-shot source, templates and class names of the finetuned run.

        Raises:
            ValueError: The run was not finetuned from a checkpoint, or no templates.
        """
        source = (run_cfg.get("finetune") or {}).get("checkpoint")
        if not source:
            raise ValueError(
                f"{KEY}: the evaluated run has no finetune.checkpoint; WiSE-FT interpolates "
                "a model finetuned from a contrastive checkpoint (init=zeroshot_head)"
            )
        init = ((run_cfg.get("callbacks") or {}).get("zeroshot_head")) or {}
        templates = self.templates or init.get("templates")
        if not templates:
            raise ValueError(
                f"{KEY}.templates: the run was not finetuned with init=zeroshot_head; give the "
                "zero-shot head's templates"
            )
        templates = [str(t) for t in templates]
        check_templates({"templates": templates}, ZeroShotHeadInit.key)
        return str(source), templates, self.class_names or init.get("class_names")

    def check(self, module: Any, run_cfg: Any) -> None:
        """Refuse, before anything is read or encoded, a model WiSE-FT cannot interpolate.

        Raises:
            TypeError: See :func:`~mmexp.zeroshot.head.head_linear`.
            ValueError: See :meth:`settings`.
        """
        head_linear(module, KEY)
        self.settings(run_cfg)

    def run(
        self,
        run: Any,
        make_trainer: Callable[[], pl.Trainer],
        cache_dir: Path,
        device: str = "cpu",
    ) -> dict[str, Any]:
        """Build ``theta_0`` from the source, score every alpha; the ``wiseft.json`` payload."""
        module = run.module
        self.check(module, run.cfg)
        reference, templates, given_names = self.settings(run.cfg)
        names = class_names_for(list(run.datamodule.label_names), given_names, f"{KEY}.class_names")
        source = PretrainedCheckpoint.load(reference, cache_dir)
        theta_1 = {k: v.detach().clone() for k, v in module.state_dict().items()}
        zeroshot = copy.deepcopy(module)
        for modality in (m for m in source.towers if m in zeroshot.encoders):
            source.load_encoder(modality, zeroshot.encoders[modality])
        linear = head_linear(zeroshot, KEY)
        weights = zeroshot_weights(source, names, templates, self.batch_size)
        set_head(linear, weights.to(linear.weight), KEY)
        theta_0 = {k: v.detach().clone() for k, v in zeroshot.state_dict().items()}
        del zeroshot
        rows = []
        for alpha in self.alphas:
            module.load_state_dict(interpolate(theta_0, theta_1, alpha))
            trainer = make_trainer()
            trainer.test(module, datamodule=run.datamodule, verbose=False)
            metrics = {
                key.removeprefix("test/"): to_number(value)
                for key, value in trainer.callback_metrics.items()
                if key.startswith("test/")
            }
            log.info("wiseft: alpha %.3f: %s %s", alpha, self.metric, metrics.get(self.metric))
            rows.append({"alpha": alpha, "metrics": metrics})
        module.load_state_dict(theta_1)  # the module is the finetuned one again
        return {
            "zeroshot_from": str(source.path),
            "templates": templates,
            "class_names": names,
            "metric": self.metric,
            "rows": rows,
        }


def flat_metrics(payload: Mapping[str, Any]) -> dict[str, float]:
    """``wiseft/<alpha>/<metric>`` of every row."""
    return {
        f"{PREFIX}/{row['alpha']:g}/{metric}": float(value)
        for row in payload["rows"]
        for metric, value in row["metrics"].items()
        if value is not None
    }


def write_results(folder: Path, payload: Mapping[str, Any]) -> dict[str, str]:
    """``wiseft.json``, ``wiseft.csv`` and ``wiseft.png`` in ``folder``; their paths."""
    write_json_atomic(folder / WISEFT_FILE, payload)
    metrics = sorted({m for row in payload["rows"] for m in row["metrics"]})
    with (folder / "wiseft.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["alpha", *metrics])
        for row in payload["rows"]:
            writer.writerow([row["alpha"], *(row["metrics"].get(m, "") for m in metrics)])
    plot_alpha_curve(payload, folder / "wiseft.png")
    return {name: str(folder / name) for name in (WISEFT_FILE, "wiseft.csv", "wiseft.png")}


def plot_alpha_curve(payload: Mapping[str, Any], path: Path) -> None:
    """The metric against alpha, zero-shot (0) to finetuned (1), on matplotlib's Agg canvas."""
    metric = payload["metric"]
    points = [(r["alpha"], r["metrics"].get(metric)) for r in payload["rows"]]
    points = sorted((a, v) for a, v in points if v is not None)
    figure = Figure(figsize=(5.0, 3.4))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.plot([a for a, _ in points], [v for _, v in points], marker="o")
    axes.set_xlabel("alpha (0: zero-shot, 1: finetuned)")
    axes.set_ylabel(f"test {metric}")
    axes.set_title("WiSE-FT weight-space ensembles")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
