"""Text decoders for generation objectives: the contract, built-in and Hugging Face decoders."""

from mmexp.decoders.base import CaptionDecoder, DecodingOptions, Memory, SpecialIds
from mmexp.decoders.hf_causal import HFCrossAttentionDecoder, HFPrefixDecoder
from mmexp.decoders.tokenizers import (
    CaptionTargetProcessor,
    bundled_minilm_tokenizer,
    checked_special_tokens,
    load_tokenizer,
)
from mmexp.decoders.transformer import TransformerCaptionDecoder

__all__ = [
    "CaptionDecoder",
    "CaptionTargetProcessor",
    "DecodingOptions",
    "HFCrossAttentionDecoder",
    "HFPrefixDecoder",
    "Memory",
    "SpecialIds",
    "TransformerCaptionDecoder",
    "bundled_minilm_tokenizer",
    "checked_special_tokens",
    "load_tokenizer",
]
