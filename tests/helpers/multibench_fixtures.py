"""A few samples of MultiBench's array releases, written in their formats and shapes."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

AVMNIST_COUNTS = {"train": 12, "test": 6}
# Folder of the digits per copy: MultiBench's avmnist.tar.gz, the one MFAS's loader reads.
AVMNIST_IMAGE_DIRS = {"multibench": "image", "mfas": "images"}


def write_avmnist(
    root: Path,
    counts: dict[str, int] = AVMNIST_COUNTS,
    seed: int = 0,
    layout: str = "multibench",
) -> Path:
    """``image/<part>_data.npy`` [N, 784], ``audio/<part>_data.npy`` [N, 112, 112] (values
    0..255, float32) and ``<part>_labels.npy`` [N], as in MultiBench's ``avmnist.tar.gz``;
    ``layout="mfas"`` puts the digits in ``images/``, as in the copy MFAS reads."""
    rng = np.random.default_rng(seed)
    image_dir = AVMNIST_IMAGE_DIRS[layout]
    for folder in (image_dir, "audio"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for part, count in counts.items():
        labels = np.arange(count) % 10
        images = rng.uniform(0, 40, (count, 28, 28)).astype(np.float32)
        spectrograms = rng.uniform(0, 40, (count, 112, 112)).astype(np.float32)
        for i, digit in enumerate(labels):
            # The digit is where a bright stripe is, in both modalities: there is a signal.
            images[i, 2 * digit + 4 : 2 * digit + 7, 6:22] = 255.0
            spectrograms[i, 10 * digit + 5 : 10 * digit + 12, :] = 230.0
        np.save(root / image_dir / f"{part}_data.npy", images.reshape(count, 784))
        np.save(root / "audio" / f"{part}_data.npy", spectrograms)
        np.save(root / f"{part}_labels.npy", labels.astype(np.int64))
    return root


AFFECT_DIMS = {
    "mosi": {"text": 300, "audio": 5, "vision": 20},
    "mosei": {"text": 300, "audio": 74, "vision": 35},
}
AFFECT_FILES = {"mosi": "mosi_data.pkl", "mosei": "mosei_senti_data.pkl"}
# MultiBench's own MOSI pickle (datasets/affect/get_raw_data.py): FACET 4.2, COVAREP, GloVe.
MOSI_RAW_FILE = "mosi_raw.pkl"
MOSI_RAW_DIMS = {"text": 300, "audio": 74, "vision": 35}
AFFECT_COUNTS = {"train": 24, "valid": 8, "test": 8}
SEQ_LEN = 50


def affect_split(
    dataset: str,
    count: int,
    rng: np.random.Generator,
    empty_text: int | None = None,
    release: str = "mult",
) -> dict[str, np.ndarray]:
    """One split: front-padded ``[N, 50, F]`` sequences, ``[N, 1, 1]`` scores, ids.

    The score is a function of the features (the mean over real steps of the first audio
    and the first vision feature, squashed into [-3, 3]), so a model can learn it; a few
    audio values are ``-inf`` as in the COVAREP features. ``empty_text`` makes that segment
    wordless (all-zero text), which MultiBench's loader drops. ``release="multibench"``
    writes MOSI as ``mosi_raw.pkl`` holds it: widths 300/74/35, float64 arrays (its
    ``lpad`` pads with float64 zeros) and ids as a list of ``video[segment]`` strings.
    """
    raw = release == "multibench"
    dims = MOSI_RAW_DIMS if raw else AFFECT_DIMS[dataset]
    lengths = rng.integers(4, SEQ_LEN + 1, count)
    part: dict[str, np.ndarray] = {}
    for modality, width in dims.items():
        values = np.zeros((count, SEQ_LEN, width), dtype=np.float64 if raw else np.float32)
        for i, length in enumerate(lengths):
            values[i, SEQ_LEN - length :] = rng.normal(0, 1, (length, width))
        part[modality] = values
    signal = np.array(
        [
            part["audio"][i, SEQ_LEN - n :, 0].mean() + part["vision"][i, SEQ_LEN - n :, 0].mean()
            for i, n in enumerate(lengths)
        ]
    )
    scores = np.round(3 * np.tanh(2 * signal) * 3) / 3  # averages of three annotators
    part["labels"] = scores.astype(np.float64 if raw else np.float32).reshape(count, 1, 1)
    part["audio"][:3, -1, -1] = -np.inf
    if empty_text is not None:
        part["text"][empty_text] = 0.0
    if raw:
        part["id"] = [f"video{i // 4:03d}[{i % 4}]" for i in range(count)]
        return {key: part[key] for key in ("vision", "audio", "text", "labels", "id")}
    ids = [(f"video{i // 4:03d}", str(i % 4), str(i % 4 + 1)) for i in range(count)]
    # MOSI's ids are byte strings (MulT decodes them), MOSEI's are text.
    part["id"] = np.array(ids, dtype="S" if dataset == "mosi" else str)
    return part


def write_affect_pickle(
    root: Path,
    dataset: str = "mosi",
    counts: dict[str, int] = AFFECT_COUNTS,
    seed: int = 0,
    empty_text: int | None = 5,
    release: str = "mult",
) -> Path:
    """``mosi_data.pkl`` / ``mosei_senti_data.pkl``: ``{train|valid|test: {vision, audio,
    text, labels, id}}`` pickled as MulT and MultiBench distribute it; ``release=
    "multibench"`` writes MultiBench's ``mosi_raw.pkl`` instead (MOSI only)."""
    if release == "multibench" and dataset != "mosi":
        raise ValueError("MultiBench's own pickle is MOSI's (mosi_raw.pkl)")
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    data = {
        split: affect_split(dataset, count, rng, empty_text if split == "train" else None, release)
        for split, count in counts.items()
    }
    name = MOSI_RAW_FILE if release == "multibench" else AFFECT_FILES[dataset]
    with (root / name).open("wb") as handle:
        pickle.dump(data, handle)
    return root
