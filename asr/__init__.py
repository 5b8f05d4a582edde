"""voxcap's speech engine: Voxtral Mini 4B Realtime streaming inference in PyTorch.

Headless by design: nothing here imports a UI or audio-device library.

    import asr
    model = asr.load_model(path, device="cpu", dtype=torch.float32)
    session = model.stream(delay_ms=480)
    tokens = session.feed(samples, sample_rate=16000)
    tokens += session.finish()
"""

from typing import TYPE_CHECKING

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
from asr.tokens import EOS_ID, STREAMING_PAD_ID, STREAMING_WORD_ID, Token

# The rest pulls in torch (seconds to import); load it on first use so that `voxcap sessions`
# and other commands that never touch the model start at once.
_LAZY = {
    "load_model": "asr.loader",
    "Model": "asr.runtime",
    "ModelInfo": "asr.model",
    "SessionStats": "asr.stream",
    "StreamEvent": "asr.stream",
    "StreamingSession": "asr.stream",
}

if TYPE_CHECKING:
    from asr.loader import load_model
    from asr.model import ModelInfo
    from asr.runtime import Model
    from asr.stream import SessionStats, StreamEvent, StreamingSession


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'asr' has no attribute {name!r}")


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
