"""VQA v2, read from its release files: COCO images, questions, ten human answers each.

From Goyal et al., "Making the V in VQA Matter", CVPR 2017 (https://visualqa.org). The
release holds, per split, ``v2_OpenEnded_mscoco_<split>_questions.json`` (``questions``:
``image_id``, ``question``, ``question_id``) and ``v2_mscoco_<split>_annotations.json``
(``annotations``: ``question_id``, ``image_id``, ``question_type``, ``answer_type``,
``multiple_choice_answer`` and ten ``answers``), with the COCO 2014 images as
``<split>/COCO_<split>_<image_id:012d>.jpg``. The test-dev and test-std questions
(``test-dev2015``, ``test2015``) come without annotations: they are scored only by the
challenge server (EvalAI), so they cannot be a test split here.

``protocol`` names the splits:

* ``official``: train on train2014 (443,757 questions, 82,783 images), select and report on
  val2014 (214,354 questions, 40,504 images), as the "val" results of the papers (Anderson
  et al. 2018, Teney et al. 2018).
* ``karpathy``: the questions of train2014 and val2014 pooled and split by image as in
  Karpathy & Fei-Fei's ``dataset_coco.json`` (train + restval / val / test: 113,287 /
  5,000 / 5,000 images), the "Karpathy test split" VQA results of VL-T5 (Cho et al.,
  ICML 2021). No image is in two splits.

The answer vocabulary is the ``num_answers`` (3,129, as in Anderson et al. 2018) most
frequent normalised ``multiple_choice_answer`` of the training questions (ties: the answer
string, ascending). Each question's target holds, per vocabulary answer, the official
accuracy of predicting it (0.3/0.6/0.9/1 for 1/2/3/4+ of the ten humans,
:func:`mmexp.metrics.vqa_answers.answer_scores`), as bottom-up and MCAN train; a question
with no answer in the vocabulary keeps an all-zero target (it trains towards no answer, and
scores 0 at evaluation as in the official evaluation); how many there are is logged per
split and kept in :attr:`VQAv2DataModule.out_of_vocabulary`.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from mmexp.data.datamodule import ManifestDataModule
from mmexp.data.dataset import ManifestDataset, MultimodalCollator
from mmexp.data.manifest import Record
from mmexp.data.sets.published import check_counts, require_file
from mmexp.metrics.vqa_answers import ANSWER_TYPES, answer_scores, normalize_answer

log = logging.getLogger(__name__)

NAME = "VQA v2"
OBTAIN = (
    "Download the questions, annotations and COCO 2014 images from https://visualqa.org/"
    "download.html; extract them so that the folder holds v2_OpenEnded_mscoco_"
    "{train2014,val2014}_questions.json, v2_mscoco_{train2014,val2014}_annotations.json, "
    "train2014/ and val2014/ (data.protocol=karpathy also reads dataset_coco.json, from "
    "Karpathy's caption splits)."
)
PUBLISHED_COUNTS = {
    "train2014 questions": 443757,
    "val2014 questions": 214354,
    "train2014 images": 82783,
    "val2014 images": 40504,
}
PROTOCOLS = ("official", "karpathy")
OFFICIAL_SPLITS = {"train": "train2014", "val": "val2014", "test": "val2014"}
# Released without annotations: scored only by the challenge server.
UNANNOTATED = ("test2015", "test-dev2015")
KARPATHY_STAGES = {"train": "train", "restval": "train", "val": "val", "test": "test"}


class SoftTargetCollator(MultimodalCollator):
    """Batches whose ``label`` is ``[B, K]`` per-answer scores, from sparse targets."""

    def __init__(self, processors: Any, num_answers: int) -> None:
        super().__init__(processors)
        self.num_answers = num_answers

    def collate_labels(self, labels: Sequence[Any]) -> torch.Tensor:
        """Dense scores from each sample's ``(answer indices, scores)``."""
        dense = torch.zeros(len(labels), self.num_answers)
        for row, (indices, scores) in enumerate(labels):
            dense[row, list(indices)] = torch.tensor(scores, dtype=torch.float32)
        return dense


