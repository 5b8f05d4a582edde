"""The hand-off between the asyncio audio producer and the ASR worker thread.

:class:`AudioBuffer` is a thread-safe queue bounded in *seconds of audio*. The producer (on the
UI's event loop) never blocks on it: ``offer`` either queues a chunk or drops it and counts the
seconds; inputs that can wait (a file replayed as fast as possible, a pipe) use ``put`` instead,
which awaits room. The worker thread takes chunks with a timeout so it can apply control
commands while no audio comes.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from typing import Protocol

import numpy as np

SAMPLE_RATE = 16_000


class Chunk(Protocol):
    """What the worker needs of an audio chunk (``tui.sources.AudioChunk`` has it)."""

    samples: np.ndarray  # [n] float32, 16 kHz mono
    source: str
    t_capture: float  # time.monotonic() of the last sample
    levels: dict[str, float]


class AudioBuffer:
    """Bounded (in seconds) FIFO of audio chunks between one producer and one consumer thread."""

    def __init__(self, max_s: float = 10.0) -> None:
        self.max_s = max_s
        self._chunks: deque[Chunk] = deque()
        self._queued_samples = 0
        self._dropped_samples = 0
        self._closed = False
        self._condition = threading.Condition()

    @property
    def queued_s(self) -> float:
        """Audio waiting for the engine (the backlog gauge)."""
        return self._queued_samples / SAMPLE_RATE

    @property
    def dropped_s(self) -> float:
        """Audio dropped because the engine fell behind."""
        return self._dropped_samples / SAMPLE_RATE

    @property
    def closed(self) -> bool:
        return self._closed

    def _has_room(self, n_samples: int) -> bool:
        # An empty buffer takes any chunk, so one chunk longer than max_s cannot jam it.
        return not self._chunks or (self._queued_samples + n_samples) / SAMPLE_RATE <= self.max_s

    def offer(self, chunk: Chunk) -> bool:
        """Queue ``chunk`` if there is room; otherwise drop it, count it and return False."""
        n_samples = len(chunk.samples)
        with self._condition:
            if self._closed:
                return False
            if not self._has_room(n_samples):
                self._dropped_samples += n_samples
                return False
            self._chunks.append(chunk)
            self._queued_samples += n_samples
            self._condition.notify()
            return True

    async def put(self, chunk: Chunk, poll_s: float = 0.01) -> None:
        """Queue ``chunk``, awaiting room (for inputs that lose nothing by waiting)."""
        n_samples = len(chunk.samples)
        while True:
            with self._condition:
                if self._closed:
                    return
                if self._has_room(n_samples):
                    self._chunks.append(chunk)
                    self._queued_samples += n_samples
                    self._condition.notify()
                    return
            await asyncio.sleep(poll_s)  # the consumer is a thread: poll rather than cross loops

    def get(self, timeout: float) -> Chunk | None:
        """The oldest chunk, or None after ``timeout`` seconds (or at once when closed and empty)."""
        with self._condition:
            if not self._chunks and not self._closed:
                self._condition.wait(timeout)
            if not self._chunks:
                return None
            chunk = self._chunks.popleft()
            self._queued_samples -= len(chunk.samples)
            return chunk

    def close(self) -> None:
        """No more audio: the consumer drains what is queued, then sees ``closed and empty``."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()

    def drained(self) -> bool:
        with self._condition:
            return self._closed and not self._chunks
