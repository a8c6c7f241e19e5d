"""Lightning data modules over manifests: a user's own data and the embedded ``shapes``."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from mmexp.data.contract import STAGES
from mmexp.data.dataset import ManifestDataset, MultimodalCollator, content_ids
from mmexp.data.label_checks import describe, suspicious_labels
from mmexp.data.loaders import SplitLoaders
from mmexp.data.manifest import (
    Record,
    infer_label_names,
    label_index,
    label_set,
    multi_hot,
    pinned_label_names,
    read_manifest,
    row_name,
    split_rows,
)
from mmexp.data.screening import POLICIES, BadSample, screen_rows
from mmexp.encoders.processors import ModalityProcessor

log = logging.getLogger(__name__)


class ScreenedSplits(Mapping[str, Sequence[Record]]):
    """The usable rows of each stage, screened the first time the stage is asked for.

    Args:
        raw: The rows read, per stage.
        screen: Returns the usable rows of a stage (raising or recording the bad ones).
    """

    def __init__(
        self,
        raw: Mapping[str, Sequence[Record]],
        screen: Callable[[str, Sequence[Record]], Sequence[Record]],
    ) -> None:
        self.raw = raw
        self.screen = screen
        self.screened: dict[str, Sequence[Record]] = {}

    def __getitem__(self, stage: str) -> Sequence[Record]:
        if stage not in self.screened:
            self.screened[stage] = self.screen(stage, self.raw[stage])
        return self.screened[stage]

    def __iter__(self) -> Iterator[str]:
        return iter(self.raw)

    def __len__(self) -> int:
        return len(self.raw)


class ManifestDataModule(SplitLoaders):
    """Train/val/test loaders over a JSONL or CSV manifest.

    The encoders own the preprocessing: call :meth:`set_processors` with theirs before
    fitting. Class names come from ``label_names`` when set, else from ``meta.json`` beside
    the manifest when present, else from the label values. At setup, label values in one
    row only or in no training row are warned about once and kept in :attr:`label_report`
    (see :mod:`mmexp.data.label_checks`).

    Args:
        root: Folder holding the manifest and the files it references.
        manifest: Manifest file name inside ``root``.
        modalities: Modalities to load, in the order the model fuses them.
        columns: Manifest column of each modality; defaults to the modality name.
        label_column: Column holding the label (class name or index).
        split_column: Column holding the split of each row.
        split_names: Value of ``split_column`` for each of ``train``, ``val``, ``test``.
        batch_size: Training batch size (per process).
        eval_batch_size: Validation/test batch size; defaults to ``batch_size``.
        num_workers: Loader worker processes.
        pin_memory: Pin host memory for faster host-to-GPU copies.
        persistent_workers: Keep workers alive between epochs.
        check_files: Check at setup that every referenced file exists.
        multilabel: Each row has a set of labels (a JSON list, or ``a|b`` in CSV); targets
            are multi-hot vectors.
        on_bad_sample: ``raise`` stops at setup on a missing file, empty text or unknown
            label (and on an undecodable file when it is read), naming file and row;
            ``skip`` leaves such samples out, logs them and records them
            (:attr:`bad_samples`).
        train_subset: Use only this many training samples (an int) or this fraction of
            them (a float in (0, 1]), drawn at random with ``subset_seed``; for low-label
            finetuning and learning curves. Validation and test splits stay whole.
        subset_seed: Seed of the training subset draw (fixed across training seeds, so
            that seeds vary the model and not the data).
        content_column: Column that says what a row shows (any JSON value; a dictionary
            keyed by modality is compared on the loaded modalities). Rows with equal values
            show the same content, so the contrastive and matching losses never take
            them as each other's negatives (batches carry ``content`` ids); ``None``: each
            row is its own content.
        label_names: The classes, in index order (``data.label_names``). Class indices
            follow this list, not the sorted label values; labels are matched to it as
            text (``7`` and ``"7"`` alike; in multi-label rows, each member). A label
            outside it is an unknown label, found at setup and handled by
            ``on_bad_sample`` (``raise``: an error naming the value, file and row and
            listing the allowed names; ``skip``: the row is left out and recorded).
            ``None``: classes from ``meta.json``, else the sorted label values (integer
            labels: ``0`` to the largest). A data set that fixes its own classes
            (``meta.json``, a published release) accepts only that same list here.
        references_column: Column holding each row's reference captions (a list of
            strings), given to evaluation batches as ``references`` for the caption
            metrics (``objective=caption``); ``None``: none.
        index_columns: Columns carried into every batch as ``[B]`` indices into the names
            given for each (shapes' ``vqa`` task: ``answer_type`` over ``yes/no``,
            ``number``, ``other``, which the VQA metrics score separately).
    """

    def __init__(
        self,
        root: str | Path,
        manifest: str = "manifest.jsonl",
        modalities: Sequence[str] = ("image", "text"),
        columns: Mapping[str, str] | None = None,
        label_column: str = "label",
        split_column: str = "split",
        split_names: Mapping[str, str] | None = None,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        check_files: bool = True,
        multilabel: bool = False,
        on_bad_sample: str = "raise",
        train_subset: int | float | None = None,
        subset_seed: int = 0,
        content_column: str | None = None,
        label_names: Sequence[str] | None = None,
        references_column: str | None = None,
        index_columns: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        super().__init__()
        if not modalities:
            raise ValueError("data.modalities is empty; name at least one modality")
        self._root = Path(root) if root is not None else None
        self.manifest_name = manifest
        self.modalities = tuple(modalities)
        self.columns = {m: (columns or {}).get(m, m) for m in self.modalities}
        self.label_column = label_column
        self.split_column = split_column
        self.split_names = dict(split_names or {stage: stage for stage in STAGES})
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.check_files = check_files
        if on_bad_sample not in POLICIES:
            raise ValueError(f"data.on_bad_sample must be one of {POLICIES}, got {on_bad_sample!r}")
        self.on_bad_sample = on_bad_sample
        self.multilabel = multilabel
        # The user's class list; the ``label_names`` property is the one in use.
        self.pinned_labels = pinned_label_names(label_names)
        # Samples left out at setup under on_bad_sample=skip, for the run record.
        self.bad_samples: list[BadSample] = []
        if train_subset is not None and not (
            (isinstance(train_subset, int) and train_subset >= 1)
            or (isinstance(train_subset, float) and 0 < train_subset <= 1)
        ):
            raise ValueError(
                f"data.train_subset must be a count >= 1 or a fraction in (0, 1], "
                f"got {train_subset!r}"
            )
        self.train_subset = train_subset
        self.subset_seed = subset_seed
        self.content_column = content_column
        self.references_column = references_column
        self.index_columns = {k: list(v) for k, v in (index_columns or {}).items()}
        self.processors: dict[str, dict[str, ModalityProcessor]] = {}
        self.datasets: dict[str, ManifestDataset] = {}

    @property
    def root(self) -> Path:
        """Folder of the data set."""
        if self._root is None:
            raise ValueError("data.root is not set: point it at the folder holding the manifest")
        return self._root

    @property
    def manifest_path(self) -> Path:
        """Path of the manifest file."""
        return self.root / self.manifest_name

    @cached_property
    def meta(self) -> dict[str, Any]:
        """Contents of ``meta.json`` beside the manifest, or ``{}`` when there is none."""
        path = self.root / "meta.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def source_of(self, stage: str) -> Path:
        """The file the rows of ``stage`` come from, named in error messages."""
        return self.manifest_path

    def read_splits(self) -> dict[str, list[Record]]:
        """The raw rows of each stage; data sets in a published format override this."""
        rows = read_manifest(self.manifest_path)
        if not rows:
            raise ValueError(f"{self.manifest_path}: the manifest has no rows")
        return split_rows(rows, self.split_column, self.split_names, self.manifest_path)

    @cached_property
    def _raw_splits(self) -> dict[str, list[Record]]:
        return self.read_splits()

    def screen(self, stage: str, rows: Sequence[Record]) -> Sequence[Record]:
        """The usable rows of ``stage`` under ``on_bad_sample``; records the bad ones."""
        return self.take(rows, self.usable_positions(stage, rows))

    def usable_positions(
        self, stage: str, rows: Sequence[Record], columns: Mapping[str, str] | None = None
    ) -> list[int]:
        """Positions of the usable rows; the bad ones are raised or recorded.

        ``columns`` restricts the check to some modalities (default: all of them).
        """
        known = self.known_labels()
        hint = None
        if self.fixed_label_names() is not None:
            count = len(self.label_names)
            hint = f"labels allowed by the data set (a name or 0..{count - 1}): {self.label_names}"
        elif known is not None:
            hint = f"labels allowed by data.label_names: {self.label_names}"
        kept, bad = screen_rows(
            rows,
            stage,
            self.on_bad_sample,
            columns=self.columns if columns is None else columns,
            label_column=self.label_column,
            known_labels=known,
            root=self.root,
            check_files=self.check_files,
            source=self.source_of(stage),
            multilabel=self.multilabel,
            label_hint=hint,
        )
        self.bad_samples.extend(bad)
        return kept

    @cached_property
    def _splits(self) -> Mapping[str, Sequence[Record]]:
        # Each stage is screened when first used: fitting must not stop on a test file
        # that only testing reads (one a challenge ships without labels, say).
        return ScreenedSplits(self._raw_splits, self._screened)

    def _screened(self, stage: str, rows: Sequence[Record]) -> Sequence[Record]:
        kept = self.screen(stage, rows)
        if not kept:
            raise ValueError(f"{self.source_of(stage)}: no usable rows left in the {stage} split")
        _ = self.label_report  # warned once, at setup
        return kept

    def split_labels(self, stage: str, rows: Sequence[Record]) -> Sequence[Any]:
        """The label of each row of ``stage``; data sets with lazy rows read the column alone."""
        return [row.get(self.label_column) for row in rows]

    @cached_property
    def label_report(self) -> dict[str, dict[str, Any]]:
        """Label values that look wrong, for the run record (JSON); ``{}`` when none do.

        Keyed by class name: ``problems`` (``one_row``: in one row of all splits together;
        ``not_in_train``: in validation or test rows but no training row), ``rows`` (the
        count per split) and ``where`` (the first few rows: ``source``, ``stage``, ``row``).
        Counted over all rows read, screened out or not, since those are what the classes
        are inferred from; unknown labels are left to screening. Logged as one warning.
        """
        raw = self._raw_splits
        labels = {stage: self.split_labels(stage, rows) for stage, rows in raw.items()}
        found = suspicious_labels(labels, self.multilabel, self.class_by_label())
        report = {
            name: {
                "problems": entry["problems"],
                "rows": entry["rows"],
                "where": [
                    {
                        "source": str(self.source_of(stage)),
                        "stage": stage,
                        "row": row_name(raw[stage][position], position),
                    }
                    for stage, position in entry["positions"]
                ],
            }
            for name, entry in found.items()
        }
        if report:
            inferred = self.class_by_label() is None
            advice = (
                "each is a class of its own: fix a typo in the manifest, or set "
                "data.label_names to the classes so that other values are refused"
                if inferred
                else "check the rows named"
            )
            log.warning(
                "%d label value(s) look wrong (%s):\n  %s", len(report), advice, describe(report)
            )
        return report

    def fixed_label_names(self) -> list[str] | None:
        """The classes the data set fixes itself (``meta.json``, a release), if it does.

        Raises:
            ValueError: ``label_names`` was set to another list.
        """
        if "label_names" not in self.meta:
            return None
        fixed = list(self.meta["label_names"])
        if self.pinned_labels is not None and self.pinned_labels != [str(n) for n in fixed]:
            raise ValueError(
                f"data.label_names={self.pinned_labels} differs from the classes this data "
                f"set fixes itself (meta.json in {self._root}, or its release): {fixed}; "
                "leave data.label_names null, or edit meta.json"
            )
        return fixed

    def class_by_label(self) -> dict[str, str] | None:
        """The class each allowed label value (as text) names; ``None``: any, its own class."""
        fixed = self.fixed_label_names()
        if fixed is not None:
            # A data set's own class list is also indexed by number (shapes stores indices).
            names = [str(name) for name in fixed]
            return {**{str(i): name for i, name in enumerate(names)}, **{n: n for n in names}}
        if self.pinned_labels is not None:
            return {name: name for name in self.pinned_labels}
        return None

    def known_labels(self) -> set[str] | None:
        """The label values a row may hold; ``None`` when the classes come from the data."""
        classes = self.class_by_label()
        return None if classes is None else set(classes)

    @cached_property
    def label_names(self) -> list[str]:
        """Class names, index order."""
        fixed = self.fixed_label_names()
        if fixed is not None:
            return fixed
        if self.pinned_labels is not None:
            return list(self.pinned_labels)
        # Unchanged from before data.label_names existed, so runs keep their class indices.
        labelled = [
            r
            for rows in self._raw_splits.values()
            for r in rows
            if r.get(self.label_column) not in (None, "")
        ]
        if self.multilabel:
            return sorted({n for r in labelled for n in label_set(r[self.label_column])})
        return infer_label_names(labelled, self.label_column)

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.label_names)

    def set_processors(
        self,
        train: Mapping[str, ModalityProcessor],
        evaluation: Mapping[str, ModalityProcessor],
    ) -> None:
        """Install the encoders' preprocessing for the training and evaluation splits."""
        for name, processors in (("train", train), ("evaluation", evaluation)):
            missing = set(self.modalities) - set(processors)
            if missing:
                raise ValueError(f"no {name} processor for modalities {sorted(missing)}")
        self.processors = {"train": dict(train), "eval": dict(evaluation)}
        self.datasets.clear()

    def stage_rows(self, stage: str) -> Sequence[Record]:
        """The rows of one stage: the training subset for ``train`` when one is set."""
        rows = self._splits[stage]
        if stage == "train" and self.train_subset is not None:
            rows = self._subset(rows)
        return rows

    def stage_processors(self, stage: str, processed: bool) -> dict[str, ModalityProcessor] | None:
        """The stage's processors (training or evaluation), ``None`` unless ``processed``.

        Raises:
            RuntimeError: ``processed`` before :meth:`set_processors`.
        """
        if not processed:
            return None
        if not self.processors:
            raise RuntimeError("call set_processors() with the encoders' processors first")
        return self.processors["train" if stage == "train" else "eval"]

    def dataset(self, stage: str, processed: bool = True) -> ManifestDataset:
        """The data set of one stage, with the stage's processors unless ``processed=False``."""
        rows = self.stage_rows(stage)
        processors = self.stage_processors(stage, processed)
        source = self.source_of(stage)
        if self.multilabel:
            labels = multi_hot(rows, self.label_column, self.label_names, source)
        else:
            # Pinned names are matched as text: their order need not be the numeric one.
            pinned = self.pinned_labels is not None and self.fixed_label_names() is None
            labels = label_index(rows, self.label_column, self.label_names, source, pinned)
        contents = (
            content_ids(rows, self.content_column, self.source_of(stage), self.modalities)
            if self.content_column
            else None
        )
        return ManifestDataset(
            rows,
            labels,
            self.root,
            self.columns,
            processors,
            self.source_of(stage),
            skip_unreadable=self.on_bad_sample == "skip",
            contents=contents,
            references_column=None if stage == "train" else self.references_column,
            extras=self.index_values(stage, rows),
        )

    def index_values(self, stage: str, rows: Sequence[Record]) -> dict[str, list[int]]:
        """Each of :attr:`index_columns` as the index of every row's value in its names.

        Raises:
            ValueError: A row lacks the column or holds a value outside its names.
        """
        values: dict[str, list[int]] = {}
        for column, names in self.index_columns.items():
            values[column] = []
            for position, row in enumerate(rows):
                if row.get(column) not in names:
                    raise ValueError(
                        f"{self.source_of(stage)}: {row_name(row, position)} has "
                        f"{column}={row.get(column)!r}, not one of {names}"
                    )
                values[column].append(names.index(row[column]))
        return values

    def _subset(self, rows: Sequence[Record]) -> Sequence[Record]:
        size = (
            self.train_subset
            if isinstance(self.train_subset, int)
            else max(1, round(self.train_subset * len(rows)))
        )
        if size > len(rows):
            raise ValueError(
                f"data.train_subset={self.train_subset} but the train split of "
                f"{self.source_of('train')} has only {len(rows)} rows"
            )
        generator = torch.Generator().manual_seed(self.subset_seed)
        chosen = torch.randperm(len(rows), generator=generator)[:size].sort().values
        return self.take(rows, chosen.tolist())

    @staticmethod
    def take(rows: Sequence[Record], positions: list[int]) -> Sequence[Record]:
        """The rows at ``positions`` (data sets with lazy rows keep them lazy)."""
        return [rows[i] for i in positions]

    def setup(self, stage: str | None = None) -> None:
        """Read the manifest and build the data sets needed for ``stage``."""
        stages = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}.get(
            stage or "", STAGES
        )
        for name in stages:
            if name not in self.datasets:
                self.datasets[name] = self.dataset(name)
        if stage == "fit":
            self._look_ahead("test")

    def _look_ahead(self, stage: str) -> None:
        # A split that will not load is named before a long fit, without stopping a fit
        # that is never tested (``test=false`` on a file without labels).
        try:
            _ = self._splits[stage]
        except ValueError as error:
            log.warning("the %s split will not load, so a test would stop: %s", stage, error)

    def collator(self, stage: str) -> MultimodalCollator:
        """Batches of samples processed for ``stage`` (training or evaluation transforms)."""
        return MultimodalCollator(self.processors["train" if stage == "train" else "eval"])
