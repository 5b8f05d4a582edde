"""Long and large: a two-hour stream with flat memory across the position limit, and the
full-size configuration (random weights of the real shapes) running a streaming step on CPU."""

from __future__ import annotations

import gc

import psutil
import pytest
import torch

import asr
from asr.audio import SAMPLE_RATE
from tests.tiny_model import synthetic_speechlike


@pytest.mark.slow
def test_two_hour_stream_has_flat_memory_and_crosses_the_position_limit(tiny_models):
    path, _ = tiny_models("limit")  # windows 40/64, position limit 4096 (5.5 min)
    model = asr.load_model(path, device="cpu", dtype=torch.float32)
    session = model.stream(480)
    pieces = [synthetic_speechlike(60.0, seed=s) for s in range(4)]  # a minute each, reused
    process = psutil.Process()
    rss_after_warmup = 0
    n_tokens, last_end = 0, 0.0
    for minute in range(120):
        audio = pieces[minute % 4]
        for start in range(0, len(audio), 24_000):  # 1.5 s chunks, like a live source
            tokens = session.feed(audio[start : start + 24_000])
            n_tokens += len(tokens)
            assert all(t.start_s >= last_end - 1e-9 or t.id < 1000 for t in tokens)
            if tokens:
                last_end = max(last_end, tokens[-1].start_s)
        if minute == 10:
            gc.collect()
            rss_after_warmup = process.memory_info().rss
    n_tokens += len(session.finish())
    gc.collect()
    growth = process.memory_info().rss - rss_after_warmup
    assert growth < 64 * 2**20, f"memory grew by {growth / 2**20:.0f} MB over 110 minutes"
    assert session.audio_s == pytest.approx(7200.0)
    events = session.pop_events()
    assert len(events) >= 7200 / (4096 * 0.08)  # rolled over before every position limit
    assert {e.reason for e in events} == {"position_limit"}
    # No audio lost or doubled: each stream of n samples ran exactly ceil(n / 1280) + 11 positions
    # past its prompt at 480 ms (audio slots, 6 delay slots, 11 flush slots, minus the prompt's
    # own last output), and the streams' samples add up to the whole input.
    cuts = [0, *[round(e.audio_s * SAMPLE_RATE) for e in events], 7200 * SAMPLE_RATE]
    assert n_tokens == sum(-(-(b - a) // 1280) + 11 for a, b in zip(cuts, cuts[1:], strict=False))


@pytest.mark.slow
def test_full_size_model_runs_a_streaming_step_on_cpu():
    from asr.loader import load_random_model

    torch.set_num_threads(2)
    try:
        model = load_random_model("bf16", device="cpu", dtype="bfloat16")
        assert model.info.n_params == 4_429_679_360  # the published 4.43 B
        assert model.info.weight_bytes == pytest.approx(8.86e9, rel=0.01)
        session = model.stream(480)
        audio = synthetic_speechlike(9000 / SAMPLE_RATE, seed=0)
        tokens = session.feed(audio)
        # 9000 samples complete the 39-token prompt at 480 ms: the first step runs, one id out.
        assert len(tokens) == 1 and 0 <= tokens[0].id < 131072
        assert session.stats.position == 39
    finally:
        torch.set_num_threads(1)
