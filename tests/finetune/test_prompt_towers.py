"""Prompt adapters: each finds the token lookup of its tower, before anything mixes positions."""

import pytest
import torch

from mmexp.encoders.hf_clip import HFClipTextEncoder
from mmexp.encoders.hf_text import HFTextEncoder
from mmexp.encoders.image_cnn import SmallConvEncoder
from mmexp.encoders.open_clip_towers import OpenClipTextEncoder
from mmexp.encoders.text_transformer import SmallTextTransformer
from mmexp.finetune.prompt_towers import (
    NoPromptAdapterError,
    check_text_tower,
    substituted_embeddings,
    token_embedding,
)
from tests.helpers.tiny_models import write_tiny_bert
from tests.helpers.tiny_prompt_clip import write_tiny_hf_clip, write_tiny_open_clip

TEXTS = ["a photo of a circle.", "a big red square on the left", "triangle"]


@pytest.fixture(scope="module")
def towers(tmp_path_factory):
    """One text tower per adapter, in eval mode."""
    folder = tmp_path_factory.mktemp("prompt_towers")
    torch.manual_seed(0)
    built = {
        "mmexp": SmallTextTransformer(out_dim=32, width=32, depth=1, heads=2, max_length=48),
        "open_clip": OpenClipTextEncoder(out_dim=32, **write_tiny_open_clip(folder / "oc")),
        "hf_clip": HFClipTextEncoder(
            out_dim=32, name_or_path=str(write_tiny_hf_clip(folder / "hf"))
        ),
    }
    return {name: tower.eval() for name, tower in built.items()}


@pytest.mark.parametrize("kind", ["mmexp", "open_clip", "hf_clip"])
def test_replacing_a_position_is_the_tower_on_the_other_token(towers, kind):
    # The embedding of "circle" put where "square" stands gives what the tower gives on the
    # text with "circle" there: the adapter's module is the per-token lookup that every later
    # layer (positions, attention, pooling, projection) reads.
    tower = towers[kind]
    processor = tower.processor(False)
    inputs = processor.collate(["a photo of a square."])
    swapped = processor.collate(["a photo of a circle."])
    differs = (inputs["input_ids"] != swapped["input_ids"]).nonzero()[:, 1]
    assert len(differs) > 0
    embedding = token_embedding(tower)
    replacement = embedding(swapped["input_ids"])

    def replace(embedded):
        out = embedded.clone()
        out[:, differs] = replacement[:, differs]
        return out

    with torch.no_grad():
        with substituted_embeddings(embedding, replace):
            got = tower(inputs).pooled
        expected = tower(swapped).pooled
        unchanged = tower(inputs).pooled  # the hook is gone
    torch.testing.assert_close(got, expected)
    assert not torch.allclose(unchanged, expected)


@pytest.mark.parametrize("kind", ["mmexp", "open_clip", "hf_clip"])
def test_the_identity_replacement_changes_nothing(towers, kind):
    tower = towers[kind]
    inputs = tower.processor(False).collate(TEXTS)
    with torch.no_grad():
        with substituted_embeddings(token_embedding(tower), lambda embedded: embedded):
            got = tower(inputs).pooled
        torch.testing.assert_close(got, tower(inputs).pooled, rtol=0, atol=0)


def test_the_hook_is_removed_after_an_error(towers):
    tower = towers["mmexp"]
    embedding = check_text_tower(tower)
    inputs = tower.processor(False).collate(TEXTS)
    with torch.no_grad():
        before = tower(inputs).pooled
        with (
            pytest.raises(ValueError, match="cannot replace the token embeddings"),
            substituted_embeddings(embedding, lambda embedded: embedded[:, :1]),
        ):
            tower(inputs)
        # A hook left behind would raise again.
        torch.testing.assert_close(tower(inputs).pooled, before, rtol=0, atol=0)


def test_towers_without_an_adapter_are_named(tmp_path):
    bert = HFTextEncoder(out_dim=32, name_or_path=str(write_tiny_bert(tmp_path / "bert")))
    with pytest.raises(NoPromptAdapterError, match="no adapter for HFTextEncoder.*OpenClipText"):
        check_text_tower(bert)
    with pytest.raises(NoPromptAdapterError, match="a image encoder, not a text tower"):
        check_text_tower(SmallConvEncoder(out_dim=32, channels=[8]))


class RenamedKeys:
    """A processor collating to other key names than the Hugging Face layout."""

    def __call__(self, raw: str) -> str:
        return raw

    def collate(self, items):
        return {"ids": torch.zeros(len(items), 4, dtype=torch.long), "mask": None}


class OtherLayout(SmallTextTransformer):
    def processor(self, train: bool) -> RenamedKeys:
        return RenamedKeys()


def test_a_processor_without_ids_and_mask_is_named():
    tower = OtherLayout(out_dim=32, width=32, depth=1, heads=2)
    with pytest.raises(NoPromptAdapterError, match=r"collates \['ids', 'mask'\], not"):
        check_text_tower(tower)
