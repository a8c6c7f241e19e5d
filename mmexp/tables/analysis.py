"""Analysis columns for ``mmexp-table --analysis``: flat ``analysis/...`` keys, short labels.

The keys are those of :mod:`mmexp.analysis.keys`, read from each run's ``analysis.json`` or
from a W&B run summary. A request names one key (``emap/gap``, with or without the
``analysis/`` prefix), a group of them (``pid/model``: its redundancy, unique and synergy
atoms; ``contribution/shapley``: one column per modality) or any other metric of the runs
(``test/acc``), so a model's accuracy and its analyses sit side by side.
"""

from __future__ import annotations

from collections.abc import Sequence

from mmexp.analysis.keys import PID_TARGETS, PREFIX, UNIQUE, atom_order
from mmexp.tables.collect import RunResult

#: Labels of single keys below ``analysis/``.
FIXED_LABELS = {
    "emap/gap": "EMAP gap",
    "emap/emap_accuracy": "EMAP acc",
    "emap/accuracy": "acc (EMAP set)",
    "emap/agreement": "EMAP agreement",
    "contribution/shapley_total": "shapley total",
    "contribution/full_minus_empty": "full - empty",
}
#: Labels of the atoms of a decomposition.
ATOM_LABELS = {"redundancy": "R", "synergy": "S", "total": "I", "gap": "solver gap"}
#: Groups expanded to their atoms only (not their total and solver gap).
PID_GROUPS = {f"pid/{target}" for target in PID_TARGETS}


def analysis_key(request: str) -> str:
    """The flat key of a request: ``emap/gap`` -> ``analysis/emap/gap``."""
    return request if request.startswith(f"{PREFIX}/") else f"{PREFIX}/{request}"


def short_label(key: str) -> str:
    """A column label for a flat key: ``analysis/pid/model/unique_text`` -> ``U_text model``.

    Shapley values read ``shapley:<m>``, drops ``drop:<m>``, MM-SHAP shares ``share:<m>``,
    subset metrics ``<subset>:<metric>``, PID atoms ``R``/``U_<m>``/``S``/``I`` and the
    decomposition (``data`` or ``model``); other keys lose their ``analysis/`` prefix only.
    """
    if not key.startswith(f"{PREFIX}/"):
        return key
    path = key.removeprefix(f"{PREFIX}/")
    if path in FIXED_LABELS:
        return FIXED_LABELS[path]
    parts = path.split("/")
    if parts[0] == "pid" and len(parts) == 3 and parts[1] in PID_TARGETS:
        atom = parts[2]
        if atom.startswith(UNIQUE):
            return f"U_{atom.removeprefix(UNIQUE)} {parts[1]}"
        if atom in ATOM_LABELS:
            return f"{ATOM_LABELS[atom]} {parts[1]}"
    if parts[0] == "contribution" and len(parts) == 3 and parts[1] in ("shapley", "drop"):
        return f"{parts[1]}:{parts[2]}"
    if parts[:3] == ["contribution", "per_sample", "shares"] and len(parts) == 4:
        return f"share:{parts[3]}"
    if parts[:2] == ["contribution", "subsets"] and len(parts) == 4:
        return f"{parts[2]}:{parts[3]}"
    return path


def analysis_columns(runs: Sequence[RunResult], requests: Sequence[str]) -> list[tuple[str, str]]:
    """``(label, key)`` of the table columns that ``requests`` name, in their order.

    Args:
        runs: Collected runs (their flat metrics are searched).
        requests: A metric of the runs (``test/acc``), an analysis key (``emap/gap``) or a
            group (``pid/model``, ``contribution/shapley``: the numbers directly below it;
            a decomposition's atoms only, redundancy first, synergy last).

    Raises:
        ValueError: No run has a requested key or group.
    """
    known = {key for run in runs for key in run.metrics}
    columns: list[tuple[str, str]] = []
    for request in requests:
        key = analysis_key(request.rstrip("/"))
        if request in known and not request.startswith(f"{PREFIX}/"):
            found = [(request, request)]
        elif key in known:
            found = [(short_label(key), key)]
        else:
            found = [(short_label(k), k) for k in _group(known, key)]
        if not found:
            raise ValueError(
                f"no run has analysis results for {request!r}; known: {_known_groups(known)}"
            )
        columns.extend(found)
    return columns


def _group(known: set[str], key: str) -> list[str]:
    head = f"{key}/"
    children = sorted(
        k[len(head) :] for k in known if k.startswith(head) and "/" not in k[len(head) :]
    )
    if key.removeprefix(f"{PREFIX}/") in PID_GROUPS:
        children = atom_order(children)
    return [head + child for child in children]


def _known_groups(known: set[str]) -> list[str]:
    """The analysis keys' parents, without ``analysis/`` (what a request may name)."""
    parents = {
        key.removeprefix(f"{PREFIX}/").rsplit("/", 1)[0]
        for key in known
        if key.startswith(f"{PREFIX}/") and key.count("/") > 1
    }
    return sorted(parents)
