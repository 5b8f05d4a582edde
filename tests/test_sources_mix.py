"""MixedSource with scripted inputs: exact sums, per-input levels, a silent input, failures."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from tui.audio import LEVEL_FLOOR_DB
from tui.errors import AudioSourceError
from tui.sources import AudioSource, MixedSource


class ScriptedSource(AudioSource):
    """Emits the given blocks, one every ``interval_s``, then ends (or fails, or goes quiet)."""

    def __init__(self, kind: str, blocks: list[np.ndarray], interval_s: float = 0.005, then: str = "end"):
        super().__init__()
        self.kind = kind  # type: ignore[misc]
        self.blocks = blocks
        self.interval_s = interval_s
        self.then = then
        self.stopped = False

    def describe(self) -> str:
        return f"scripted {self.kind}"

    async def _pump(self) -> None:
        for block in self.blocks:
            await asyncio.sleep(self.interval_s)
            self._offer(block.astype(np.float32), time.monotonic())
        if self.then == "fail":
            raise AudioSourceError(f"{self.kind} device vanished; run `voxcap devices`")
        if self.then == "quiet":
            await asyncio.Event().wait()

    async def _close(self) -> None:
        self.stopped = True


def split(signal: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    edges = np.cumsum(sizes)[:-1]
    return np.split(signal, edges)


async def test_inputs_with_different_block_sizes_sum_sample_exactly():
    rng = np.random.default_rng(3)
    mic = rng.uniform(-0.3, 0.3, 16_000).astype(np.float32)
    system = rng.uniform(-0.3, 0.3, 16_000).astype(np.float32)
    source = MixedSource(
        [
            ScriptedSource("mic", split(mic, [320] * 50)),
            ScriptedSource("system", split(system, [490, 510] * 16), interval_s=0.004),
        ],
        max_queue_s=5.0,
    )
    chunks = [chunk async for chunk in source]
    for before, after in zip(chunks, chunks[1:], strict=False):
        assert after.offset == before.end
    out = np.concatenate([c.samples for c in chunks])
    assert len(out) == 16_000
    assert np.allclose(out, mic + system, atol=1e-6)
    assert all(set(c.levels) == {"mic", "system"} and c.source == "mix" for c in chunks)


async def test_sum_is_clipped_and_levels_say_who_is_loud():
    loud = np.full(3200, 0.9, dtype=np.float32)
    quiet = np.full(3200, 0.01, dtype=np.float32)
    chunks = [
        c
        async for c in MixedSource(
            [
                ScriptedSource("mic", split(loud, [320] * 10)),
                ScriptedSource("system", split(quiet, [320] * 10)),
            ]
        )
    ]
    out = np.concatenate([c.samples for c in chunks])
    assert np.all(out <= 1.0) and np.allclose(out, 0.91)
    assert all(c.levels["mic"] == pytest.approx(-0.915, abs=0.01) for c in chunks)
    assert all(c.levels["system"] == pytest.approx(-40.0, abs=0.01) for c in chunks)


async def test_an_input_that_delivers_nothing_does_not_hold_the_other_back():
    # A monitor of an idle sink sends no data at all; the microphone must still come through.
    mic = np.full(4800, 0.5, dtype=np.float32)
    source = MixedSource(
        [
            ScriptedSource("mic", split(mic, [320] * 15), then="quiet"),
            ScriptedSource("system", [], then="quiet"),
        ],
        max_wait_s=0.05,
    )
    await source.start()
    got = 0
    async with asyncio.timeout(5):
        while got < 4800:
            chunk = await source.__anext__()
            assert chunk.levels["system"] == LEVEL_FLOOR_DB
            assert np.allclose(chunk.samples, 0.5)
            got += len(chunk.samples)
    await source.stop()
    assert got == 4800 and all(s.stopped for s in source.sources)  # type: ignore[attr-defined]


async def test_a_failing_input_ends_the_mix_with_its_error():
    source = MixedSource(
        [
            ScriptedSource("mic", [np.zeros(320)] * 3, then="fail"),
            ScriptedSource("system", [np.zeros(320)] * 100, then="quiet"),
        ]
    )
    with pytest.raises(AudioSourceError, match="mic device vanished"):
        async with asyncio.timeout(5):
            async for _ in source:
                pass
    assert source.closed and all(s.stopped for s in source.sources)  # type: ignore[attr-defined]


async def test_drops_of_the_inputs_count_in_the_mix():
    source = MixedSource([ScriptedSource("mic", []), ScriptedSource("system", [])])
    source.sources[0]._dropped_s = 0.5
    source._dropped_s = 0.25
    assert source.dropped_s == 0.75


def test_a_mix_needs_distinct_inputs():
    with pytest.raises(AudioSourceError):
        MixedSource([ScriptedSource("mic", []), ScriptedSource("mic", [])])
