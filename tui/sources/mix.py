"""Several inputs (the microphone and system audio) summed into one stream, with per-source levels.

Each input runs at its own pace: different devices, different block sizes, and a monitor of an
idle sink may deliver nothing at all while it is suspended. So each input gets a small buffer;
a chunk is mixed as soon as every live input has samples for it, and an input that has not
delivered for ``max_wait_s`` counts as silence for that chunk instead of holding the others up.
Every chunk carries each input's own level, so the app can tag a caption line "Mic" or "System".
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import numpy as np

from tui.audio import TARGET_RATE, mix, rms_dbfs
from tui.errors import AudioSourceError
from tui.sources.base import DEFAULT_MAX_QUEUE_S, AudioChunk, AudioSource


class _Lane:
    """The pending audio of one input."""

    def __init__(self, source: AudioSource) -> None:
        self.source = source
        self.samples = np.zeros(0, dtype=np.float32)  # [n] 16 kHz, not yet mixed
        self.waiting_since: float | None = None  # when its oldest pending sample arrived
        self.t_capture = 0.0
        self.ended = False

    def push(self, chunk: AudioChunk) -> None:
        if len(self.samples) == 0:
            self.waiting_since = time.monotonic()
        self.samples = np.concatenate([self.samples, chunk.samples])
        self.t_capture = max(self.t_capture, chunk.t_capture)

    def take(self, count: int) -> np.ndarray:
        """``count`` samples, padded with silence where this input has fewer."""
        taken = self.samples[:count]
        self.samples = self.samples[count:]
        self.waiting_since = time.monotonic() if len(self.samples) else None
        if len(taken) < count:
            taken = np.concatenate([taken, np.zeros(count - len(taken), dtype=np.float32)])
        return taken


class MixedSource(AudioSource):
    """The sum of several sources (clipped to [-1, 1]); ``levels`` holds each one's dBFS."""

    kind = "mix"

    def __init__(
        self,
        sources: list[AudioSource],
        *,
        block_ms: int = 20,
        max_wait_s: float = 0.2,
        max_queue_s: float = DEFAULT_MAX_QUEUE_S,
    ) -> None:
        super().__init__(max_queue_s=max_queue_s)
        kinds = [s.kind for s in sources]
        if len(set(kinds)) != len(kinds) or not sources:
            raise AudioSourceError(f"a mix needs distinct inputs, got {kinds}")
        self.sources = sources
        self.block = max(1, TARGET_RATE * block_ms // 1000)
        self.max_wait_s = max_wait_s
        self._lanes = {s.kind: _Lane(s) for s in sources}
        self._inbox: asyncio.Queue[tuple[str, AudioChunk | None]] = asyncio.Queue(maxsize=8)
        self._readers: list[asyncio.Task[None]] = []
        self._input_error: AudioSourceError | None = None

    @property
    def dropped_s(self) -> float:
        return self._dropped_s + sum(s.dropped_s for s in self.sources)

    def describe(self) -> str:
        return "Mixed: " + " + ".join(s.describe() for s in self.sources)

    async def _open(self) -> None:
        started: list[AudioSource] = []
        try:
            for source in self.sources:
                await source.start()
                started.append(source)
        except AudioSourceError:
            for source in started:
                await source.stop()
            raise
        self._readers = [asyncio.create_task(self._read(s)) for s in self.sources]

    async def _read(self, source: AudioSource) -> None:
        # Awaiting put() pushes back on the input, whose own bounded queue then drops.
        try:
            async for chunk in source:
                await self._inbox.put((source.kind, chunk))
        except AudioSourceError as error:
            self._input_error = error
        await self._inbox.put((source.kind, None))

    def pause(self) -> None:
        super().pause()
        for source in self.sources:
            source.pause()

    def resume(self) -> None:
        super().resume()
        for source in self.sources:
            source.resume()

    async def _pump(self) -> None:
        while not all(lane.ended for lane in self._lanes.values()):
            try:
                kind, chunk = await asyncio.wait_for(self._inbox.get(), self.max_wait_s / 2)
            except TimeoutError:
                kind, chunk = "", None
            if kind:
                lane = self._lanes[kind]
                if chunk is None:
                    lane.ended = True
                    if self._input_error is not None:
                        raise self._input_error  # a device gone ends the mix: say which one
                else:
                    lane.push(chunk)
            self._mix_ready()
        self._mix_ready(flush=True)

    def _mix_ready(self, flush: bool = False) -> None:
        now = time.monotonic()
        while True:
            live = [lane for lane in self._lanes.values() if not lane.ended or len(lane.samples)]
            pending = [lane for lane in live if len(lane.samples)]
            if not pending:
                return
            waiting = any(not lane.ended and not len(lane.samples) for lane in live)
            stale = any(now - (lane.waiting_since or now) >= self.max_wait_s for lane in pending)
            shortest = min(len(lane.samples) for lane in pending)
            if flush:
                count = max(len(lane.samples) for lane in pending)  # the end: pad the tails
            elif waiting:
                if not stale:
                    return  # give the silent input a moment to catch up
                count = shortest  # the silent input counts as silence for this stretch
            elif shortest >= self.block or stale:
                count = shortest
            else:
                return
            # Only an input with nothing pending is filled with silence (or every tail, at the
            # end): an input is never cut in the middle, so its own audio stays contiguous.
            parts = {kind: lane.take(count) for kind, lane in self._lanes.items()}  # each [count]
            levels = {kind: rms_dbfs(part) for kind, part in parts.items()}
            t_capture = max(lane.t_capture for lane in self._lanes.values())
            self._offer(mix(parts.values()), t_capture, levels)

    async def _close(self) -> None:
        for task in self._readers:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for source in self.sources:
            await source.stop()
