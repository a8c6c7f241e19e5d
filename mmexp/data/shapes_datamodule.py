"""The embedded default data set as a data module: generated once, then read as a manifest."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmexp.data.datamodule import ManifestDataModule
from mmexp.data.shapes import TASKS, generate_shapes
from mmexp.data.shapes.tasks import get_task


class ShapesDataModule(ManifestDataModule):
    """Synthetic image/caption/audio samples whose label semantics are chosen by ``task``.

    The files are generated deterministically from ``generator_seed`` on first use into
    ``cache_dir`` (PNG, WAV, JSONL manifest) and then read through the same manifest loader
    a user's own data goes through. The generator seed is separate from the training seed so
    that runs over several training seeds share one data set.

    Args:
        task: Label definition: ``redundant``, ``unique_image``, ``unique_text``,
            ``unique_audio``, ``synergy``, ``mixed`` or ``vqa`` (the text is a question,
            the label its answer; batches carry the ``answer_type``).
        cache_dir: Folder the generated data sets are cached in.
        num_train: Training samples.
        num_val: Validation samples.
        num_test: Test samples.
        generator_seed: Seed of the data generator.
        image_size: Side of the generated images, in pixels.
        sample_rate: Sampling rate of the generated audio, in Hz.
        duration_s: Duration of the generated audio clips, in seconds.
        modalities: Modalities to load.
        **loader_options: Passed to :class:`ManifestDataModule` (batch size, workers, ...).
    """

    def __init__(
        self,
        task: str = "redundant",
        cache_dir: str | Path = "data",
        num_train: int = 2000,
        num_val: int = 500,
        num_test: int = 500,
        generator_seed: int = 1234,
        image_size: int = 32,
        sample_rate: int = 8000,
        duration_s: float = 0.5,
        modalities: Sequence[str] = ("image", "text"),
        **loader_options: Any,
    ) -> None:
        if task not in TASKS:
            raise ValueError(
                f"data.task={task!r} is not a shapes task; choose one of {sorted(TASKS)}"
            )
        unknown = set(modalities) - {"image", "text", "audio"}
        if unknown:
            raise ValueError(
                f"data.modalities has {sorted(unknown)}; shapes provides image, text and audio"
            )
        loader_options.setdefault("index_columns", get_task(task).index_columns)
        if not get_task(task).image_captions:
            # no caption references to score against (objective=caption refuses the batches)
            loader_options["references_column"] = None
        super().__init__(root=None, modalities=modalities, **loader_options)
        self.generation = {
            "root": Path(cache_dir),
            "task": task,
            "splits": {"train": num_train, "val": num_val, "test": num_test},
            "seed": generator_seed,
            "image_size": image_size,
            "sample_rate": sample_rate,
            "duration_s": duration_s,
        }

    @property
    def root(self) -> Path:
        """Folder of the generated data set, generating it on first access."""
        if self._root is None:
            self._root = generate_shapes(**self.generation)
        return self._root

    def prepare_data(self) -> None:
        """Generate the data set files if they are not cached yet."""
        _ = self.root
