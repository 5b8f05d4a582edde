"""The common shape of every audio input: :class:`AudioChunk` and :class:`AudioSource`.

A source produces 16 kHz mono float32 chunks on the asyncio loop that started it. Between the
producer (a device callback thread, a subprocess pipe, a file reader) and the consumer sits one
bounded queue, measured in seconds of audio. Live producers never wait: when the queue is full
the newest audio is dropped and counted in :attr:`AudioSource.dropped_s`. Producers that can
wait (a file played as fast as possible, a pipe) wait instead, so they lose nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import ClassVar, TypeVar

import numpy as np

from tui.audio import TARGET_RATE, rms_dbfs
from tui.errors import AudioSourceError

DEFAULT_MAX_QUEUE_S = 2.0  # seconds of audio a source may hold before dropping (or waiting)
DEVICE_HINT = "run `voxcap devices` to list inputs and pick one with --device NAME|INDEX"

_T = TypeVar("_T")


@dataclass(frozen=True)
class AudioChunk:
    """A stretch of 16 kHz mono audio from one source (or from a mix of sources).

    ``offset`` is the index of the first sample on the source's own 16 kHz timeline; audio
    dropped on overflow still advances that timeline, so a consumer sees a gap, not a splice.
    """

    samples: np.ndarray  # [n] float32 in [-1, 1], 16 kHz mono
    source: str  # "mic" | "system" | "file" | "stdin" | "mix"
    t_capture: float  # time.monotonic() when the last sample was captured (or was due)
    levels: dict[str, float] = field(default_factory=dict)  # RMS dBFS per contributing source
    offset: int = 0  # first sample's index on the source's 16 kHz timeline

    @property
    def duration_s(self) -> float:
        return len(self.samples) / TARGET_RATE

    @property
    def end(self) -> int:
        """Index just past the last sample on the source's timeline."""
        return self.offset + len(self.samples)


