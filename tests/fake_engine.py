"""A deterministic stand-in for the engine contract (``asr.load_model(...).stream(...)``).

Every 80 ms of input is one step. A step whose audio is loud emits the next word of a fixed
script (a STREAMING_WORD id then the word's text); a quiet step emits STREAMING_PAD. Like the real
model, output lags the audio by the delay: the token of step k describes slot k - delay/80.
``set_delay`` rolls over at the next quiet step, ``restart`` at once, both reported by
``pop_events``. ``step_sleep_s`` makes it slow on purpose.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from asr.tokens import STREAMING_PAD_ID, STREAMING_WORD_ID, Token

STEP_SAMPLES = 1280  # 80 ms at 16 kHz
SCRIPT = "Hello world. This is a test of voxcap live captions. Another sentence follows here.".split()


@dataclass(frozen=True)
class FakeInfo:
    name: str = "fake-voxtral"
    format: str = "fake"
    quant: str = "f32"
    device: str = "cpu"
    dtype: str = "float32"
    n_params: int = 1000
    weight_bytes: int = 4000


@dataclass(frozen=True)
class FakeEvent:
    kind: str
    audio_s: float
    delay_ms: int
    reason: str


@dataclass
class FakeStats:
    steps: int = 0
    audio_s: float = 0.0
    encoder_ms: deque[float] = field(default_factory=lambda: deque(maxlen=100))
    decoder_ms: deque[float] = field(default_factory=lambda: deque(maxlen=100))


class FakeSession:
    def __init__(self, delay_ms: int = 480, step_sleep_s: float = 0.0, loud_db: float = -40.0) -> None:
        self.delay_ms = delay_ms
        self.step_sleep_s = step_sleep_s
        self.loud_threshold = 10 ** (loud_db / 20)
        self.stats = FakeStats()
        self.fed: list[int] = []  # sample counts of every feed call
        self.calls: list[str] = []
        self._pending = np.zeros(0, dtype=np.float32)
        self._steps = 0
        self._word = 0
        self._pending_delay: int | None = None
        self._events: list[FakeEvent] = []
        self._finished = False

    @property
    def audio_s(self) -> float:
        return self.stats.audio_s

    def _step(self, loud: bool) -> list[Token]:
        slot = max(0, self._steps - self.delay_ms // 80)
        start, end = slot * 0.08, slot * 0.08 + 0.08
        self._steps += 1
        self.stats.steps += 1
        if self.step_sleep_s:
            time.sleep(self.step_sleep_s)
        self.stats.encoder_ms.append(0.5 * 1000 * self.step_sleep_s)  # as the real session reports
        self.stats.decoder_ms.append(0.5 * 1000 * self.step_sleep_s)
        if not loud:
            if self._pending_delay is not None:
                self._events.append(FakeEvent("rollover", end, self._pending_delay, "delay"))
                self.delay_ms = self._pending_delay
                self._pending_delay = None
            return [Token(STREAMING_PAD_ID, "", start, end)]
        word = SCRIPT[self._word % len(SCRIPT)]
        self._word += 1
        return [Token(STREAMING_WORD_ID, "", start, end), Token(5000 + self._word, " " + word, start, end)]

    def feed(self, samples: np.ndarray, sample_rate: int = 16000) -> list[Token]:
        assert sample_rate == 16000 and samples.ndim == 1 and samples.dtype == np.float32
        self.calls.append("feed")
        self.fed.append(len(samples))
        self.stats.audio_s += len(samples) / 16000
        self._pending = np.concatenate([self._pending, samples])
        tokens: list[Token] = []
        while len(self._pending) >= STEP_SAMPLES:
            step, self._pending = self._pending[:STEP_SAMPLES], self._pending[STEP_SAMPLES:]
            tokens += self._step(float(np.sqrt(np.mean(step**2))) > self.loud_threshold)
        return tokens

    def finish(self) -> list[Token]:
        self.calls.append("finish")
        tokens = [t for _ in range(self.delay_ms // 80) for t in self._step(False)]
        self._finished = True
        return tokens

    def reset(self) -> None:
        self.calls.append("reset")
        self.stats = FakeStats()
        self._pending = np.zeros(0, dtype=np.float32)
        self._steps = 0
        self._finished = False

    def set_delay(self, delay_ms: int) -> None:
        self.calls.append(f"set_delay:{delay_ms}")
        self._pending_delay = delay_ms

    def restart(self) -> None:
        self.calls.append("restart")
        self._events.append(FakeEvent("rollover", self.audio_s, self.delay_ms, "restart"))

    def pop_events(self) -> list[FakeEvent]:
        events, self._events = self._events, []
        return events


class FakeModel:
    def __init__(self, step_sleep_s: float = 0.0, needs_warm_up: bool = False) -> None:
        self.info = FakeInfo()
        self.step_sleep_s = step_sleep_s
        self.sessions: list[FakeSession] = []
        self.needs_warm_up = needs_warm_up  # as a CUDA model says
        self.calls: list[tuple[str, int]] = []  # ("warm_up" | "stream", delay_ms), in order

    def stream(self, delay_ms: int = 480) -> FakeSession:
        session = FakeSession(delay_ms, self.step_sleep_s)
        self.sessions.append(session)
        self.calls.append(("stream", delay_ms))
        return session

    def warm_up(self, delay_ms: int = 480) -> None:
        self.calls.append(("warm_up", delay_ms))


@dataclass(frozen=True)
class FakeChunk:
    samples: np.ndarray
    source: str = "file"
    t_capture: float = 0.0
    levels: dict[str, float] = field(default_factory=dict)


def speech_like(seconds: float, loud: bool = True, seed: int = 0) -> np.ndarray:
    """Loud noise (counts as speech for the fake) or digital silence, 16 kHz float32."""
    n = int(round(seconds * 16000))
    if not loud:
        return np.zeros(n, dtype=np.float32)
    return (np.random.default_rng(seed).standard_normal(n) * 0.1).astype(np.float32)


def chunks_of(samples: np.ndarray, chunk_s: float = 0.08, source: str = "file") -> list[FakeChunk]:
    size = int(chunk_s * 16000)
    return [
        FakeChunk(samples[i : i + size], source, float(i + size) / 16000)
        for i in range(0, len(samples), size)
    ]


class FakeSource:
    """An AudioSource stand-in: yields ``samples`` in chunks, then ends (``live=False``) or waits.

    ``interval_s`` spaces the chunks (0: as fast as the loop goes). Live sources drop when full,
    like a microphone; others make the producer wait, like a file.
    """

    kind = "file"

    def __init__(self, samples: np.ndarray, chunk_s: float = 0.08, interval_s: float = 0.0,
                 live: bool = False, source: str = "file") -> None:
        self.samples = samples
        self.chunk = int(chunk_s * 16000)
        self.interval_s = interval_s
        self.drops_when_full = live
        self.source = source
        self.dropped_s = 0.0
        self.started = False
        self.stopped = False
        self.paused = False
        self.position = 0
        self.held = False  # a test sets it to make the input wait (like a slow start)

    def describe(self) -> str:
        return f"fake {self.source} input, {len(self.samples) / 16000:.1f} s"

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    def __aiter__(self) -> FakeSource:
        return self

    async def __anext__(self) -> FakeChunk:
        import asyncio

        while True:
            if self.stopped:
                raise StopAsyncIteration
            if self.paused or self.held:
                await asyncio.sleep(0.01)
                continue
            if self.position >= len(self.samples) and not self.drops_when_full:
                raise StopAsyncIteration
            break
        await asyncio.sleep(self.interval_s)
        if self.position >= len(self.samples):  # a live input goes on: silence
            await asyncio.sleep(0.08)
            part = np.zeros(self.chunk, dtype=np.float32)
        else:
            part = self.samples[self.position : self.position + self.chunk]
            self.position += len(part)
        level = -20.0 if np.any(part) else -100.0
        return FakeChunk(part, self.source, time.monotonic(), {self.source: level})
