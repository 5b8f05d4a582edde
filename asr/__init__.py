"""voxcap's speech engine: Voxtral Mini 4B Realtime streaming inference in PyTorch.

Headless by design: nothing here imports a UI or audio-device library.

    import asr
    model = asr.load_model(path, device="cpu", dtype=torch.float32)
    session = model.stream(delay_ms=480)
    tokens = session.feed(samples, sample_rate=16000)
    tokens += session.finish()
"""

from asr.errors import (
    AsrError,
    AudioError,
    ConfigError,
    DelayError,
    ModelNotFound,
    SessionError,
    TokenizerError,
    UnsupportedFormat,
    WeightsError,
)
from asr.loader import load_model
from asr.model import ModelInfo
from asr.runtime import Model
from asr.stream import SessionStats, StreamEvent, StreamingSession
from asr.tokens import EOS_ID, STREAMING_PAD_ID, STREAMING_WORD_ID, Token

__all__ = [
    "EOS_ID",
    "STREAMING_PAD_ID",
    "STREAMING_WORD_ID",
    "AsrError",
    "AudioError",
    "ConfigError",
    "DelayError",
    "Model",
    "ModelInfo",
    "ModelNotFound",
    "SessionError",
    "SessionStats",
    "StreamEvent",
    "StreamingSession",
    "Token",
    "TokenizerError",
    "UnsupportedFormat",
    "WeightsError",
    "load_model",
]
