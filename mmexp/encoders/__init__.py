"""Modality encoders: each returns tokens, a padding mask and a pooled vector."""

from mmexp.encoders.audio_logmel import LogMelCNNEncoder
from mmexp.encoders.audio_sequence import LogMelConv1dEncoder, LogMelLSTMEncoder
from mmexp.encoders.base import EncoderOutput, ModalityEncoder, masked_mean
from mmexp.encoders.clip_towers import ClipTowerEncoder, TowerWidthError
from mmexp.encoders.freezing import BackboneEncoder, Trainability, count_parameters
from mmexp.encoders.hf_audio import HFAudioEncoder
from mmexp.encoders.hf_clip import HFClipImageEncoder, HFClipTextEncoder
from mmexp.encoders.hf_text import HFTextEncoder, minilm_encoder
from mmexp.encoders.hf_video import HFVideoEncoder
from mmexp.encoders.image_cnn import SmallConvEncoder
from mmexp.encoders.open_clip_towers import OpenClipImageEncoder, OpenClipTextEncoder
from mmexp.encoders.text_recurrent import GRUTextEncoder, LSTMTextEncoder
from mmexp.encoders.text_transformer import SmallTextTransformer
from mmexp.encoders.timm_image import TimmImageEncoder
from mmexp.encoders.video import FrameVideoEncoder

__all__ = [
    "BackboneEncoder",
    "ClipTowerEncoder",
    "EncoderOutput",
    "FrameVideoEncoder",
    "GRUTextEncoder",
    "HFAudioEncoder",
    "HFClipImageEncoder",
    "HFClipTextEncoder",
    "HFTextEncoder",
    "HFVideoEncoder",
    "LSTMTextEncoder",
    "LogMelCNNEncoder",
    "LogMelConv1dEncoder",
    "LogMelLSTMEncoder",
    "ModalityEncoder",
    "OpenClipImageEncoder",
    "OpenClipTextEncoder",
    "SmallConvEncoder",
    "SmallTextTransformer",
    "TimmImageEncoder",
    "TowerWidthError",
    "Trainability",
    "count_parameters",
    "masked_mean",
    "minilm_encoder",
]