class VQAv2DataModule(ManifestDataModule):
    """COCO images and questions, with the soft answer scores of the ten human answers.

    Args:
        root: Folder of the extracted release (module docstring).
        protocol: ``official`` or ``karpathy`` (module docstring).
        test_split: ``None``: the protocol's; ``test-dev2015`` / ``test2015`` are refused,
            since their annotations are not released.
        num_answers: Size of the answer vocabulary.
        karpathy_file: Karpathy's ``dataset_coco.json``, relative to ``root``.
        check_counts: Compare question and image counts with the release: ``warn``,
            ``raise`` or ``off``.
        **loader_options: Passed to :class:`ManifestDataModule`.

    Raises:
        ValueError: An unknown protocol, a split without annotations, or ``num_answers < 1``.
    """

    def __init__(
        self,
        root: str | Path,
        protocol: str = "official",
        test_split: str | None = None,
        num_answers: int = 3129,
        karpathy_file: str = "dataset_coco.json",
        check_counts: str = "warn",
        **loader_options: Any,
    ) -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"data.protocol must be one of {PROTOCOLS}, got {protocol!r}")
        if test_split in UNANNOTATED:
            raise ValueError(
                f"data.test_split={test_split}: VQA v2 releases no annotations for "
                f"{', '.join(UNANNOTATED)}; they are scored only by the challenge server "
                "(EvalAI). Test on val2014 (data.protocol=official) or the Karpathy test "
                "images (data.protocol=karpathy)."
            )
        if test_split not in (None, *OFFICIAL_SPLITS.values()):
            raise ValueError(f"data.test_split must be null or train2014/val2014, got {test_split}")
        if num_answers < 1:
            raise ValueError(f"data.num_answers must be at least 1, got {num_answers}")
        loader_options.setdefault("modalities", ["image", "text"])
        super().__init__(
            root=root,
            columns={"image": "image", "text": "question"},
            # Screening wants a label in every row; the targets come from the ten answers,
            # and a normalised answer may be empty ("a" alone), so the answer type stands in.
            label_column="answer_type",
            index_columns={"answer_type": ANSWER_TYPES},
            **loader_options,
        )
        self.protocol = protocol
        self.test_split = test_split
        self.num_answers = num_answers
        self.karpathy_file = karpathy_file
        self.count_check = check_counts
        #: Questions per stage with no human answer in the vocabulary (scored 0).
        self.out_of_vocabulary: dict[str, int] = {}

    def files(self, split: str) -> tuple[Path, Path]:
        """The questions and annotations files of an official split."""
        return (
            self.root / f"v2_OpenEnded_mscoco_{split}_questions.json",
            self.root / f"v2_mscoco_{split}_annotations.json",
        )

    def source_of(self, stage: str) -> Path:
        """The annotations file the rows of ``stage`` come from (val2014's for karpathy)."""
        if self.protocol == "karpathy":
            return self.files("train2014" if stage == "train" else "val2014")[1]
        split = self.test_split if stage == "test" and self.test_split else OFFICIAL_SPLITS[stage]
        return self.files(split)[1]

    def _read_split(self, split: str) -> list[Record]:
        questions_path, annotations_path = self.files(split)
        questions = json.loads(require_file(questions_path, NAME, OBTAIN).read_text())
        annotations = json.loads(require_file(annotations_path, NAME, OBTAIN).read_text())
        by_id = {a["question_id"]: a for a in annotations["annotations"]}
        rows: list[Record] = []
        unannotated = []
        for question in questions["questions"]:
            annotation = by_id.get(question["question_id"])
            if annotation is None:
                unannotated.append(question["question_id"])
                continue
            image_id = int(question["image_id"])
            rows.append(
                {
                    "id": question["question_id"],
                    "image_id": image_id,
                    "image": f"{split}/COCO_{split}_{image_id:012d}.jpg",
                    "question": question["question"],
                    "answer": normalize_answer(annotation["multiple_choice_answer"]),
                    "answers": [a["answer"] for a in annotation["answers"]],
                    "answer_type": annotation["answer_type"],
                    "question_type": annotation["question_type"],
                }
            )
        if unannotated:
            raise ValueError(
                f"{annotations_path}: no annotation for {len(unannotated)} question(s) of "
                f"{questions_path.name}, e.g. {unannotated[:5]}; the two files must come "
                "from the same release"
            )
        check_counts(
            NAME,
            {
                f"{split} questions": len(rows),
                f"{split} images": len({r["image_id"] for r in rows}),
            },
            PUBLISHED_COUNTS,
            self.count_check,
        )
        return rows

    def _karpathy_stages(self) -> dict[int, str]:
        path = require_file(self.root / self.karpathy_file, NAME, OBTAIN)
        images = json.loads(path.read_text())["images"]
        return {int(image["cocoid"]): KARPATHY_STAGES[image["split"]] for image in images}

    def read_splits(self) -> dict[str, list[Record]]:
        """The questions of each stage, read from the protocol's files."""
        if self.protocol == "official":
            read = {
                split: self._read_split(split) for split in dict.fromkeys(OFFICIAL_SPLITS.values())
            }
            splits = {stage: read[split] for stage, split in OFFICIAL_SPLITS.items()}
            if self.test_split:
                splits["test"] = read[self.test_split]
            return splits
        stage_of = self._karpathy_stages()
        splits: dict[str, list[Record]] = {"train": [], "val": [], "test": []}
        dropped = 0
        for split in ("train2014", "val2014"):
            for row in self._read_split(split):
                stage = stage_of.get(row["image_id"])
                if stage is None:
                    dropped += 1
                else:
                    splits[stage].append(row)
        if dropped:
            log.warning(
                "%s: %d questions on images outside %s left out", NAME, dropped, self.karpathy_file
            )
        return splits

    @cached_property
    def vocabulary(self) -> list[str]:
        """The answer vocabulary: the most frequent normalised training answers."""
        counts = Counter(row["answer"] for row in self._raw_splits["train"] if row["answer"])
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        return [answer for answer, _ in ranked[: self.num_answers]]

    @property
    def meta(self) -> dict[str, Any]:
        """The answer vocabulary as the class names."""
        return {"label_names": self.vocabulary}

    def known_labels(self) -> set[str] | None:
        """Any answer: questions outside the vocabulary are kept (and score 0)."""
        return None

    @property
    def label_report(self) -> dict[str, dict[str, Any]]:
        """None: answers outside the vocabulary are expected, counted per split instead."""
        return {}

    def targets(self, stage: str, rows: Sequence[Record]) -> list[tuple[list[int], list[float]]]:
        """Each row's ``(vocabulary indices, official scores)``; counts those with none."""
        index = {answer: i for i, answer in enumerate(self.vocabulary)}
        targets = []
        for row in rows:
            scored = [(index[a], s) for a, s in answer_scores(row["answers"]).items() if a in index]
            scored.sort()
            targets.append(([i for i, _ in scored], [s for _, s in scored]))
        missing = sum(not indices for indices, _ in targets)
        self.out_of_vocabulary[stage] = missing
        log.info(
            "%s %s: %d of %d questions (%.1f%%) have no answer among the %d of the vocabulary; "
            "they score 0",
            NAME,
            stage,
            missing,
            len(rows),
            100 * missing / max(len(rows), 1),
            len(self.vocabulary),
        )
        return targets

    def dataset(self, stage: str, processed: bool = True) -> ManifestDataset:
        """The questions of ``stage`` with soft targets and answer types."""
        rows = self.stage_rows(stage)  # a training subset keeps each row whole
        processors = self.stage_processors(stage, processed)
        return ManifestDataset(
            rows,
            self.targets(stage, rows),
            self.root,
            self.columns,
            processors,
            self.source_of(stage),
            skip_unreadable=self.on_bad_sample == "skip",
            extras=self.index_values(stage, rows),
        )

    def collator(self, stage: str) -> MultimodalCollator:
        """Batches with ``[B, K]`` soft targets."""
        processors = self.processors["train" if stage == "train" else "eval"]
        return SoftTargetCollator(processors, len(self.vocabulary))
