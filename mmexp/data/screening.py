"""Find bad samples before training: missing files, empty text, unknown labels.

``data.on_bad_sample`` decides what happens to them: ``raise`` (the default) stops at setup
with every problem listed by file and row; ``skip`` drops them, logs how many and which, and
keeps the list so the run record can say what was left out. Nothing is dropped silently.
Files that exist but cannot be decoded are only found when read; see
:class:`~mmexp.data.dataset.ManifestDataset`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mmexp.data.dataset import FILE_MODALITIES
from mmexp.data.manifest import Record, label_set, row_name

log = logging.getLogger(__name__)

POLICIES = ("raise", "skip")
# How many problems an error message lists before summarising the rest.
SHOWN = 10


@dataclass(frozen=True)
class BadSample:
    """One rejected row: where it is and why."""

    source: str
    stage: str
    row: str
    reason: str

    def __str__(self) -> str:
        return f"{self.source}: {self.stage} {self.row}: {self.reason}"


def problem(
    row: Record,
    columns: Mapping[str, str],
    label_column: str,
    known_labels: set[str] | None,
    root: Path,
    check_files: bool,
    multilabel: bool = False,
) -> str | None:
    """Why ``row`` cannot be used, or ``None`` when it can.

    ``multilabel``: the label is a set of labels, a list or (in CSV) an ``a|b`` string, whose
    every member must be known.
    """
    for modality, column in columns.items():
        value = row.get(column)
        if value is None or (isinstance(value, str) and not value.strip()):
            return f"empty {modality} (column {column!r})"
        is_path = isinstance(value, (str, Path))  # not bytes held inline (HF data sets)
        if (
            check_files
            and modality in FILE_MODALITIES
            and is_path
            and not (root / str(value)).is_file()
        ):
            return f"missing {modality} file {root / str(value)}"
    label = row.get(label_column)
    if isinstance(label, (list, tuple)):  # a multi-label row: every member must be known
        unknown = [v for v in label if known_labels is not None and str(v) not in known_labels]
        return f"unknown label(s) {unknown}" if unknown else None
    if label is None or label == "":
        return f"no label (column {label_column!r})"
    if multilabel:
        unknown = [
            v for v in label_set(label) if known_labels is not None and v not in known_labels
        ]
        return f"unknown label(s) {unknown}" if unknown else None
    if known_labels is not None and str(label) not in known_labels:
        return f"unknown label {label!r}"
    return None


def screen_rows(
    rows: Sequence[Record],
    stage: str,
    policy: str,
    *,
    columns: Mapping[str, str],
    label_column: str,
    known_labels: set[str] | None,
    root: Path,
    check_files: bool,
    source: Path,
    multilabel: bool = False,
    label_hint: str | None = None,
) -> tuple[list[int], list[BadSample]]:
    """Split ``rows`` into usable rows and bad samples, applying ``policy``.

    Args:
        rows: Raw rows of one split.
        stage: ``train``, ``val`` or ``test``, named in messages.
        policy: ``raise`` or ``skip``.
        columns: Column of each modality.
        label_column: Column of the label.
        known_labels: Valid label values (names and indices as strings); ``None`` accepts any.
        root: Folder that relative file paths start from.
        check_files: Check that referenced files exist.
        source: The manifest (or annotation) file, named in messages.
        multilabel: Each label is a set of labels (see :func:`problem`).
        label_hint: Added to the error when a label is unknown: which labels are allowed
            and where they come from.

    Returns:
        ``(positions of the kept rows, bad samples)``; with ``policy="raise"`` the second is
        always empty.

    Raises:
        ValueError: Bad samples under ``policy="raise"`` (all of them counted, the first
            few listed), or an unknown policy.
    """
    if policy not in POLICIES:
        raise ValueError(f"data.on_bad_sample must be one of {POLICIES}, got {policy!r}")
    kept: list[int] = []
    bad: list[BadSample] = []
    for position, row in enumerate(rows):
        reason = problem(row, columns, label_column, known_labels, root, check_files, multilabel)
        if reason is None:
            kept.append(position)
        else:
            bad.append(BadSample(str(source), stage, row_name(row, position), reason))
    if bad and policy == "raise":
        listed = "\n  ".join(str(b) for b in bad[:SHOWN])
        more = f"\n  ... and {len(bad) - SHOWN} more" if len(bad) > SHOWN else ""
        unknown = label_hint and any(b.reason.startswith("unknown label") for b in bad)
        hint = f"\n{label_hint}" if unknown else ""
        raise ValueError(
            f"{len(bad)} bad sample(s) in the {stage} split (set "
            f"data.on_bad_sample=skip to leave them out):\n  {listed}{more}{hint}"
        )
    if bad:
        log.warning(
            "data.on_bad_sample=skip: left out %d of %d %s samples, e.g. %s",
            len(bad),
            len(rows),
            stage,
            bad[0],
        )
    return kept, bad


def skipped_report(bad: Sequence[BadSample]) -> dict[str, Any]:
    """Counts per split and the list of skipped samples, for the run record."""
    counts: dict[str, int] = {}
    for sample in bad:
        counts[sample.stage] = counts.get(sample.stage, 0) + 1
    return {"counts": counts, "samples": [asdict(sample) for sample in bad]}
