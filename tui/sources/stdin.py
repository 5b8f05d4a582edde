"""Audio piped into standard input: raw s16le at a given rate and channel count, or a WAV stream.

``ffmpeg -i x -f s16le -ar 16000 -ac 1 - | voxcap --stdin`` and ``ffmpeg -i x -f wav - | voxcap
--stdin`` both work: a stream that starts with ``RIFF`` (or ``RF64``) is read as WAV, with rate,
channels and encoding from its header; anything else is raw s16le.

Reading never blocks the event loop: pipes, sockets and character devices go through
``loop.connect_read_pipe`` (which also gives backpressure: the writer waits when we are full),
regular files (``voxcap --stdin < talk.wav``), which epoll cannot watch, through a thread.
"""

from __future__ import annotations

import asyncio
import os
import stat
import sys
import time
from typing import BinaryIO

from tui.audio import MonoResampler
from tui.errors import AudioSourceError
from tui.sources.base import DEFAULT_MAX_QUEUE_S, AudioSource
from tui.sources.wavstream import PcmFormat, decode_pcm, read_wav_header

_PIPE_LIMIT = 1 << 18  # bytes buffered before the pipe transport stops reading (backpressure)
TTY_HINT = "pipe audio into it, e.g. `ffmpeg -i talk.mp3 -f s16le -ar 16000 -ac 1 - | voxcap --stdin`"


class _ByteStream:
    """Non-blocking reads from a file descriptor, whatever kind of file it is."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._reader: asyncio.StreamReader | None = None
        self._transport: asyncio.ReadTransport | None = None
        self._was_blocking = True

    async def open(self) -> None:
        try:
            mode = os.fstat(self._fd).st_mode
        except OSError as error:
            raise AudioSourceError(f"Cannot read stdin (fd {self._fd}): {error.strerror}") from error
        if os.isatty(self._fd):
            raise AudioSourceError(f"stdin is a terminal, not audio; {TTY_HINT}")
        if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode):
            loop = asyncio.get_running_loop()
            self._was_blocking = os.get_blocking(self._fd)
            # A duplicate, so closing the transport leaves the caller's descriptor open.
            pipe = os.fdopen(os.dup(self._fd), "rb", buffering=0)
            self._reader = asyncio.StreamReader(limit=_PIPE_LIMIT)
            protocol = asyncio.StreamReaderProtocol(self._reader)
            self._transport, _ = await loop.connect_read_pipe(lambda: protocol, pipe)

    async def read(self, size: int) -> bytes:
        """Up to ``size`` bytes; ``b""`` at end of stream."""
        if self._reader is not None:
            return await self._reader.read(size)
        return await asyncio.to_thread(os.read, self._fd, size)

    async def read_exactly(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            more = await self.read(size - len(data))
            if not more:
                raise AudioSourceError(f"stdin ended after {len(data)} of the {size} header bytes it needs")
            data += more
        return data

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
            try:
                os.set_blocking(self._fd, self._was_blocking)  # the dup shared our O_NONBLOCK flag
            except OSError:
                pass  # the descriptor went away with the writer; nothing to restore


class StdinSource(AudioSource):
    """Audio from standard input (or any readable file descriptor), 16 kHz mono chunks out."""

    kind = "stdin"
    drops_when_full = False  # a pipe can wait: the writer blocks, nothing is lost

    def __init__(
        self,
        stream: BinaryIO | int | None = None,
        *,
        rate: int = 16_000,
        channels: int = 1,
        block_ms: int = 40,
        max_queue_s: float = DEFAULT_MAX_QUEUE_S,
    ) -> None:
        super().__init__(max_queue_s=max_queue_s)
        if rate <= 0 or channels <= 0:
            raise AudioSourceError(
                f"stdin needs a positive rate and channel count, got {rate} Hz and {channels} channels"
            )
        if stream is None:
            stream = sys.stdin.buffer
        self._fd = stream if isinstance(stream, int) else stream.fileno()
        self.format = PcmFormat(rate=rate, channels=channels, encoding="s16")  # raw until a header says
        self.is_wav = False
        self.block_ms = block_ms
        self._bytes = _ByteStream(self._fd)

    def describe(self) -> str:
        kind = "WAV" if self.is_wav else "raw s16le"
        return f"Stdin: {kind}, {self.format.describe()}"

    async def _open(self) -> None:
        await self._bytes.open()

    async def _pump(self) -> None:
        first = b""
        while len(first) < 4:  # the magic decides WAV or raw
            more = await self._bytes.read(4 - len(first))
            if not more:
                break
            first += more
        pending = b""
        if first in (b"RIFF", b"RF64"):
            self.format = await read_wav_header(self._bytes.read_exactly, first)
            self.is_wav = True
        else:
            pending = first
        fmt = self.format
        resampler = MonoResampler(fmt.rate)
        block_bytes = max(1, fmt.rate * self.block_ms // 1000) * fmt.frame_bytes
        remaining = fmt.data_bytes  # None = to the end of the stream
        while remaining is None or remaining > 0:
            await self._wait_resumed()
            want = block_bytes if remaining is None else min(block_bytes, remaining)
            data = await self._bytes.read(want)
            if not data:
                break
            if remaining is not None:
                remaining -= len(data)
            pending += data
            whole = len(pending) - len(pending) % fmt.frame_bytes
            if whole:
                frames = decode_pcm(pending[:whole], fmt)  # [frames, channels]
                pending = pending[whole:]
                await self._emit(resampler.process(frames), time.monotonic())
        await self._emit(resampler.flush(), time.monotonic())
        # A trailing partial frame (a cut-off pipe) is dropped: it is less than one sample.

    async def _close(self) -> None:
        self._bytes.close()
