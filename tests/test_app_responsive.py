"""The UI thread never waits for the engine: with an engine far slower than real time, keys are
handled at once, the event loop keeps ticking, and the audio that cannot be kept is dropped,
counted and shown."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from tests.fake_engine import FakeModel, speech_like
from tests.test_app import Harness, isolated_dirs, wait_for  # noqa: F401 (fixture)
from tui.widgets.delay import DelaySlider
from tui.widgets.gauges import GaugesPanel

pytestmark = pytest.mark.usefixtures("isolated_dirs")

STEP_SLEEP_S = 1.0  # each 80 ms of audio costs the fake engine 1 s: 12.5x slower than real time


async def test_keys_are_handled_while_the_engine_is_busy_and_drops_are_counted() -> None:
    model = FakeModel(step_sleep_s=STEP_SLEEP_S)
    audio = np.concatenate([speech_like(3.0), speech_like(1.0, loud=False)])
    harness = Harness(audio, live=True, model=model, interval_s=0.08, queue_s=0.5, journal=False)
    app = harness.app
    gaps: list[float] = []
    ticking = True

    async def measure_loop_lag() -> None:
        last = time.monotonic()
        while ticking:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    async with app.run_test(size=(110, 32)) as pilot:
        await wait_for(pilot, lambda: bool(model.sessions) and model.sessions[-1].stats.steps >= 1, "engine busy")
        monitor = asyncio.create_task(measure_loop_lag())
        slider = app.query_one(DelaySlider)
        steps_before = model.sessions[-1].stats.steps
        handled = 0
        for i in range(20):
            before = slider.value
            await pilot.press("right_square_bracket" if i % 2 == 0 else "left_square_bracket")
            # press() may return before the key is handled on a loaded machine: wait for its effect.
            await wait_for(pilot, lambda before=before: slider.value != before, f"key {i} handled")
            handled += slider.value != before
        steps_during = model.sessions[-1].stats.steps - steps_before
        await wait_for(pilot, lambda: app.stats.dropped_s > 0, "dropped audio counted")
        ticking = False
        await monitor
        assert handled == 20  # every key took effect...
        assert steps_during <= 20  # ...while the engine finished only a handful of 1 s steps
        # The loop never stalled for an engine step: a blocked UI would show gaps of >= 1 s.
        assert gaps and max(gaps) < STEP_SLEEP_S, f"event loop stalled {max(gaps):.2f} s"
        assert "Dropped" in str(app.query_one(GaugesPanel).render())
        assert app.stats.dropped_s > 0 and harness.runtime.buffer.dropped_s > 0
        assert harness.runtime.buffer.queued_s <= 0.5 + 0.08  # bounded: memory does not grow
