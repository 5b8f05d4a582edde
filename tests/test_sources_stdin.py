"""StdinSource: raw s16le and WAV streams (from a real ffmpeg), pipes and regular files."""

from __future__ import annotations

import asyncio
import io
import os
import pty
import shutil
import struct
import subprocess
import threading

import numpy as np
import pytest
import soundfile

from tui.errors import AudioSourceError
from tui.sources import StdinSource
from tui.sources.wavstream import PcmFormat, decode_pcm

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")


def feed_pipe(data: bytes, piece: int = 4093) -> int:
    """A pipe whose write end a thread fills with ``data`` in odd-sized pieces; returns the read end."""
    read_fd, write_fd = os.pipe()

    def writer() -> None:
        with os.fdopen(write_fd, "wb", buffering=0) as out:
            for i in range(0, len(data), piece):
                out.write(data[i : i + piece])

    threading.Thread(target=writer, daemon=True).start()
    return read_fd


async def read_all(source: StdinSource) -> np.ndarray:
    chunks = [chunk async for chunk in source]
    for before, after in zip(chunks, chunks[1:], strict=False):
        assert after.offset == before.end  # nothing lost or repeated
    return np.concatenate([c.samples for c in chunks]) if chunks else np.zeros(0, np.float32)


def ffmpeg_tone(*output_args: str, freq: int = 440, seconds: float = 1.0) -> bytes:
    return subprocess.run(
        [
            "ffmpeg",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency={freq}:duration={seconds}",
            *output_args,
            "-",
        ],
        check=True,
        capture_output=True,
    ).stdout


async def test_raw_s16le_at_16k_is_exact():
    pcm = (np.random.default_rng(1).integers(-32768, 32767, 16_001)).astype("<i2")
    fd = feed_pipe(pcm.tobytes())
    try:
        out = await read_all(StdinSource(fd))
    finally:
        os.close(fd)
    assert np.array_equal(out, pcm.astype(np.float32) / 32768.0)


async def test_raw_stereo_44k_is_downmixed_and_resampled():
    rate = 44_100
    t = np.arange(rate) / rate
    left = (0.5 * np.sin(2 * np.pi * 1000 * t) * 32767).astype("<i2")
    frames = np.stack([left, left], axis=1)  # [frames, 2] interleaved on tobytes()
    fd = feed_pipe(frames.tobytes())
    try:
        source = StdinSource(fd, rate=rate, channels=2)
        out = await read_all(source)
    finally:
        os.close(fd)
    assert "raw s16le" in source.describe()
    assert abs(len(out) - 16_000) <= 1
    spectrum = np.abs(np.fft.rfft(out * np.hanning(len(out))))
    assert np.fft.rfftfreq(len(out), 1 / 16_000)[np.argmax(spectrum)] == pytest.approx(1000, abs=2)


@needs_ffmpeg
async def test_ffmpeg_s16le_pipe_matches_the_bytes_ffmpeg_wrote():
    raw = ffmpeg_tone("-f", "s16le", "-ar", "16000", "-ac", "1")
    process = subprocess.Popen(
        [
            "ffmpeg",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:duration=1",
            "-f",
            "s16le",
            "-ar",
            "16000",
            "-ac",
            "1",
            "-",
        ],
        stdout=subprocess.PIPE,
    )
    assert process.stdout is not None
    out = await read_all(StdinSource(process.stdout))
    process.wait()
    assert np.array_equal(out, np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0)


@needs_ffmpeg
async def test_ffmpeg_wav_pipe_is_detected_from_its_header():
    # Piped WAV from ffmpeg carries 0xFFFFFFFF sizes and a LIST chunk before the data.
    wav = ffmpeg_tone("-ar", "48000", "-ac", "2", "-f", "wav", freq=700)
    assert wav[4:8] == b"\xff\xff\xff\xff"
    fd = feed_pipe(wav)
    try:
        source = StdinSource(fd, rate=8000, channels=1)  # the header overrides these
        out = await read_all(source)
    finally:
        os.close(fd)
    assert source.is_wav and source.format.rate == 48_000 and source.format.channels == 2
    assert "WAV" in source.describe()
    reference = soundfile.read(io.BytesIO(ffmpeg_tone("-ar", "16000", "-ac", "1", "-f", "wav", freq=700)))[0]
    assert abs(len(out) - len(reference)) <= 1
    spectrum = np.abs(np.fft.rfft(out * np.hanning(len(out))))
    assert np.fft.rfftfreq(len(out), 1 / 16_000)[np.argmax(spectrum)] == pytest.approx(700, abs=2)


