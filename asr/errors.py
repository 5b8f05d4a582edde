"""The engine's error hierarchy.

Every error the engine raises on bad input derives from :class:`AsrError`, and its message names
the problem (the file, tensor, key or value) and says what to do about it, in one line. Callers
(the CLI, the TUI) print ``str(error)`` and never a traceback.
"""

from __future__ import annotations


class AsrError(Exception):
    """Base class of every error the engine raises on purpose."""


class AudioError(AsrError, ValueError):
    """Audio that cannot be transcribed: wrong shape, dtype, non-finite values, bad sample rate."""


class DelayError(AsrError, ValueError):
    """A transcription delay outside 80..2400 ms or not a multiple of 80 ms."""


class ConfigError(AsrError, ValueError):
    """A model configuration (config.json, params.json, GGUF metadata) that is missing or inconsistent."""


class WeightsError(AsrError):
    """A weight file that is unreadable, truncated, or does not match the configuration."""


class UnsupportedFormat(WeightsError):
    """A file or tensor type the engine does not know how to read."""


class TokenizerError(AsrError):
    """A tokenizer file that is missing, malformed, or inconsistent with the model's vocabulary."""


class ModelNotFound(AsrError, FileNotFoundError):
    """No model at the given path or name."""


class SessionError(AsrError, RuntimeError):
    """A streaming session used in a way it does not allow (for example feeding after finish())."""
