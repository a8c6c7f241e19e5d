"""A tiny untrained image-text classifier and its analysis set, built in the test process."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from mmexp.analysis.data import AnalysisSet, encode_test_set
from mmexp.analysis.samples import RawSamples
from mmexp.data.dataset import MultimodalCollator
from mmexp.encoders.image_cnn import SmallConvEncoder
from mmexp.encoders.text_transformer import SmallTextTransformer
from mmexp.lit.classifier import MultimodalClassifier
from tests.helpers.fusion import CONF, DIM, build

CLASSES = ["left", "right", "none"]
SIDE = 16


def caption(index: int) -> str:
    return f"sample {index}: a bright square on the {CLASSES[index % 3]}"


def picture(index: int) -> Image.Image:
    """A dark noisy image with a bright square on the left, the right or nowhere."""
    rng = np.random.default_rng(index)
    pixels = rng.integers(0, 40, size=(SIDE, SIDE, 3)).astype(np.uint8)
    where = index % 3
    if where < 2:
        column = 2 if where == 0 else SIDE - 7
        pixels[5:10, column : column + 5] = (230, 40, 40)
    return Image.fromarray(pixels)


class ProcessedSamples(Dataset):
    """Samples ``{index, label, image, text}`` with the encoders' evaluation processors."""

    def __init__(self, count: int, processors: dict) -> None:
        self.count = count
        self.processors = processors

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> dict:
        raw = {"image": picture(index), "text": caption(index)}
        sample = {"index": index, "label": index % 3}
        sample.update({m: p(raw[m]) for m, p in self.processors.items()})
        return sample


def tiny_classifier(fusion: str, modalities=("image", "text"), **options) -> MultimodalClassifier:
    """Small CNN and text encoders, the ``conf/fusion/<fusion>.yaml`` strategy, a linear head."""
    torch.manual_seed(0)
    encoders: dict[str, nn.Module] = {}
    if "image" in modalities:
        encoders["image"] = SmallConvEncoder(out_dim=DIM, channels=(8, 16), image_size=SIDE)
    if "text" in modalities:
        encoders["text"] = SmallTextTransformer(
            out_dim=DIM, width=16, depth=1, heads=2, max_length=48
        )
    strategy = build(CONF / f"{fusion}.yaml", modalities, **options)
    return MultimodalClassifier(
        encoders=encoders,
        fusion=strategy,
        head=nn.Linear(strategy.out_dim, len(CLASSES)),
        loss=nn.CrossEntropyLoss(),
        num_classes=len(CLASSES),
        optimizer=partial(torch.optim.SGD, lr=0.1),
        confusion_matrix=False,
    ).eval()


class SamplesDataModule:
    """What :func:`~mmexp.analysis.run.run_analyses` reads of a data module, over the samples."""

    missing = None
    label_names = CLASSES

    def __init__(self, module: MultimodalClassifier, count: int) -> None:
        self.processors = {m: encoder.processor(False) for m, encoder in module.encoders.items()}
        self.count = count

    def setup(self, stage: str) -> None:
        """Nothing to read."""

    def test_dataloader(self) -> DataLoader:
        """Batches of four samples."""
        return DataLoader(
            ProcessedSamples(self.count, self.processors),
            batch_size=4,
            collate_fn=MultimodalCollator(self.processors),
        )


def analysis_set(module: MultimodalClassifier, folder: Path, count: int = 6) -> AnalysisSet:
    """The module's analysis set of ``count`` samples, their raw samples and ``folder``."""
    processors = {m: encoder.processor(False) for m, encoder in module.encoders.items()}
    loader = DataLoader(
        ProcessedSamples(count, processors),
        batch_size=4,
        collate_fn=MultimodalCollator(processors),
    )
    analysis = encode_test_set(module, loader, count, None, 0, 64, torch.device("cpu"))
    analysis.samples = RawSamples.of_loader(loader, CLASSES)
    analysis.output_dir = folder
    return analysis
