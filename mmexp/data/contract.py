"""What a data module offers the builders, the feature cache and the run record.

Any ``data._target_`` works with mmexp when it provides these members; the shipped ones
(manifests, Hugging Face data sets, arrays, shapes, and the feature cache's wrapper) do.
The builders check a built data module against :class:`MultimodalDataModule` and name the
members it lacks, instead of failing later on an attribute deep inside a build step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from mmexp.data.screening import BadSample
from mmexp.encoders.processors import ModalityProcessor

#: The splits every data module serves, in the order a run uses them.
STAGES: tuple[str, ...] = ("train", "val", "test")


@runtime_checkable
class MultimodalDataModule(Protocol):
    """The members of a data module that mmexp reads besides Lightning's own.

    Attributes:
        num_classes: Classes of the labels (1 for real-valued targets).
        label_names: Class names, index order.
        label_report: Label values that look wrong (in one row only, in no training row),
            by class name, for the run record; ``{}`` when none do or the data cannot tell.
        bad_samples: Rows left out at setup under ``data.on_bad_sample=skip``.
    """

    bad_samples: list[BadSample]

    @property
    def num_classes(self) -> int:  # noqa: D102
        ...

    @property
    def label_names(self) -> list[str]:  # noqa: D102
        ...

    @property
    def label_report(self) -> Mapping[str, Mapping[str, Any]]:  # noqa: D102
        ...

    def prepare_data(self) -> None:
        """Download, generate or check the files (once per node)."""

    def setup(self, stage: str) -> None:
        """Read the splits of ``stage``."""

    def set_processors(
        self,
        train: Mapping[str, ModalityProcessor],
        evaluation: Mapping[str, ModalityProcessor],
    ) -> None:
        """Install the encoders' preprocessing for the training and evaluation splits."""

    def train_dataloader(self) -> Any:  # noqa: D102
        ...

    def val_dataloader(self) -> Any:  # noqa: D102
        ...

    def test_dataloader(self) -> Any:  # noqa: D102
        ...


def missing_members(datamodule: object) -> list[str]:
    """The members of :class:`MultimodalDataModule` that ``datamodule`` lacks.

    Read after ``prepare_data``: some members are properties over the prepared files.
    """
    members = (
        "bad_samples",
        "num_classes",
        "label_names",
        "label_report",
        "prepare_data",
        "setup",
        "set_processors",
        "train_dataloader",
        "val_dataloader",
        "test_dataloader",
    )
    return [name for name in members if not hasattr(datamodule, name)]
