"""Reading a WAV header from a stream that cannot seek (a pipe), and decoding its PCM frames.

soundfile and the ``wave`` module want a seekable file or trust the header's sizes; a pipe from
``ffmpeg -f wav -`` writes 0xFFFFFFFF as the RIFF and data sizes because it cannot go back to
fill them in. So: walk the chunks in order, skip what is not ``fmt `` or ``data``, and treat an
unknown data size as "until end of stream".
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from tui.errors import AudioSourceError

WAVE_FORMAT_PCM = 0x0001
WAVE_FORMAT_IEEE_FLOAT = 0x0003
WAVE_FORMAT_EXTENSIBLE = 0xFFFE
_UNKNOWN_SIZES = (0, 0xFFFFFFFF)  # what streaming writers put where they cannot know the size
_MAX_SKIPPED_CHUNK = 16 << 20  # bytes; a bigger non-audio chunk before the data means garbage

FIX_HINT = "convert with: ffmpeg -i INPUT -f wav -acodec pcm_s16le - | voxcap --stdin"


@dataclass(frozen=True)
class PcmFormat:
    """How interleaved PCM bytes decode: rate, channels and sample encoding."""

    rate: int  # Hz
    channels: int
    encoding: str  # "u8" | "s16" | "s24" | "s32" | "f32" | "f64"
    data_bytes: int | None = None  # length of the data chunk, None = until end of stream

    @property
    def bytes_per_sample(self) -> int:
        return {"u8": 1, "s16": 2, "s24": 3, "s32": 4, "f32": 4, "f64": 8}[self.encoding]

    @property
    def frame_bytes(self) -> int:
        return self.bytes_per_sample * self.channels

    def describe(self) -> str:
        return f"{self.rate} Hz, {self.channels} ch, {self.encoding}"


def decode_pcm(data: bytes, fmt: PcmFormat) -> np.ndarray:
    """Whole frames of little-endian PCM -> ``[frames, channels]`` float32 in [-1, 1]."""
    if len(data) % fmt.frame_bytes:
        raise ValueError(f"{len(data)} bytes is not a whole number of {fmt.frame_bytes}-byte frames")
    if fmt.encoding == "s16":
        samples = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
    elif fmt.encoding == "f32":
        samples = np.frombuffer(data, dtype="<f4").astype(np.float32)
    elif fmt.encoding == "s32":
        samples = (np.frombuffer(data, dtype="<i4") / 2147483648.0).astype(np.float32)
    elif fmt.encoding == "u8":
        samples = (np.frombuffer(data, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif fmt.encoding == "f64":
        samples = np.frombuffer(data, dtype="<f8").astype(np.float32)
    elif fmt.encoding == "s24":
        raw = np.frombuffer(data, dtype=np.uint8).reshape(-1, 3).astype(np.int32)  # [samples, 3]
        value = raw[:, 0] | (raw[:, 1] << 8) | (raw[:, 2] << 16)
        value = np.where(value >= 1 << 23, value - (1 << 24), value)  # sign-extend 24 -> 32 bits
        samples = (value / 8388608.0).astype(np.float32)
    else:
        raise ValueError(f"unknown PCM encoding {fmt.encoding!r}")
    return samples.reshape(-1, fmt.channels)  # [frames, channels]


def _encoding(tag: int, bits: int) -> str | None:
    if tag == WAVE_FORMAT_PCM:
        return {8: "u8", 16: "s16", 24: "s24", 32: "s32"}.get(bits)
    if tag == WAVE_FORMAT_IEEE_FLOAT:
        return {32: "f32", 64: "f64"}.get(bits)
    return None


async def read_wav_header(read_exactly: Callable[[int], Awaitable[bytes]], first4: bytes) -> PcmFormat:
    """Parse a RIFF/WAVE header up to the start of the sample data.

    ``first4`` is the magic already read (``b"RIFF"`` or ``b"RF64"``); ``read_exactly(n)``
    returns exactly n bytes or raises AudioSourceError at end of stream.
    """
    rest = await read_exactly(8)
    if rest[4:8] != b"WAVE":
        raise AudioSourceError(f"stdin starts with {first4!r} but is not a WAVE file; {FIX_HINT}")
    streaming = first4 == b"RF64"  # sizes live in a ds64 chunk; read the data to the end
    fmt: PcmFormat | None = None
    while True:
        chunk_id, size = struct.unpack("<4sI", await read_exactly(8))
        if chunk_id == b"fmt ":
            if size < 16:
                raise AudioSourceError(f"WAV on stdin has a {size}-byte 'fmt ' chunk (needs 16); {FIX_HINT}")
            body = await read_exactly(size + (size & 1))
            tag, channels, rate, _byte_rate, _align, bits = struct.unpack("<HHIIHH", body[:16])
            if tag == WAVE_FORMAT_EXTENSIBLE and size >= 40:
                tag = struct.unpack("<H", body[24:26])[0]  # first two bytes of the sub-format GUID
            encoding = _encoding(tag, bits)
            if encoding is None:
                raise AudioSourceError(
                    f"WAV on stdin uses format tag {tag:#06x} with {bits}-bit samples, "
                    f"which voxcap does not decode (PCM 8/16/24/32-bit or float 32/64 only); {FIX_HINT}"
                )
            if channels == 0 or rate == 0:
                raise AudioSourceError(f"WAV on stdin declares {channels} channels at {rate} Hz; {FIX_HINT}")
            fmt = PcmFormat(rate=rate, channels=channels, encoding=encoding)
        elif chunk_id == b"data":
            if fmt is None:
                raise AudioSourceError(f"WAV on stdin has its data before the 'fmt ' chunk; {FIX_HINT}")
            data_bytes = None if streaming or size in _UNKNOWN_SIZES else size
            return PcmFormat(fmt.rate, fmt.channels, fmt.encoding, data_bytes)
        else:
            if size > _MAX_SKIPPED_CHUNK:
                raise AudioSourceError(
                    f"WAV on stdin has a {size}-byte {chunk_id!r} chunk before any audio; {FIX_HINT}"
                )
            await read_exactly(size + (size & 1))  # chunks are padded to even sizes
