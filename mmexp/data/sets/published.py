"""What published data sets share: a local root, a place to get them, expected counts."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger(__name__)

COUNT_CHECKS = ("warn", "raise", "off")


def require_file(path: Path, dataset: str, obtain: str) -> Path:
    """Return ``path`` if it is a file, else fail naming it and where the data set comes from.

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    if not path.is_file():
        raise FileNotFoundError(
            f"{dataset}: missing {path}. {obtain} Point data.root at the extracted folder."
        )
    return path


def check_counts(
    dataset: str, found: Mapping[str, int], expected: Mapping[str, int], policy: str
) -> None:
    """Compare the samples found per split with the published counts.

    Args:
        dataset: Name for messages.
        found: Samples found per split file.
        expected: Published counts per split file.
        policy: ``warn`` (log differences), ``raise`` or ``off``.

    Raises:
        ValueError: Counts differ under ``policy="raise"``, or an unknown policy.
    """
    if policy not in COUNT_CHECKS:
        raise ValueError(f"data.check_counts must be one of {COUNT_CHECKS}, got {policy!r}")
    if policy == "off":
        return
    differing = {
        name: (found.get(name, 0), count)
        for name, count in expected.items()
        if name in found and found[name] != count
    }
    if not differing:
        return
    details = ", ".join(
        f"{name}: {got} found, {want} published" for name, (got, want) in differing.items()
    )
    message = f"{dataset}: split sizes differ from the published release ({details})"
    if policy == "raise":
        raise ValueError(message + "; set data.check_counts=warn to use a partial copy")
    log.warning("%s; results are not comparable with published ones", message)
