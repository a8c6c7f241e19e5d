"""Log what ``mmexp-table`` wrote to a W&B run: the table, its charts and every file.

``--log-wandb ENTITY/PROJECT`` starts one run of job type ``table`` (online with an API
key, offline otherwise, as the training logger; ``WANDB_MODE`` wins), logs the table's CSV
as a ``wandb.Table``, each chart as an image, and all the written files (Markdown, LaTeX,
CSV, PNG, PDF) as an artifact, so the paper figure sits beside the runs it summarises.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmexp.tracking.wandb_logger import resolve_mode

IMAGE_SUFFIXES = (".png",)


def split_project(path: str) -> tuple[str | None, str]:
    """``entity/project`` (or ``project``) into its two parts.

    Raises:
        ValueError: More than one slash, or an empty part; the message names the option.
    """
    parts = path.split("/")
    if len(parts) > 2 or not all(parts):
        raise ValueError(f"--log-wandb {path!r}: give ENTITY/PROJECT or PROJECT")
    return (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])


def csv_table(path: Path) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a CSV file, as ``wandb.Table`` takes them."""
    with path.open(newline="") as handle:
        header, *rows = list(csv.reader(handle))
    return header, rows


def log_table_files(
    project: str,
    files: Sequence[Path],
    table_csv: Path,
    name: str,
    group: str | None = None,
    config: dict[str, Any] | None = None,
    folder: Path | None = None,
) -> str:
    """Log the files of one ``mmexp-table`` call to a new W&B run and finish it.

    Args:
        project: ``entity/project`` or ``project``.
        files: Every file written (all go into the artifact; PNGs are logged as images).
        table_csv: The table's per-cell CSV, logged as a ``wandb.Table``.
        name: Run and artifact name (the output prefix).
        group: W&B group, e.g. the study the table summarises.
        config: The command's options, stored as the run's config.
        folder: Where W&B keeps its local run folder.

    Returns:
        The local folder of the W&B run (``wandb sync`` uploads an offline one).
    """
    import wandb

    entity, project_name = split_project(project)
    run = wandb.init(
        project=project_name,
        entity=entity,
        job_type="table",
        name=name,
        group=group,
        config=config or {},
        dir=str(folder) if folder is not None else None,
        mode=resolve_mode("auto"),
        reinit="finish_previous",
    )
    try:
        header, rows = csv_table(table_csv)
        logged: dict[str, Any] = {"table": wandb.Table(columns=header, data=rows)}
        for path in files:
            if path.suffix in IMAGE_SUFFIXES:
                logged[f"plots/{path.stem}"] = wandb.Image(str(path))
        run.log(logged)
        artifact = wandb.Artifact(name=_artifact_name(name), type="table")
        for path in files:
            artifact.add_file(str(path))
        run.log_artifact(artifact)
        return str(Path(run.dir).parent)
    finally:
        run.finish()


def _artifact_name(name: str) -> str:
    # W&B artifact names take letters, digits, dashes, underscores and dots only
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in name) or "table"
