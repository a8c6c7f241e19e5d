"""Modality encoders: each returns tokens, a padding mask and a pooled vector."""

from mmexp.encoders.audio_logmel import LogMelCNNEncoder
from mmexp.encoders.base import EncoderOutput, ModalityEncoder, masked_mean
from mmexp.encoders.image_cnn import SmallConvEncoder
from mmexp.encoders.text_transformer import SmallTextTransformer

__all__ = [
    "EncoderOutput",
    "LogMelCNNEncoder",
    "ModalityEncoder",
    "SmallConvEncoder",
    "SmallTextTransformer",
    "masked_mean",
]
