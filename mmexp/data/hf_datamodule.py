"""Hugging Face ``datasets`` as mmexp data: a hub name or local folder, columns mapped.

``datasets.load_dataset`` does the fetching and caching (online users pass a hub name;
offline, a folder in the hub's own layout, e.g. ``data/train-*.parquet``, or a name already
in the cache). Images and audio are kept undecoded until a sample is read, so screening the
rows at setup costs no image decoding; the encoders' processors then apply as for any
other data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from mmexp.data.datamodule import ManifestDataModule
from mmexp.data.manifest import Record

DEFAULT_SPLITS = {"train": "train", "val": "validation", "test": "test"}


class LazyRows(Sequence):
    """Rows of a ``datasets.Dataset``, read on access (images and audio undecoded)."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self.dataset[i] for i in range(*index.indices(len(self)))]
        return self.dataset[int(index)]


class HFDataModule(ManifestDataModule):
    """Train/val/test loaders over a Hugging Face data set.

    Args:
        path: Hub name (``"nlphuji/flickr30k"``) or local folder / loading script, as
            ``datasets.load_dataset`` takes it.
        name: Configuration name of the data set, if it has several.
        columns: Column of each modality (``{"image": "img", "text": "caption"}``);
            defaults to the modality name.
        label_column: Column holding the label (a ``ClassLabel`` gives the class names).
        split_names: Data-set split used for each of ``train``, ``val``, ``test``.
        data_files: Passed to ``load_dataset`` (e.g. for the ``parquet`` / ``json`` builders).
        revision: Hub revision (commit, tag) to pin.
        cache_dir: Where ``datasets`` caches; defaults to its own.
        **loader_options: Passed to :class:`ManifestDataModule` (batch size, workers,
            ``on_bad_sample``, ``train_subset``...).
    """

    def __init__(
        self,
        path: str,
        name: str | None = None,
        columns: Mapping[str, str] | None = None,
        label_column: str = "label",
        split_names: Mapping[str, str] | None = None,
        data_files: Any = None,
        revision: str | None = None,
        cache_dir: str | None = None,
        **loader_options: Any,
    ) -> None:
        # File-existence checks do not apply: images and audio are held by the data set.
        loader_options["check_files"] = False
        super().__init__(
            root=Path(path),
            columns=columns,
            label_column=label_column,
            split_names=split_names or DEFAULT_SPLITS,
            **loader_options,
        )
        self.path = path
        self.name = name
        self.data_files = data_files
        self.revision = revision
        self.cache_dir = cache_dir

    def source_of(self, stage: str) -> Path:
        """A readable name of the split, for messages."""
        return Path(f"{self.path}[{self.split_names[stage]}]")

    @cached_property
    def _dataset_dict(self) -> Any:
        import datasets

        try:
            loaded = datasets.load_dataset(
                self.path,
                self.name,
                data_files=self.data_files,
                revision=self.revision,
                cache_dir=self.cache_dir,
            )
        except FileNotFoundError as error:
            raise FileNotFoundError(
                f"data.path={self.path!r}: not found locally and not reachable on the hub "
                f"({error}); pass a local folder in the hub layout or a cached name"
            ) from error
        missing = sorted(set(self.split_names.values()) - set(loaded))
        if missing:
            raise ValueError(
                f"data.path={self.path!r} has splits {sorted(loaded)}, not "
                f"{missing}; set data.split_names"
            )
        return loaded

    def _undecoded(self, dataset: Any) -> Any:
        import datasets

        columns = [self.columns[m] for m in ("image", "audio") if m in self.columns]
        for column in columns:
            if column not in dataset.features:
                raise ValueError(
                    f"data.path={self.path!r} has no column {column!r}; columns: "
                    f"{sorted(dataset.features)} (set data.columns)"
                )
            feature = dataset.features[column]
            if isinstance(feature, (datasets.Image, datasets.Audio)):
                dataset = dataset.cast_column(column, type(feature)(decode=False))
        return dataset

    def read_splits(self) -> dict[str, list[Record]]:
        """Each stage's split, as lazily read rows."""
        return {
            stage: LazyRows(self._undecoded(self._dataset_dict[split]))  # type: ignore[misc]
            for stage, split in self.split_names.items()
        }

    @staticmethod
    def take(rows: Sequence[Record], positions: list[int]) -> Sequence[Record]:
        """A lazy selection: the data set is not read into memory."""
        if isinstance(rows, LazyRows):
            return LazyRows(rows.dataset.select(positions))
        return [rows[i] for i in positions]

    def screen(self, stage: str, rows: Sequence[Record]) -> Sequence[Record]:
        """Screen text and labels only: reading every image's bytes would cost a full pass."""
        if not isinstance(rows, LazyRows):
            return super().screen(stage, rows)
        light = {m: c for m, c in self.columns.items() if m not in ("image", "audio")}
        view = LazyRows(rows.dataset.select_columns([*light.values(), self.label_column]))
        return self.take(rows, self.usable_positions(stage, view, light))

    def split_labels(self, stage: str, rows: Sequence[Record]) -> Sequence[Any]:
        """The label column alone: reading whole rows would read every image's bytes."""
        if isinstance(rows, LazyRows):
            return list(rows.dataset[self.label_column])
        return super().split_labels(stage, rows)

    @cached_property
    def label_names(self) -> list[str]:
        """Class names: from a ``ClassLabel`` feature, else from the label values."""
        import datasets

        train = self._dataset_dict[self.split_names["train"]]
        if self.label_column not in train.features:
            raise ValueError(
                f"data.label_column={self.label_column!r} is not a column of "
                f"{self.path!r}: {sorted(train.features)}"
            )
        feature = train.features[self.label_column]
        if isinstance(feature, datasets.ClassLabel):
            return list(feature.names)
        values = {
            v
            for split in self.split_names.values()
            for v in self._dataset_dict[split][self.label_column]
            if v is not None
        }
        if all(isinstance(v, int) for v in values):
            return [str(i) for i in range(max(values) + 1)]
        return sorted(str(v) for v in values)

    @property
    def meta(self) -> dict[str, Any]:
        """Class names, so that unknown labels are caught at setup."""
        return {"label_names": self.label_names}