class AudioSource(ABC):
    """An audio input: ``await start()``, ``async for chunk in source``, ``await stop()``.

    Iteration ends when the input ends (end of file or pipe) or after :meth:`stop`, once the
    queued chunks are delivered. A failing input (device unplugged, server gone, bad data) ends
    the iteration by raising :class:`AudioSourceError` once; it is also kept in :attr:`error`.
    Iterating a source that was not started starts it. Use it on one asyncio loop only.
    """

    kind: ClassVar[str]  # "mic" | "system" | "file" | "stdin" | "mix"
    drops_when_full: ClassVar[bool] = True  # live inputs drop; readers that can wait, wait

    def __init__(self, *, max_queue_s: float = DEFAULT_MAX_QUEUE_S) -> None:
        self.max_queue_s = max_queue_s
        self.error: AudioSourceError | None = None
        self.overflows = 0  # input overflows the driver reported (audio lost before us)
        self._dropped_s = 0.0  # seconds dropped on our own queues
        self._queue: deque[AudioChunk] = deque()
        self._queued_samples = 0
        self._next_offset = 0
        self._started = False
        self._finished = False
        self._error_raised = False
        self._stopping = False
        self._paused = False
        self._readable: asyncio.Event | None = None
        self._writable: asyncio.Event | None = None
        self._resumed: asyncio.Event | None = None
        self._pump_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- what subclasses provide ------------------------------------------------------------

    @abstractmethod
    def describe(self) -> str:
        """One human line: what this input is (device, rate, channels, mode)."""

    async def _open(self) -> None:  # noqa: B027 (optional hook)
        """Open the device, file or pipe; raise AudioSourceError naming it on failure."""

    async def _pump(self) -> None:
        """Produce audio until the input ends (return) or fails (raise AudioSourceError)."""
        await asyncio.Event().wait()  # callback-driven sources just wait to be stopped

    async def _close(self) -> None:  # noqa: B027 (optional hook)
        """Release the device, file or pipe. Must not raise, must not block the loop."""

    # -- public API --------------------------------------------------------------------------

    @property
    def dropped_s(self) -> float:
        """Seconds of audio dropped because the consumer fell behind."""
        return self._dropped_s

    @property
    def closed(self) -> bool:
        """True once no more audio will be produced (queued chunks may still be read)."""
        return self._finished

    @property
    def started(self) -> bool:
        return self._started

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def queued_s(self) -> float:
        """Seconds of audio waiting to be read."""
        return self._queued_samples / TARGET_RATE

    async def start(self) -> None:
        """Open the input and begin producing; raises AudioSourceError if it cannot open."""
        if self._started:
            return
        self._started = True
        self._loop = asyncio.get_running_loop()
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._resumed = asyncio.Event()
        self._resumed.set()
        try:
            await self._open()
        except AudioSourceError as error:
            self._finish(error)
            self._error_raised = True  # the caller of start() got it
            raise
        if self._stopping:  # stop() was called while opening
            await self._close()
            self._finish(None)
            return
        self._pump_task = asyncio.create_task(self._run_pump(), name=f"voxcap-audio-{self.kind}")

    async def stop(self) -> None:
        """Stop producing and release the input. Idempotent; queued chunks stay readable."""
        if not self._started or self._stopping:
            return
        self._stopping = True
        if self._pump_task is not None and not self._pump_task.done():
            self._pump_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump_task
        await self._close()
        self._finish(None)

    def pause(self) -> None:
        """Stop delivering audio until :meth:`resume`: live inputs discard what they capture
        meanwhile (not counted as dropped); files and pipes wait where they are."""
        self._paused = True
        if self._resumed is not None:
            self._resumed.clear()

    def resume(self) -> None:
        self._paused = False
        if self._resumed is not None:
            self._resumed.set()

    def __aiter__(self) -> AsyncIterator[AudioChunk]:
        return self

    async def __anext__(self) -> AudioChunk:
        if not self._started:
            await self.start()
        assert self._readable is not None and self._writable is not None
        while True:
            if self._queue:
                chunk = self._queue.popleft()
                self._queued_samples -= len(chunk.samples)
                self._writable.set()
                return chunk
            if self._finished:
                if self.error is not None and not self._error_raised:
                    self._error_raised = True
                    raise self.error
                raise StopAsyncIteration
            self._readable.clear()
            await self._readable.wait()

    async def __aenter__(self) -> AudioSource:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # -- helpers for subclasses --------------------------------------------------------------

    def _make_chunk(
        self, samples: np.ndarray, t_capture: float, levels: dict[str, float] | None
    ) -> AudioChunk:
        chunk = AudioChunk(
            samples=samples,
            source=self.kind,
            t_capture=t_capture,
            levels=levels if levels is not None else {self.kind: rms_dbfs(samples)},
            offset=self._next_offset,
        )
        self._next_offset += len(samples)
        return chunk

    def _offer(self, samples: np.ndarray, t_capture: float, levels: dict[str, float] | None = None) -> None:
        """Queue audio without waiting; if the queue is full, drop it and count the seconds."""
        if len(samples) == 0 or self._finished:
            return
        chunk = self._make_chunk(samples, t_capture, levels)
        if self._queued_samples > 0 and self._queued_samples + len(samples) > self._max_queue_samples:
            self._dropped_s += chunk.duration_s  # (an empty queue takes any chunk: none can jam it)
            return
        self._enqueue(chunk)

    async def _put(
        self, samples: np.ndarray, t_capture: float, levels: dict[str, float] | None = None
    ) -> None:
        """Queue audio, waiting for room (for producers that can wait without losing audio)."""
        if len(samples) == 0 or self._finished:
            return
        assert self._writable is not None
        while self._queued_samples > 0 and self._queued_samples + len(samples) > self._max_queue_samples:
            self._writable.clear()
            await self._writable.wait()
            if self._finished:
                return
        self._enqueue(self._make_chunk(samples, t_capture, levels))

    async def _emit(
        self, samples: np.ndarray, t_capture: float, levels: dict[str, float] | None = None
    ) -> None:
        """Queue audio the way this kind of source does: drop when full, or wait."""
        if self.drops_when_full:
            self._offer(samples, t_capture, levels)
        else:
            await self._put(samples, t_capture, levels)

    async def _wait_resumed(self) -> float:
        """Wait while paused; returns the seconds spent paused (to shift an audio clock)."""
        assert self._resumed is not None
        if self._resumed.is_set():
            return 0.0
        paused_at = time.monotonic()
        await self._resumed.wait()
        return time.monotonic() - paused_at

    @property
    def _max_queue_samples(self) -> int:
        return max(1, int(self.max_queue_s * TARGET_RATE))

    # -- internals ---------------------------------------------------------------------------

    def _enqueue(self, chunk: AudioChunk) -> None:
        assert self._readable is not None
        self._queue.append(chunk)
        self._queued_samples += len(chunk.samples)
        self._readable.set()

    def _finish(self, error: AudioSourceError | None) -> None:
        if self._finished:
            return
        self._finished = True
        if error is not None and self.error is None:
            self.error = error
        if self._readable is not None:
            self._readable.set()
        if self._writable is not None:
            self._writable.set()  # release a producer waiting for room

    async def _run_pump(self) -> None:
        try:
            await self._pump()
        except asyncio.CancelledError:
            raise
        except AudioSourceError as error:
            await self._close()
            self._finish(error)
            return
        except (OSError, ValueError, RuntimeError) as error:  # a bug or odd input: end cleanly, say what
            await self._close()
            self._finish(AudioSourceError(f"{self.describe()}: {type(error).__name__}: {error}"))
            return
        await self._close()
        self._finish(None)


async def run_blocking(function: Callable[[], _T], timeout_s: float, what: str) -> _T:
    """Run a blocking call (a device open or close) in a daemon thread, without blocking the loop.

    Not the default executor: a call wedged in a driver would keep ``asyncio.run`` from
    returning at exit, since it joins the executor's threads; a daemon thread is just left.
    """
    import threading

    loop = asyncio.get_running_loop()
    future: asyncio.Future[_T] = loop.create_future()

    def settle(outcome: Callable[[], None]) -> None:
        if not future.done():
            outcome()

    def target() -> None:
        try:
            result = function()
        except BaseException as error:  # handed to the awaiting coroutine, not swallowed
            caught = error
            loop.call_soon_threadsafe(settle, lambda: future.set_exception(caught))
        else:
            loop.call_soon_threadsafe(settle, lambda: future.set_result(result))

    threading.Thread(target=target, name=f"voxcap-{what}", daemon=True).start()
    try:
        return await asyncio.wait_for(future, timeout_s)
    except TimeoutError as error:
        raise AudioSourceError(f"{what} did not finish within {timeout_s:.0f} s; {DEVICE_HINT}") from error
