"""Pause detection on the input signal, used to place stream rollovers where nobody is speaking.

Energy-based and adaptive: the input is cut into 80 ms slots; a pause is the last 320 ms being
near the quietest level seen in the last 10 s (the noise floor) or below an absolute -55 dBFS.
Adaptive detection needs dynamics: the loud 10% of the last 10 s at least 15 dB above the
quiet 10%. It only chooses *where* a rollover goes; a rollover is exact wherever it happens, so a wrong
guess costs at most a word split across two streams, never lost audio.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from asr.audio import SAMPLES_PER_TOKEN

SLOTS_PER_CHECK = 4  # 320 ms
HISTORY_SLOTS = 125  # 10 s
ABSOLUTE_QUIET_DB = -55.0
ABOVE_FLOOR_DB = 6.0
MIN_DYNAMIC_RANGE_DB = 15.0


class PauseDetector:
    def __init__(self) -> None:
        self._levels: deque[float] = deque(maxlen=HISTORY_SLOTS)  # dBFS per 80 ms slot
        self._partial = np.zeros(0, dtype=np.float32)

    def push(self, samples: np.ndarray) -> None:
        data = np.concatenate((self._partial, samples)) if self._partial.size else samples
        n_slots = data.shape[0] // SAMPLES_PER_TOKEN
        if n_slots:
            slots = data[: n_slots * SAMPLES_PER_TOKEN].reshape(n_slots, SAMPLES_PER_TOKEN)
            power = np.mean(np.square(slots, dtype=np.float64), axis=1)
            self._levels.extend((10.0 * np.log10(power + 1e-12)).tolist())
        self._partial = data[n_slots * SAMPLES_PER_TOKEN :].copy()

    def quiet(self) -> bool:
        if len(self._levels) < SLOTS_PER_CHECK:
            return False
        recent = list(self._levels)[-SLOTS_PER_CHECK:]
        loudest_recent = max(recent)
        floor, loud = np.percentile(np.asarray(self._levels), [10, 90])
        # Near the floor only counts where the floor is a real pause level, well below the loud
        # parts; a steady signal (music, a hum) has no pauses to find.
        has_dynamics = loud - floor >= MIN_DYNAMIC_RANGE_DB
        return loudest_recent < ABSOLUTE_QUIET_DB or (
            has_dynamics and loudest_recent < floor + ABOVE_FLOOR_DB
        )