@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"])
async def test_wav_encodings_decode_like_soundfile(subtype):
    data = np.random.default_rng(2).uniform(-0.9, 0.9, (1600, 2)).astype(np.float32)
    buffer = io.BytesIO()
    soundfile.write(buffer, data, 16_000, format="WAV", subtype=subtype)
    wav = buffer.getvalue()
    fd = feed_pipe(wav + b"JUNKafter the data chunk")  # a sized data chunk stops at its size
    try:
        out = await read_all(StdinSource(fd))
    finally:
        os.close(fd)
    expected = soundfile.read(io.BytesIO(wav), dtype="float64", always_2d=True)[0].mean(axis=1)
    assert out.shape == expected.shape
    assert np.allclose(out, expected, atol=1e-6)


async def test_regular_file_on_stdin_is_read_in_a_thread(tmp_path):
    pcm = np.arange(-8000, 8000, dtype="<i2")
    path = tmp_path / "raw.s16"
    path.write_bytes(pcm.tobytes())
    with open(path, "rb") as stream:
        out = await read_all(StdinSource(stream))
    assert np.array_equal(out, pcm.astype(np.float32) / 32768.0)


async def test_reading_stdin_does_not_block_the_event_loop():
    read_fd, write_fd = os.pipe()
    source = StdinSource(read_fd)
    await source.start()
    ticks = 0
    for _ in range(5):  # nothing written yet: the loop must keep running
        await asyncio.sleep(0.01)
        ticks += 1
    os.write(write_fd, np.zeros(320, "<i2").tobytes())
    first = await asyncio.wait_for(source.__anext__(), 5)
    os.close(write_fd)
    rest = [c async for c in source]
    os.close(read_fd)
    assert ticks == 5 and len(first.samples) + sum(len(c.samples) for c in rest) == 320


async def test_terminal_stdin_is_refused_with_a_hint():
    parent, child = pty.openpty()
    try:
        with pytest.raises(AudioSourceError, match="terminal"):
            await StdinSource(child).start()
    finally:
        os.close(parent)
        os.close(child)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"RIFF\x00\x00\x00\x00AVI LIST", "not a WAVE"),
        (b"RIFF\xff\xff\xff\xffWAVEdata\x00\x00\x00\x00", "before the 'fmt ' chunk"),
        (
            b"RIFF\xff\xff\xff\xffWAVEfmt " + struct.pack("<IHHIIHH", 16, 0x55, 2, 44100, 0, 0, 0),
            "format tag 0x0055",
        ),
        (b"RIFF\xff\xff\xff\xffWAVEfm", "stdin ended"),
    ],
)
async def test_broken_wav_streams_end_with_a_clear_error(payload, expected):
    fd = feed_pipe(payload)
    try:
        source = StdinSource(fd)
        with pytest.raises(AudioSourceError, match=expected):
            await read_all(source)
    finally:
        os.close(fd)
    assert source.closed and source.error is not None


def test_decode_pcm_24_bit_sign_extension():
    fmt = PcmFormat(rate=16_000, channels=1, encoding="s24")
    data = bytes([0xFF, 0xFF, 0x7F, 0x00, 0x00, 0x80, 0xFF, 0xFF, 0xFF])  # max, min, -1
    assert decode_pcm(data, fmt)[:, 0].tolist() == pytest.approx([8388607 / 8388608, -1.0, -1 / 8388608])
    with pytest.raises(ValueError):
        decode_pcm(data[:4], fmt)
