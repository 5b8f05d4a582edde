"""FileSource: exact content, audio-clock pacing, resampling, drops when live, errors."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from tui.errors import AudioSourceError, SettingsError
from tui.sources import AudioChunk, FileSource, open_source, read_file_16k


def write_noise(path: Path, rate: int, seconds: float, channels: int = 1, seed: int = 0) -> np.ndarray:
    """A PCM_16 file of noise; returns what soundfile reads back ([frames, channels] float32)."""
    rng = np.random.default_rng(seed)
    data = rng.uniform(-0.5, 0.5, (int(rate * seconds), channels)).astype(np.float32)
    soundfile.write(path, data, rate, subtype="PCM_16")
    return soundfile.read(path, dtype="float32", always_2d=True)[0]


async def collect(source: FileSource) -> tuple[list[AudioChunk], list[float]]:
    chunks, arrivals = [], []
    async for chunk in source:
        arrivals.append(time.monotonic())
        chunks.append(chunk)
    return chunks, arrivals


def assert_contiguous(chunks: list[AudioChunk]) -> None:
    """No sample lost or duplicated: each chunk starts where the previous ended."""
    assert chunks and chunks[0].offset == 0
    for before, after in zip(chunks, chunks[1:], strict=False):
        assert after.offset == before.end


async def test_fast_file_at_16k_is_delivered_exactly(tmp_path):
    reference = write_noise(tmp_path / "a.wav", 16_000, 1.37)[:, 0]
    source = FileSource(tmp_path / "a.wav", realtime=False)
    chunks, _ = await collect(source)
    assert_contiguous(chunks)
    out = np.concatenate([c.samples for c in chunks])
    assert np.array_equal(out, reference)  # bit-exact: no resampling at 16 kHz
    assert all(c.source == "file" and set(c.levels) == {"file"} for c in chunks)
    assert source.closed and source.dropped_s == 0.0 and source.error is None


async def test_realtime_pacing_follows_the_audio_clock(tmp_path):
    reference = write_noise(tmp_path / "a.wav", 16_000, 0.6)[:, 0]
    source = FileSource(tmp_path / "a.wav", realtime=True, block_ms=40)
    chunks, arrivals = await collect(source)
    assert_contiguous(chunks)
    assert np.array_equal(np.concatenate([c.samples for c in chunks]), reference)
    # The chunk ending at sample p is due at t0 + p / 16000: deadlines are absolute, so the
    # spacing of t_capture is exactly the audio between them (no accumulated drift) ...
    t0 = chunks[0].t_capture - chunks[0].end / 16_000
    for chunk in chunks:
        assert chunk.t_capture - t0 == pytest.approx(chunk.end / 16_000, abs=1e-6)
    # ... and no chunk is released before its audio would have been captured.
    for chunk, arrived in zip(chunks, arrivals, strict=True):
        assert arrived >= chunk.t_capture - 1e-4


async def test_pause_holds_the_file_and_shifts_its_clock(tmp_path):
    write_noise(tmp_path / "a.wav", 16_000, 0.4)
    source = FileSource(tmp_path / "a.wav", realtime=True, block_ms=40)
    await source.start()
    first = await source.__anext__()
    source.pause()
    await asyncio.sleep(0.3)
    assert source.queued_s <= 0.08 + 1e-9  # at most the blocks already due when pausing
    source.resume()
    rest = [chunk async for chunk in source]
    assert_contiguous([first, *rest])
    assert rest[-1].end == 6400
    gap = rest[-1].t_capture - first.t_capture
    assert gap >= (rest[-1].end - first.end) / 16_000 + 0.2  # the pause moved the deadlines


@pytest.mark.parametrize("rate", [44_100, 48_000])
async def test_file_at_native_rate_is_resampled_with_frequency_and_length_kept(tmp_path, rate):
    seconds = 1.5
    t = np.arange(int(rate * seconds)) / rate
    left = 0.6 * np.sin(2 * np.pi * 1234.0 * t)
    stereo = np.stack([left, left], axis=1).astype(np.float32)  # [frames, 2]
    soundfile.write(tmp_path / "tone.flac", stereo, rate)
    chunks, _ = await collect(FileSource(tmp_path / "tone.flac", realtime=False))
    assert_contiguous(chunks)
    out = np.concatenate([c.samples for c in chunks])
    assert abs(len(out) - len(t) * 16_000 / rate) <= 1
    spectrum = np.abs(np.fft.rfft(out * np.hanning(len(out))))
    assert np.fft.rfftfreq(len(out), 1 / 16_000)[np.argmax(spectrum)] == pytest.approx(1234.0, abs=2.0)
    assert np.sqrt(np.mean(out[800:-800] ** 2)) == pytest.approx(0.6 / np.sqrt(2), rel=0.02)
    assert np.array_equal(out, read_file_16k(tmp_path / "tone.flac"))


async def test_ogg_file_plays(tmp_path):
    rate = 48_000
    t = np.arange(rate) / rate
    soundfile.write(tmp_path / "a.ogg", (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate)
    chunks, _ = await collect(FileSource(tmp_path / "a.ogg", realtime=False))
    assert abs(sum(len(c.samples) for c in chunks) - 16_000) <= 1


async def test_slow_consumer_of_a_live_file_drops_and_counts_with_bounded_memory(tmp_path):
    reference = write_noise(tmp_path / "a.wav", 16_000, 1.0)[:, 0]
    source = FileSource(tmp_path / "a.wav", realtime=True, block_ms=20, max_queue_s=0.2)
    await source.start()
    high_water = 0.0
    while not source.closed:  # a consumer that never reads
        high_water = max(high_water, source.queued_s)
        await asyncio.sleep(0.01)
    assert high_water <= 0.2 + 1e-9 and source.queued_s <= 0.2 + 1e-9
    assert source.dropped_s > 0.5
    kept = [chunk async for chunk in source]
    # Every sample is either delivered or counted as dropped, and delivered ones are intact.
    assert sum(len(c.samples) for c in kept) / 16_000 + source.dropped_s == pytest.approx(1.0)
    for chunk in kept:
        assert np.array_equal(chunk.samples, reference[chunk.offset : chunk.end])


async def test_fast_file_waits_for_a_slow_consumer_instead_of_dropping(tmp_path):
    reference = write_noise(tmp_path / "a.wav", 16_000, 1.0)[:, 0]
    source = FileSource(tmp_path / "a.wav", realtime=False, block_ms=20, max_queue_s=0.1)
    out = []
    async for chunk in source:
        assert source.queued_s <= 0.1 + 1e-9
        out.append(chunk.samples)
        await asyncio.sleep(0.001)
    assert source.dropped_s == 0.0
    assert np.array_equal(np.concatenate(out), reference)


async def test_stop_ends_iteration_early(tmp_path):
    write_noise(tmp_path / "a.wav", 16_000, 5.0)
    source = FileSource(tmp_path / "a.wav", realtime=True)
    async with source:
        await source.__anext__()
    assert source.closed
    rest = [chunk async for chunk in source]
    assert sum(len(c.samples) for c in rest) < 16_000 * 4


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: p / "missing.wav", "not found"),
        (lambda p: p, "is a directory"),
        (lambda p: (p / "text.wav").write_text("not audio at all" * 20) and p / "text.wav", "Cannot read"),
    ],
)
async def test_bad_files_give_clear_errors(tmp_path, make, expected):
    path = make(tmp_path)
    source = FileSource(path)
    with pytest.raises(AudioSourceError, match=expected) as info:
        await source.start()
    assert str(path) in str(info.value)
    assert source.closed


async def test_wav_with_zero_channels_is_refused(tmp_path):
    import struct

    fmt = struct.pack("<HHIIHH", 1, 0, 16_000, 0, 0, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", 4) + b"\0" * 4
    path = tmp_path / "zero.wav"
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    with pytest.raises(AudioSourceError, match=str(path)):
        await FileSource(path).start()


async def test_iterating_an_unopenable_file_raises_once(tmp_path):
    source = FileSource(tmp_path / "nope.wav")
    with pytest.raises(AudioSourceError):
        await source.__anext__()
    assert [c async for c in source] == []


def test_open_source_builds_each_kind(tmp_path):
    assert isinstance(open_source("file", path=tmp_path / "x.wav", realtime=False), FileSource)
    assert open_source("mic", device="3").kind == "mic"
    assert open_source("system").kind == "system"
    mixed = open_source("mix", device=None, system_device="foo.monitor")
    assert [s.kind for s in mixed.sources] == ["mic", "system"]
    with pytest.raises(SettingsError, match="needs a path"):
        open_source("file")
    with pytest.raises(SettingsError, match="not one of"):
        open_source("radio")
