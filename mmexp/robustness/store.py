"""``robustness.json`` / ``robustness.csv``: the results of a robustness evaluation, resumable.

The file is rewritten (atomically) after every pass, so an interrupted evaluation keeps the
conditions already scored; run again on the same checkpoint with the same seed, it scores
only the others. Grids evaluated one after the other on one checkpoint add their conditions
to the same file. Results of another checkpoint or seed are never overwritten: that file is
kept as ``robustness.previous-<n>.json`` before a new one starts.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mmexp.robustness.conditions import Condition
from mmexp.robustness.keys import ROBUSTNESS_FILE
from mmexp.tracking.run_record import write_json_atomic

log = logging.getLogger(__name__)

ROBUSTNESS_CSV = "robustness.csv"
#: The curves of the run as a PNG (logged to W&B beside the table).
ROBUSTNESS_PNG = "robustness_curves.png"
#: Version of the layout of ``robustness.json``.
FORMAT = 1


class RobustnessStore:
    """The robustness results of one checkpoint in a run folder.

    Args:
        folder: The run folder (``robustness.json`` goes beside its ``results.json``).
        header: ``checkpoint``, ``seed``, ``metric``, ``mode`` and ``modalities`` of this
            evaluation; a file with another checkpoint or seed is set aside, not resumed.
    """

    def __init__(self, folder: Path, header: Mapping[str, Any]) -> None:
        self.folder = Path(folder)
        self.path = self.folder / ROBUSTNESS_FILE
        self.payload: dict[str, Any] = {"format": FORMAT, **header, "grids": [], "conditions": {}}
        existing = self._read()
        if existing is None:
            return
        same = all(existing.get(key) == header.get(key) for key in ("checkpoint", "seed"))
        if same:
            self.payload["grids"] = list(existing.get("grids", []))
            self.payload["conditions"] = dict(existing.get("conditions", {}))
            log.info(
                "robustness: resuming %s (%d conditions done)",
                self.path,
                len(self.payload["conditions"]),
            )
        else:
            kept = self._set_aside()
            log.warning(
                "robustness: %s holds another checkpoint or seed; kept as %s", self.path, kept
            )

    def _read(self) -> dict[str, Any] | None:
        if not self.path.is_file():
            return None
        try:
            return json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            kept = self._set_aside()
            log.warning("robustness: unreadable %s (%s); kept as %s", self.path, error, kept)
            return None

    def _set_aside(self) -> Path:
        number = 1
        while (target := self.folder / f"robustness.previous-{number}.json").exists():
            number += 1
        self.path.rename(target)
        return target

    def done(self) -> set[str]:
        """Names of the conditions already scored."""
        return set(self.payload["conditions"])

    def add_grid(self, name: str) -> None:
        """Record that grid ``name`` was (or is being) evaluated."""
        if name not in self.payload["grids"]:
            self.payload["grids"].append(name)

    def add(
        self, conditions: Sequence[Condition], results: Mapping[str, Mapping[str, float]]
    ) -> None:
        """Store the metrics of ``conditions`` and rewrite the files."""
        for condition in conditions:
            self.payload["conditions"][condition.name] = {
                **condition.describe(),
                "metrics": dict(results[condition.name]),
            }
        self.write()

    def set_summary(self, summary: Mapping[str, Any]) -> None:
        """Store the summaries (relative and effective robustness) and rewrite the files."""
        self.payload["summary"] = dict(summary)
        self.write()

    def write(self) -> None:
        """Write ``robustness.json`` and ``robustness.csv``."""
        self.folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path, self.payload)
        write_csv(self.payload, self.folder / ROBUSTNESS_CSV)


def csv_rows(payload: Mapping[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """The columns and rows of ``robustness.csv``: one row per condition.

    Empty cells are ``None`` (a column keeps one type, as W&B tables require).
    """
    conditions = payload["conditions"]
    metrics = sorted({key for entry in conditions.values() for key in entry["metrics"]})
    columns = ["name", "kind", "modality", "perturbation", "level", "present", *metrics]
    rows = []
    for name, entry in conditions.items():
        rows.append(
            [
                name,
                entry["kind"],
                entry.get("modality"),
                entry.get("perturbation"),
                entry.get("level"),
                "+".join(entry.get("present") or []),
                *(entry["metrics"].get(key) for key in metrics),
            ]
        )
    return columns, rows


def write_csv(payload: Mapping[str, Any], path: Path) -> None:
    """Write :func:`csv_rows` to ``path``."""
    columns, rows = csv_rows(payload)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows([["" if cell is None else cell for cell in row] for row in rows])
