"""Zero-shot retrieval: the contrastive module's own test step, recall@K both ways.

:class:`~mmexp.lit.contrastive.ContrastivePretrainer` already scores the test split as
retrieval with the group-aware recall of :class:`~mmexp.metrics.retrieval.RetrievalRecall`
(caption data sets: every image once, all its captions ranked, an image-to-text hit when any
of its captions is in the top K). This mode runs that test, on a checkpoint or on a model
built from config (``ckpt_path=null``: public towers, untrained), and keeps its recalls in
``zeroshot.json``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from mmexp.lit.contrastive import ContrastivePretrainer
from mmexp.tracking.run_record import to_number
from mmexp.zeroshot.towers import AlignedTowers


class ZeroShotRetrieval:
    """``zeroshot=retrieval``: image-to-text and text-to-image recall@K on the test split.

    Args:
        name: The mode's key in ``zeroshot.json``.
    """

    replaces_test = True

    def __init__(self, name: str = "retrieval") -> None:
        self.name = name

    def check(self, module: Any, datamodule: Any) -> None:
        """Refuse a module that is not a contrastive image-text module.

        Raises:
            TypeError: Another module, or one without an image and a text tower.
        """
        if not isinstance(module, ContrastivePretrainer):
            raise TypeError(
                f"zeroshot=retrieval: {type(module).__name__} does not score retrieval in its "
                "test step; build it with objective=contrastive"
            )
        AlignedTowers.of(module)

    def run(
        self, run: Any, test: Callable[[], Mapping[str, Any]], device: Any = None
    ) -> dict[str, Any]:
        """Run the module's test (``test``) and keep its ``test/`` retrieval metrics.

        Returns:
            The mode's entry of ``zeroshot.json``: ``metrics`` (``retrieval/<metric>``) and
            the recalls as the test logged them.
        """
        tested = {
            key.removeprefix("test/"): to_number(value)
            for key, value in test().items()
            if key.startswith("test/")
        }
        return {
            "split": "test",
            "modalities": list(run.module.modalities),
            "recall": tested,
            "metrics": {f"{self.name}/{key}": value for key, value in tested.items()},
        }
