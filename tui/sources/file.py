"""A sound file (WAV, FLAC, OGG, ... via soundfile), replayed at real-time pace or at full speed.

Real-time pace follows the audio clock: the block that ends at frame ``p`` is released at
``t0 + p / rate``, an absolute deadline, so rounding in sleeps never accumulates into drift.
At that pace the file behaves like a live input (drops when the consumer falls behind);
at full speed it waits for the consumer and loses nothing.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import soundfile

from tui.audio import MonoResampler
from tui.errors import AudioSourceError
from tui.sources.base import DEFAULT_MAX_QUEUE_S, AudioSource

_READ_S = 1.0  # seconds read per trip to the reader thread (then cut into blocks)
FORMATS_HINT = "WAV, FLAC, OGG/Vorbis/Opus and the other formats libsndfile reads"


class FileSource(AudioSource):
    """Audio from a file, as 16 kHz mono chunks of ``block_ms``."""

    kind = "file"

    def __init__(
        self,
        path: Path | str,
        *,
        realtime: bool = True,
        block_ms: int = 40,
        max_queue_s: float = DEFAULT_MAX_QUEUE_S,
    ) -> None:
        super().__init__(max_queue_s=max_queue_s)
        self.path = Path(path)
        self.realtime = realtime
        self.drops_when_full = realtime  # type: ignore[misc]  # per instance: paced = live
        self.block_ms = block_ms
        self.rate: int | None = None  # native rate, known once opened
        self.channels: int | None = None
        self.frames: int | None = None
        self._file: soundfile.SoundFile | None = None

    def describe(self) -> str:
        pace = "real-time" if self.realtime else "as fast as possible"
        if self.rate is None or self.frames is None:
            return f"File: {self.path} ({pace})"
        return (
            f"File: {self.path} ({self.rate} Hz, {self.channels} ch, {self.frames / self.rate:.1f} s, {pace})"
        )

    async def _open(self) -> None:
        self._file = await asyncio.to_thread(open_sound_file, self.path)
        self.rate = self._file.samplerate
        self.channels = self._file.channels
        self.frames = self._file.frames

    async def _pump(self) -> None:
        sound = self._file
        assert sound is not None and self.rate is not None
        resampler = MonoResampler(self.rate)
        block_frames = max(1, self.rate * self.block_ms // 1000)
        read_frames = max(block_frames, int(self.rate * _READ_S) // block_frames * block_frames)
        t0 = time.monotonic()  # the audio clock's zero: frame p is due at t0 + p / rate
        position = 0  # frames released so far
        while True:
            try:
                data = await asyncio.to_thread(sound.read, read_frames, "float32", True)  # [frames, ch]
            except (soundfile.SoundFileError, RuntimeError) as error:
                raise AudioSourceError(
                    f"Reading {self.path} failed after {position / self.rate:.2f} s: {error}"
                ) from error
            if len(data) == 0:
                break
            for start in range(0, len(data), block_frames):
                block = data[start : start + block_frames]  # [frames, channels]
                t0 += await self._wait_resumed()  # a pause stops the audio clock too
                position += len(block)
                due = t0 + position / self.rate
                if self.realtime:
                    delay = due - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    await self._emit(resampler.process(block), due)
                else:
                    await self._emit(resampler.process(block), time.monotonic())
        await self._emit(resampler.flush(), t0 + position / self.rate if self.realtime else time.monotonic())

    async def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def open_sound_file(path: Path) -> soundfile.SoundFile:
    """Open ``path`` for reading, or raise AudioSourceError saying what is wrong with it."""
    if not path.exists():
        raise AudioSourceError(f"Audio file not found: {path}")
    if path.is_dir():
        raise AudioSourceError(f"{path} is a directory, not an audio file ({FORMATS_HINT})")
    try:
        sound = soundfile.SoundFile(path)
    except (soundfile.SoundFileError, RuntimeError) as error:
        raise AudioSourceError(
            f"Cannot read {path} as audio ({FORMATS_HINT}); convert it with "
            f"`ffmpeg -i {path} -ar 16000 -ac 1 out.wav`: {error}"
        ) from error
    except OSError as error:
        raise AudioSourceError(f"Cannot open {path}: {error.strerror or error}") from error
    if sound.channels <= 0 or sound.samplerate <= 0:
        sound.close()
        raise AudioSourceError(
            f"{path} declares {sound.channels} channels at {sound.samplerate} Hz; it holds no playable audio"
        )
    return sound


def read_file_16k(path: Path | str) -> np.ndarray:
    """A whole file as 16 kHz mono float32 ``[n]``, resampled the same way the source does."""
    sound = open_sound_file(Path(path))
    with sound:
        resampler = MonoResampler(sound.samplerate)
        data = sound.read(dtype="float32", always_2d=True)  # [frames, channels]
    return np.concatenate([resampler.process(data), resampler.flush()])
