"""CREMA-D, read from its release layout: acted sentences, audio and video, 6 emotions.

Cao et al., "CREMA-D: Crowd-sourced Emotional Multimodal Actors Dataset", IEEE
Transactions on Affective Computing 2014. 91 actors speak 12 sentences in six emotions;
the release holds one clip per take as ``AudioWAV/<clip>.wav`` (16 kHz mono) and
``VideoFlash/<clip>.flv`` (some mirrors also ``VideoMP4/<clip>.mp4``), the clip name
``<actor>_<sentence>_<emotion>_<level>`` (``1001_DFA_ANG_XX``) giving the label. The label
is the emotion the actor was asked to act, as in the modality-imbalance papers.

The split is that of Peng et al., "Balanced Multimodal Learning via On-the-fly Gradient
Modulation" (CVPR 2022): 744 test clips listed in ``splits/cremad_peng2022_test.txt`` (from
their repository) and the other 6,698 for training. They have no validation split and
select on the test clips; here a validation split of ``val_size`` clips is held out of
their training clips, per emotion in proportion, with ``val_seed``, so that model selection
does not see the test clips. Results are reported as accuracy on the 744 test clips.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from mmexp.data.datamodule import ManifestDataModule
from mmexp.data.manifest import Record
from mmexp.data.sets.food101 import stratified_holdout
from mmexp.data.sets.published import check_counts

NAME = "CREMA-D"
OBTAIN = (
    "It is distributed by its authors (https://github.com/CheyneyComputerScience/CREMA-D; "
    "the media files are in Git LFS); the folder must hold AudioWAV/ and VideoFlash/."
)
# The release's 7,442 clips: Peng et al.'s 6,698 training and 744 test clips.
PUBLISHED_COUNTS = {"train": 6698, "test": 744}
#: Emotion codes of the clip names, in label order (Peng et al.'s class indices).
EMOTIONS = ("NEU", "HAP", "SAD", "FEA", "DIS", "ANG")
LABEL_NAMES = ("neutral", "happy", "sad", "fear", "disgust", "anger")
VIDEO_FOLDERS = {"VideoFlash": ".flv", "VideoMP4": ".mp4"}
LFS_POINTER = b"version https://git-lfs"


def peng2022_test_clips() -> set[str]:
    """The 744 test clips of Peng et al. (2022)."""
    text = resources.files("mmexp.data.sets").joinpath("splits/cremad_peng2022_test.txt")
    lines = text.read_text(encoding="utf-8").splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


def emotion_of(clip: str) -> str:
    """The label name of a clip from its name's third field.

    Raises:
        ValueError: The name does not have the release's four fields or a known emotion.
    """
    fields = clip.split("_")
    if len(fields) != 4 or fields[2] not in EMOTIONS:
        raise ValueError(
            f"{NAME}: clip name {clip!r} is not <actor>_<sentence>_<emotion>_<level> with an "
            f"emotion among {EMOTIONS}"
        )
    return LABEL_NAMES[EMOTIONS.index(fields[2])]


class CremaDDataModule(ManifestDataModule):
    """CREMA-D clips: ``audio`` (the WAV) and ``video`` (the FLV or MP4), 6 emotions.

    Args:
        root: Folder of the release (``AudioWAV/``, ``VideoFlash/``).
        video_folder: ``VideoFlash`` (the release's FLV files) or ``VideoMP4``.
        val_size: Training clips held out for validation, per emotion in proportion.
        val_seed: Seed of the held-out draw (fixed across training seeds).
        check_counts: Compare the clips found with the release: ``warn``, ``raise``, ``off``.
        **loader_options: Passed to :class:`ManifestDataModule`.

    Raises:
        ValueError: An unknown ``video_folder``.
    """

    def __init__(
        self,
        root: str | Path,
        video_folder: str = "VideoFlash",
        val_size: int = 670,
        val_seed: int = 0,
        check_counts: str = "warn",
        **loader_options: Any,
    ) -> None:
        if video_folder not in VIDEO_FOLDERS:
            raise ValueError(
                f"data.video_folder={video_folder!r}: expected one of {sorted(VIDEO_FOLDERS)}"
            )
        loader_options.setdefault("modalities", ["audio", "video"])
        super().__init__(
            root=root,
            columns={"audio": "audio", "video": "video"},
            label_column="label",
            **loader_options,
        )
        self.video_folder = video_folder
        self.val_size = val_size
        self.val_seed = val_seed
        self.count_check = check_counts

    @property
    def meta(self) -> dict[str, Any]:
        """The six emotions."""
        return {"label_names": list(LABEL_NAMES)}

    def source_of(self, stage: str) -> Path:
        """The audio folder, which lists the clips."""
        return self.root / "AudioWAV"

    def _clips(self) -> list[str]:
        """Clip names of the audio folder, checked against the video folder."""
        audio = self.root / "AudioWAV"
        video = self.root / self.video_folder
        for folder in (audio, video):
            if not folder.is_dir():
                raise FileNotFoundError(
                    f"{NAME}: missing folder {folder}. {OBTAIN} Point data.root at it."
                )
        files = sorted(audio.glob("*.wav"))
        if not files:
            raise FileNotFoundError(f"{NAME}: no .wav files in {audio}. {OBTAIN}")
        # a clone without `git lfs pull` holds ~130-byte pointer files, not audio
        with files[0].open("rb") as handle:
            if handle.read(len(LFS_POINTER)) == LFS_POINTER:
                raise FileNotFoundError(
                    f"{NAME}: {files[0]} is a Git LFS pointer, not audio: run `git lfs pull` "
                    "in the clone to fetch the media files"
                )
        return [path.stem for path in files]

    def _record(self, clip: str) -> Record:
        suffix = VIDEO_FOLDERS[self.video_folder]
        return {
            "id": clip,
            "audio": f"AudioWAV/{clip}.wav",
            "video": f"{self.video_folder}/{clip}{suffix}",
            "label": emotion_of(clip),
        }

    def read_splits(self) -> dict[str, list[Record]]:
        """Peng et al.'s test clips, and their training clips less a validation holdout."""
        test_clips = peng2022_test_clips()
        rows = [self._record(clip) for clip in self._clips()]
        test = [r for r in rows if r["id"] in test_clips]
        train = [r for r in rows if r["id"] not in test_clips]
        check_counts(
            NAME, {"train": len(train), "test": len(test)}, PUBLISHED_COUNTS, self.count_check
        )
        held_out = set(
            stratified_holdout(
                [r["label"] for r in train], min(self.val_size, len(train) // 2), self.val_seed
            )
        )
        return {
            "train": [r for i, r in enumerate(train) if i not in held_out],
            "val": [train[i] for i in sorted(held_out)],
            "test": test,
        }
