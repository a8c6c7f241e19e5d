"""Read a manifest: one row per sample, one column per modality, a label and a split.

This is the format the embedded ``shapes`` data set is written in and the format a user's
own data comes in (JSONL or CSV). Every check names the file and the row, so a broken
sample is found before training starts rather than in the middle of an epoch.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

Record = dict[str, Any]


def read_manifest(path: str | Path) -> list[Record]:
    """Read a JSONL, CSV or Parquet manifest into a list of row dicts.

    Args:
        path: ``.jsonl`` (one JSON object per line), ``.csv`` (header row) or ``.parquet``.

    Returns:
        The rows in file order.

    Raises:
        FileNotFoundError: The manifest does not exist.
        ValueError: A line is not a JSON object, or the format is not supported.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    if path.suffix == ".jsonl":
        rows = []
        with path.open(encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    message = f"{path}:{line_number}: not valid JSON ({error.msg})"
                    raise ValueError(message) from None
                if not isinstance(row, dict):
                    raise ValueError(f"{path}:{line_number}: expected a JSON object per line")
                rows.append(row)
        return rows
    if path.suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as handle:
            return list(csv.DictReader(handle))
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq  # imported here: only Parquet manifests need it

        try:
            return pq.read_table(path).to_pylist()
        except Exception as error:  # pyarrow raises ArrowInvalid and OSError variants
            raise ValueError(f"{path}: not a readable Parquet file ({error})") from error
    raise ValueError(
        f"unsupported manifest format {path.suffix!r} for {path}; use .jsonl, .csv or .parquet"
    )


def row_name(row: Record, position: int) -> str:
    """Name a row in error messages by its ``id`` when present, else by its position."""
    return f"row {position} (id={row['id']!r})" if "id" in row else f"row {position}"


def label_index(
    rows: Sequence[Record],
    label_column: str,
    label_names: Sequence[str],
    source: Path,
    by_name_only: bool = False,
) -> list[int]:
    """Map each row's label (a class name or an integer index) to an integer index.

    Args:
        rows: Manifest rows.
        label_column: Column holding the label.
        label_names: Class names, index order.
        source: The manifest, named in error messages.
        by_name_only: Match every label as a name (``7`` and ``"7"`` alike), never as an
            index: the classes were pinned by ``data.label_names``, whose order need not be
            the values' numeric order.

    Raises:
        ValueError: A label is neither a known class name nor a valid index.
    """
    by_name = {name: index for index, name in enumerate(label_names)}
    indices = []
    for position, row in enumerate(rows):
        value = row[label_column]
        if (isinstance(value, str) or by_name_only) and str(value) in by_name:
            indices.append(by_name[str(value)])
            continue
        if by_name_only:
            raise ValueError(
                f"{source}: {row_name(row, position)} has label {value!r}, which is not in "
                f"data.label_names: {list(label_names)}"
            )
        try:
            index = int(value)
        except (TypeError, ValueError):
            index = -1
        if not 0 <= index < len(label_names) or (isinstance(value, float) and value != index):
            raise ValueError(
                f"{source}: {row_name(row, position)} has unknown label {value!r}; "
                f"known classes: {list(label_names)}"
            )
        indices.append(index)
    return indices


def label_set(value: Any) -> list[str]:
    """The labels of a multi-label row: a list, or a ``|``-separated string (CSV)."""
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [part for part in str(value).split("|") if part]


def multi_hot(
    rows: Sequence[Record], label_column: str, label_names: Sequence[str], source: Path
) -> list[list[int]]:
    """Each row's label set as a multi-hot vector over ``label_names``.

    Raises:
        ValueError: A label is not a known class name.
    """
    by_name = {name: index for index, name in enumerate(label_names)}
    vectors = []
    for position, row in enumerate(rows):
        vector = [0] * len(label_names)
        for name in label_set(row[label_column]):
            if name not in by_name:
                raise ValueError(
                    f"{source}: {row_name(row, position)} has unknown label "
                    f"{name!r}; known classes: {list(label_names)}"
                )
            vector[by_name[name]] = 1
        vectors.append(vector)
    return vectors


def pinned_label_names(names: Any) -> list[str] | None:
    """Check ``data.label_names`` and return it as strings (YAML may give numbers).

    Raises:
        ValueError: Not a list, empty, or with an empty or repeated name.
    """
    if names is None:
        return None
    if isinstance(names, (str, bytes)) or not isinstance(names, Sequence):
        raise ValueError(f"data.label_names must be a list of class names, got {names!r}")
    pinned = [str(name) for name in names]
    if not pinned or any(not name.strip() for name in pinned):
        raise ValueError(f"data.label_names must list non-empty class names, got {pinned}")
    repeated = sorted({name for name in pinned if pinned.count(name) > 1})
    if repeated:
        raise ValueError(f"data.label_names names {repeated} more than once: {pinned}")
    return pinned


def infer_label_names(rows: Sequence[Record], label_column: str) -> list[str]:
    """Class names from the label values: sorted integers or sorted strings."""
    values = {row[label_column] for row in rows}
    if all(isinstance(v, int) or (isinstance(v, str) and v.isdigit()) for v in values):
        count = max(int(v) for v in values) + 1
        return [str(index) for index in range(count)]
    return sorted(str(v) for v in values)


def split_rows(
    rows: Sequence[Record], split_column: str, split_names: Mapping[str, str], source: Path
) -> dict[str, list[Record]]:
    """Group rows by split, keyed by the stage name (``train``/``val``/``test``)."""
    groups: dict[str, list[Record]] = {stage: [] for stage in split_names}
    stage_of = {value: stage for stage, value in split_names.items()}
    for position, row in enumerate(rows):
        if split_column not in row:
            raise ValueError(f"{source}: {row_name(row, position)} has no {split_column!r} column")
        stage = stage_of.get(str(row[split_column]))
        if stage is not None:
            groups[stage].append(row)
    empty = [stage for stage, members in groups.items() if not members]
    if empty:
        raise ValueError(
            f"{source}: no rows for split(s) {empty} (looked for {split_column} values "
            f"{[split_names[s] for s in empty]})"
        )
    return groups
