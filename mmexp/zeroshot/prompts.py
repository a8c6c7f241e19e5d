"""Prompt template sets and class names of zero-shot classification, checked before use.

A template is a ``str.format`` string with one ``{}`` where the class name goes (``"a photo
of a {}."``); a set is a named list of templates whose prompts are averaged into one class
embedding (CLIP's prompt ensembling, Radford et al. 2021, Sec. 3.1.4). Class names come from
the data module (``label_names``) or from a file: a ``.txt`` with one name per line, or a
``.json`` list of names (index order) or object mapping each of the data's class names to the
name used in the prompts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def check_templates(sets: Mapping[str, Sequence[str]], key: str = "zeroshot.templates") -> None:
    """Refuse an empty set of template sets, an empty set, or a template without one ``{}``.

    Raises:
        ValueError: Naming the set and the template.
    """
    if not sets:
        raise ValueError(f"{key}: no template set; give at least one, e.g. {{simple: ['a {{}}.']}}")
    for name, templates in sets.items():
        if isinstance(templates, str) or not templates:
            raise ValueError(f"{key}.{name}: a non-empty list of templates, got {templates!r}")
        for template in templates:
            if not isinstance(template, str) or "{}" not in template:
                raise ValueError(
                    f"{key}.{name}: template {template!r} has no {{}} where the class name goes"
                )
            try:
                template.format("class")
            except (IndexError, KeyError, ValueError) as error:
                raise ValueError(
                    f"{key}.{name}: template {template!r} is not a format string with one {{}} "
                    f"({error}); write a literal brace as {{{{ or }}}}"
                ) from None


def prompts(template_set: Sequence[str], class_name: str) -> list[str]:
    """Every template of a set filled with ``class_name``."""
    return [template.format(class_name) for template in template_set]


def read_class_names(path: str | Path, key: str = "zeroshot.class_names") -> list[str] | dict:
    """The names in a ``.txt`` (one per line, blank lines skipped) or ``.json`` file.

    Returns:
        A list (index order), or from a JSON object a mapping of data class names to names.

    Raises:
        FileNotFoundError: No file at ``path``.
        ValueError: Another suffix, unreadable JSON, or entries that are not strings.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"{key}={path}: no such file")
    if file.suffix == ".txt":
        names: Any = [line.strip() for line in file.read_text().splitlines() if line.strip()]
    elif file.suffix == ".json":
        try:
            names = json.loads(file.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{key}={path}: not valid JSON ({error})") from None
    else:
        raise ValueError(f"{key}={path}: a .txt (one name per line) or .json file")
    values = list(names.values()) if isinstance(names, dict) else names
    if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
        raise ValueError(
            f"{key}={path}: expected a list of class names or an object of names, got {names!r}"
        )
    return names


def class_names_for(
    label_names: Sequence[str],
    given: str | Sequence[str] | None,
    key: str = "zeroshot.class_names",
) -> list[str]:
    """The prompt name of each of the data's classes, index order.

    Args:
        label_names: The data module's classes, index order.
        given: ``None`` (the data's names), a list of names, or a file path
            (:func:`read_class_names`).
        key: The config key named in errors.

    Raises:
        ValueError: Fewer than two classes, a list whose length is not the class count, or a
            mapping that misses some of the data's classes.
    """
    label_names = [str(name) for name in label_names]
    source = f"the data's classes {label_names}"
    if len(label_names) < 2:
        raise ValueError(
            f"{key}: zero-shot classification needs at least two classes; the data module "
            f"has {label_names} (a caption data set? use zeroshot=retrieval)"
        )
    if given is None:
        return label_names
    names = read_class_names(given, key) if isinstance(given, str | Path) else list(given)
    if isinstance(names, dict):
        missing = [label for label in label_names if label not in names]
        if missing:
            raise ValueError(f"{key}={given}: no name for {missing} of {source}")
        return [names[label] for label in label_names]
    if len(names) != len(label_names):
        raise ValueError(
            f"{key}={given}: {len(names)} class names for {len(label_names)} classes ({source})"
        )
    return [str(name) for name in names]
