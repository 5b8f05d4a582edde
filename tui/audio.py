"""Sample-level helpers for the audio sources: downmix, resampling to 16 kHz, levels, mixing.

Everything here is synchronous numpy and knows nothing about devices or asyncio, so it is cheap
to test against exact oracles. Conventions: audio is float32 in [-1, 1]; a multi-channel block
is ``[frames, channels]`` (soundfile's and PortAudio's layout); mono is ``[frames]``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np
import soxr

TARGET_RATE = 16_000  # Hz, the only rate the engine takes
LEVEL_FLOOR_DB = -100.0  # dBFS reported for digital silence (log10(0) has no value)
SILENCE_DB = -60.0  # below this a source counts as silent when picking the dominant one

# How each source kind is named on a caption line.
SOURCE_LABELS: dict[str, str] = {"mic": "Mic", "system": "System", "file": "File", "stdin": "Stdin"}


def downmix(block: np.ndarray) -> np.ndarray:
    """``[frames, channels]`` or ``[frames]`` -> ``[frames]`` float32, the mean of the channels.

    The mean (not the sum) keeps a full-scale signal on every channel at full scale.
    """
    if block.ndim == 1:
        return np.ascontiguousarray(block, dtype=np.float32)
    if block.ndim != 2 or block.shape[1] == 0:
        raise ValueError(f"expected audio shaped [frames, channels], got {block.shape}")
    if block.shape[1] == 1:
        return np.ascontiguousarray(block[:, 0], dtype=np.float32)
    return block.mean(axis=1, dtype=np.float32)  # [frames]


class MonoResampler:
    """Streaming downmix + resample from a native rate to 16 kHz (soxr, HQ).

    Feed blocks in order with :meth:`process`; call :meth:`flush` once at the end to get the
    samples soxr holds back for its filter. The total output length is the input length times
    ``out_rate / in_rate``, rounded. At 16 kHz in, blocks pass through untouched (exact).
    """

    def __init__(self, in_rate: int, out_rate: int = TARGET_RATE, quality: str = "HQ") -> None:
        if in_rate <= 0:
            raise ValueError(f"sample rate must be positive, got {in_rate}")
        self.in_rate = int(in_rate)
        self.out_rate = int(out_rate)
        self._stream = (
            None
            if self.in_rate == self.out_rate
            else soxr.ResampleStream(self.in_rate, self.out_rate, 1, dtype="float32", quality=quality)
        )
        self._flushed = False

    def process(self, block: np.ndarray) -> np.ndarray:
        """One block ``[frames, channels]`` or ``[frames]`` at ``in_rate`` -> ``[n]`` at ``out_rate``."""
        mono = downmix(block)  # [frames]
        if self._stream is None:
            return mono
        return self._stream.resample_chunk(mono)

    def flush(self) -> np.ndarray:
        """The samples still inside the filter; call once, after the last :meth:`process`."""
        if self._stream is None or self._flushed:
            return np.zeros(0, dtype=np.float32)
        self._flushed = True
        return self._stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)


def rms_dbfs(samples: np.ndarray) -> float:
    """RMS level in dBFS (a full-scale square wave is 0 dB, a full-scale sine about -3 dB)."""
    if samples.size == 0:
        return LEVEL_FLOOR_DB
    mean_square = float(np.mean(np.square(samples, dtype=np.float64)))
    if mean_square <= 0.0:
        return LEVEL_FLOOR_DB
    return max(LEVEL_FLOOR_DB, 10.0 * math.log10(mean_square))


def mix(parts: Iterable[np.ndarray]) -> np.ndarray:
    """Sum equally long mono signals and clip to [-1, 1] (clipping beats wrapping or rescaling)."""
    arrays = list(parts)
    if not arrays:
        return np.zeros(0, dtype=np.float32)
    total = np.zeros(len(arrays[0]), dtype=np.float32)
    for part in arrays:
        if len(part) != len(total):
            raise ValueError(f"cannot mix signals of {len(part)} and {len(total)} samples")
        total += part
    return np.clip(total, -1.0, 1.0, out=total)


def dominant_source(levels: Mapping[str, float], silence_db: float = SILENCE_DB) -> str | None:
    """The loudest source in ``levels`` (dBFS per source), or None when all are below ``silence_db``."""
    loud = {name: db for name, db in levels.items() if db > silence_db}
    if not loud:
        return None
    return max(loud, key=loud.__getitem__)


class SourceTally:
    """Accumulates the energy of each source over a stretch of audio (e.g. one caption segment).

    Feed it each chunk's ``levels`` and duration; :meth:`dominant` tells which source was
    loudest on average over that stretch, which is what a caption line is tagged with.
    """

    def __init__(self) -> None:
        self._energy: dict[str, float] = {}  # mean-square power x seconds, per source
        self._seconds = 0.0

    def add(self, levels: Mapping[str, float], duration_s: float) -> None:
        self._seconds += duration_s
        for name, db in levels.items():
            self._energy[name] = self._energy.get(name, 0.0) + duration_s * 10.0 ** (db / 10.0)

    def levels(self) -> dict[str, float]:
        """Mean level of each source over everything added since the last reset, in dBFS."""
        if self._seconds <= 0.0:
            return {}
        floor_power = 10.0 ** (LEVEL_FLOOR_DB / 10.0)
        return {
            name: 10.0 * math.log10(max(floor_power, energy / self._seconds))
            for name, energy in self._energy.items()
        }

    def dominant(self, silence_db: float = SILENCE_DB) -> str | None:
        """The source loudest on average, or None if every source stayed below ``silence_db``."""
        return dominant_source(self.levels(), silence_db)

    def label(self, silence_db: float = SILENCE_DB) -> str:
        """``"Mic"``/``"System"``/... for the dominant source, ``""`` when all were silent."""
        name = self.dominant(silence_db)
        return SOURCE_LABELS.get(name, name) if name else ""

    def reset(self) -> None:
        self._energy.clear()
        self._seconds = 0.0
