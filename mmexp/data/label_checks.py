"""Label values that look wrong: in one row of the whole data set, or never in training.

When the classes come from the data, every distinct label value becomes a class, so a
one-off typo (``unheard_of``) silently adds a class that nothing learns. Two checks flag
such values at setup, over the rows of all splits:

* ``one_row``: the value is in exactly one row of all splits together. No model learns a
  class from one example, and a lone value is what a typo looks like.
* ``not_in_train``: the value is in validation or test rows but in no training row, so
  those rows count against the model whatever it learns (a class seen in test only, say).
  Splits are judged as the data module forms them: a validation split carved from the
  training rows (Food-101) is its own split, and a class whose every training row went to
  validation is untrained.

A value found only in the training split is not flagged: a small validation or test split
legitimately misses a rare class, which makes no metric wrong; a typo in a single training
row is caught by ``one_row``. So a small but sound data set, each class in two rows or more
and in training, is not flagged however few rows its evaluation splits have. Multi-label
rows are checked per member of each row's label set.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mmexp.data.manifest import label_set

PROBLEMS = {
    "one_row": "is in one row only",
    "not_in_train": "is in no training row",
}
# Rows named per flagged value in the report (the counts cover all of them).
SHOWN_ROWS = 5
# Flagged values named in the warning (the report has all of them).
SHOWN_VALUES = 10


def row_labels(value: Any, multilabel: bool) -> list[str]:
    """The labels of one row as text: one, the members of a set, or none when empty."""
    if value is None or value == "":
        return []
    if multilabel or isinstance(value, (list, tuple)):
        return label_set(value)
    return [str(value)]


def suspicious_labels(
    labels: Mapping[str, Sequence[Any]],
    multilabel: bool,
    classes: Mapping[str, str] | None,
    train_stage: str = "train",
) -> dict[str, dict[str, Any]]:
    """The label values that look wrong, with their rows per split and where the first are.

    Args:
        labels: The label of each row, per stage, in row order.
        multilabel: Each label is a set of labels.
        classes: The class each allowed label value names (values outside it are unknown
            labels, which screening reports, and are not counted here); ``None``: every
            value is a class of its own.
        train_stage: The stage the model is trained on.

    Returns:
        ``{class: {"problems": [...], "rows": {stage: count}, "positions": [(stage,
        position), ...]}}`` for the flagged classes, in order of first appearance; at most
        :data:`SHOWN_ROWS` positions each. Empty when nothing looks wrong.
    """
    counts: dict[str, dict[str, int]] = {}
    positions: dict[str, list[tuple[str, int]]] = {}
    for stage, values in labels.items():
        for position, value in enumerate(values):
            for label in row_labels(value, multilabel):
                name = label if classes is None else classes.get(label)
                if name is None:
                    continue
                per_stage = counts.setdefault(name, dict.fromkeys(labels, 0))
                per_stage[stage] += 1
                places = positions.setdefault(name, [])
                if len(places) < SHOWN_ROWS:
                    places.append((stage, position))
    report = {}
    for name, per_stage in counts.items():
        problems = []
        if sum(per_stage.values()) == 1:
            problems.append("one_row")
        if train_stage in per_stage and per_stage[train_stage] == 0:
            problems.append("not_in_train")
        if problems:
            report[name] = {"problems": problems, "rows": per_stage, "positions": positions[name]}
    return report


def describe(report: Mapping[str, Mapping[str, Any]]) -> str:
    """One line per flagged value for the warning: what is wrong and where (first rows)."""
    lines = []
    for name, entry in list(report.items())[:SHOWN_VALUES]:
        what = " and ".join(PROBLEMS[problem] for problem in entry["problems"])
        counts = ", ".join(f"{stage}: {count}" for stage, count in entry["rows"].items())
        where = "; ".join(f"{w['source']}: {w['stage']} {w['row']}" for w in entry["where"])
        lines.append(f"{name!r} {what} ({counts}) - {where}")
    if len(report) > SHOWN_VALUES:
        lines.append(f"... and {len(report) - SHOWN_VALUES} more")
    return "\n  ".join(lines)
