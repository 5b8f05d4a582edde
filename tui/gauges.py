"""Numbers for the gauges: step latency against the 80 ms budget, lag, real-time factor, memory.

Plain, thread-safe-enough objects owned by the ASR worker thread; the UI receives snapshots in
:class:`tui.messages.EngineStats`.
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Iterable
from typing import Any

STEP_BUDGET_MS = 80.0  # one decoder step per 80 ms of audio: slower than this falls behind


def percentile(values: Iterable[float], fraction: float) -> float | None:
    """Nearest-rank percentile (``fraction`` in 0..1) of ``values``; None when empty."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


class LatencyTracker:
    """Compute per 80 ms step as ``voxcap bench`` reports it, and the real-time factor.

    The step figure is the engine's own timing (asr ``SessionStats``: encoder ms per 80 ms token
    plus decoder ms per position, each GPU-synchronised), so the gauge and the benchmark read the
    same clock: p50 is the encoder's p50 plus the decoder's, as bench's total. The real-time
    factor is wall time of whole ``feed`` calls over the audio they carried.
    """

    def __init__(self, window: int = 200) -> None:
        self._encoder_ms: deque[float] = deque(maxlen=window)
        self._decoder_ms: deque[float] = deque(maxlen=window)
        self._chunks: deque[tuple[float, float]] = deque(maxlen=window)  # (compute s, audio s)

    def add(self, compute_s: float, audio_s: float) -> None:
        """One ``feed`` call: ``compute_s`` of wall time for ``audio_s`` of audio."""
        if audio_s > 0:
            self._chunks.append((compute_s, audio_s))

    def add_steps(self, encoder_ms: Iterable[float], decoder_ms: Iterable[float]) -> None:
        """The engine's timings of the tokens encoded and positions decoded since the last call."""
        self._encoder_ms.extend(encoder_ms)
        self._decoder_ms.extend(decoder_ms)

    def _sum(self, fraction: float) -> float | None:
        enc, dec = percentile(self._encoder_ms, fraction), percentile(self._decoder_ms, fraction)
        return None if enc is None or dec is None else enc + dec

    @property
    def p50_ms(self) -> float | None:
        return self._sum(0.50)

    @property
    def p95_ms(self) -> float | None:
        return self._sum(0.95)

    @property
    def rtf(self) -> float | None:
        audio = sum(audio_s for _, audio_s in self._chunks)
        return sum(compute for compute, _ in self._chunks) / audio if audio > 0 else None


class CaptureClock:
    """Maps the audio clock back to capture time, to measure capture -> text lag."""

    def __init__(self, keep: int = 512) -> None:
        self._marks: deque[tuple[float, float]] = deque(maxlen=keep)  # (audio end s, t_capture)

    def add(self, audio_end_s: float, t_capture: float) -> None:
        self._marks.append((audio_end_s, t_capture))

    def capture_time(self, audio_s: float) -> float | None:
        """Monotonic time at which audio position ``audio_s`` was captured (None if unknown)."""
        if not self._marks:
            return None
        for audio_end_s, t_capture in self._marks:  # the first chunk that reaches audio_s
            if audio_end_s >= audio_s:
                return t_capture - (audio_end_s - audio_s)
        audio_end_s, t_capture = self._marks[-1]
        return t_capture - (audio_end_s - audio_s)


def _cuda_memory(device: str) -> dict[str, float]:
    try:
        import torch
    except ImportError:
        return {}
    if not device.startswith("cuda") or not torch.cuda.is_available():
        return {}
    index = torch.device(device).index or 0
    memory = {
        "cuda_allocated": float(torch.cuda.memory_allocated(index)),
        "cuda_reserved": float(torch.cuda.memory_reserved(index)),
    }
    try:
        import pynvml  # nvidia-ml-py, the optional "cuda" extra
    except ImportError:
        return memory
    try:
        pynvml.nvmlInit()
        info = pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(index))
        memory["gpu_used"] = float(info.used)
        memory["gpu_total"] = float(info.total)
    except pynvml.NVMLError:
        pass  # no NVML driver library: PyTorch's numbers still show
    return memory


def memory_snapshot(device: str) -> dict[str, float]:
    """Bytes: ``rss`` (this process) always; on CUDA also ``cuda_allocated``/``cuda_reserved``
    (PyTorch) and ``gpu_used``/``gpu_total`` (NVML, when available)."""
    memory: dict[str, float] = {}
    try:
        import psutil

        memory["rss"] = float(psutil.Process(os.getpid()).memory_info().rss)
    except ImportError:
        pass
    memory.update(_cuda_memory(device))
    return memory


def format_bytes(count: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count:.0f} B"


def describe_memory(memory: dict[str, Any]) -> str:
    """One line for the memory gauge."""
    parts = []
    if "cuda_allocated" in memory:
        parts.append(
            f"torch {format_bytes(memory['cuda_allocated'])} / {format_bytes(memory['cuda_reserved'])} rsv"
        )
    if "gpu_total" in memory:
        parts.append(f"GPU {format_bytes(memory['gpu_used'])} / {format_bytes(memory['gpu_total'])}")
    if "rss" in memory:
        parts.append(f"RSS {format_bytes(memory['rss'])}")
    return " · ".join(parts) if parts else "n/a"
