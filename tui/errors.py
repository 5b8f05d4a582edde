"""Errors of the application layer (config, audio devices, journals, the CLI).

Like the engine's :class:`asr.AsrError`, each message names the problem and the fix in one line;
the CLI prints it and exits non-zero, never with a traceback.
"""

from __future__ import annotations


class VoxcapError(Exception):
    """Base class of errors the application raises on purpose."""


class SettingsError(VoxcapError, ValueError):
    """An invalid configuration value: the message names the key and the allowed values."""


class AudioSourceError(VoxcapError):
    """An audio input that cannot be opened or read (device, file, stdin)."""


class JournalError(VoxcapError):
    """A session journal that cannot be written, read or exported."""
