"""Audio inputs for voxcap: microphone, system audio, both mixed, a file, stdin.

Every source yields :class:`AudioChunk` s of 16 kHz mono float32 on the asyncio loop::

    source = open_source("file", path=Path("talk.wav"), realtime=True)
    await source.start()                 # AudioSourceError if it cannot open
    async for chunk in source:           # ends at end of input or after stop();
        ...                              # raises AudioSourceError if the input fails
    await source.stop()

Nothing here imports sounddevice until a microphone is used, so file and stdin input work
without PortAudio.
"""

from __future__ import annotations

from pathlib import Path

from tui.errors import SettingsError
from tui.sources.base import DEFAULT_MAX_QUEUE_S, DEVICE_HINT, AudioChunk, AudioSource
from tui.sources.file import FileSource, read_file_16k
from tui.sources.microphone import (
    InputDevice,
    MicrophoneSource,
    import_sounddevice,
    list_input_devices,
    refresh_portaudio,
    resolve_input_device,
)
from tui.sources.mix import MixedSource
from tui.sources.stdin import StdinSource
from tui.sources.system import (
    PulseSource,
    SystemAudioSource,
    default_sink,
    list_monitor_sources,
    list_pulse_sources,
)

SOURCE_KINDS = ("mic", "system", "mix", "file", "stdin")

__all__ = [
    "DEFAULT_MAX_QUEUE_S",
    "DEVICE_HINT",
    "SOURCE_KINDS",
    "AudioChunk",
    "AudioSource",
    "FileSource",
    "InputDevice",
    "MicrophoneSource",
    "MixedSource",
    "PulseSource",
    "StdinSource",
    "SystemAudioSource",
    "default_sink",
    "import_sounddevice",
    "list_input_devices",
    "list_monitor_sources",
    "list_pulse_sources",
    "open_source",
    "read_file_16k",
    "refresh_portaudio",
    "resolve_input_device",
]


def open_source(
    kind: str,
    device: str | int | None = None,
    path: Path | str | None = None,
    realtime: bool = True,
    stdin_rate: int = 16_000,
    stdin_channels: int = 1,
    *,
    system_device: str | None = None,
    max_queue_s: float = DEFAULT_MAX_QUEUE_S,
) -> AudioSource:
    """Build (not start) the source that settings or command-line flags ask for.

    kind: "mic" (``device`` = PortAudio name or index, None = default input), "system"
    (``device`` or ``system_device`` = a monitor/source name, None = the default output's
    monitor), "mix" (microphone ``device`` + system ``system_device``), "file" (``path``,
    ``realtime`` pace or as fast as possible), "stdin" (raw s16le at ``stdin_rate`` /
    ``stdin_channels``, or a WAV stream, detected).
    """
    if kind == "mic":
        return MicrophoneSource(device, max_queue_s=max_queue_s)
    if kind == "system":
        name = system_device if system_device is not None else device
        return SystemAudioSource(None if name is None else str(name), max_queue_s=max_queue_s)
    if kind == "mix":
        return MixedSource(
            [
                MicrophoneSource(device, max_queue_s=max_queue_s),
                SystemAudioSource(system_device, max_queue_s=max_queue_s),
            ],
            max_queue_s=max_queue_s,
        )
    if kind == "file":
        if path is None:
            raise SettingsError("source: 'file' needs a path (e.g. `voxcap talk.wav` or --file PATH)")
        return FileSource(Path(path), realtime=realtime, max_queue_s=max_queue_s)
    if kind == "stdin":
        return StdinSource(rate=stdin_rate, channels=stdin_channels, max_queue_s=max_queue_s)
    raise SettingsError(f"source: {kind!r} is not one of {', '.join(SOURCE_KINDS)}")
