"""Optional recording of a session's audio (16 kHz mono) beside its journal.

The recording lets a session be transcribed again later (``voxcap transcribe`` on it) with
another delay or model. Chunks are appended as they arrive and flushed to disk every
``flush_interval_s`` seconds of audio.

Crash behaviour: WAV (the default) keeps every flushed sample; its header still says "0 bytes"
after a crash, which ``repair_recording`` fixes (libsndfile reads it anyway, other tools may
not). FLAC is smaller, but a crash loses the encoder's last unflushed block (up to ~0.3 s) and
leaves the stream length unknown; ``repair_recording`` decodes what is there and rewrites it.
Write errors never raise into the caption path: the recorder stops and sets ``error``.
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tui.errors import JournalError

RECORDING_FORMATS = ("wav", "flac")
SAMPLE_RATE = 16_000
_UNKNOWN_LENGTH = 1 << 60  # libsndfile reports a FLAC stream of unknown length as about 2**63 frames


def recording_path(journal_path: str | os.PathLike[str], fmt: str = "wav") -> Path:
    """The recording beside a journal: ``<session id>.wav`` / ``.flac``."""
    if fmt not in RECORDING_FORMATS:
        raise JournalError(f"unknown recording format {fmt!r}; use one of {', '.join(RECORDING_FORMATS)}")
    return Path(journal_path).with_suffix(f".{fmt}")


class AudioRecorder:
    """Appends float32 mono 16 kHz chunks to a WAV or FLAC file (format from the suffix). Thread-safe."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        sample_rate: int = SAMPLE_RATE,
        flush_interval_s: float = 5.0,
        on_error: Callable[[str | None], None] | None = None,
    ) -> None:
        import soundfile

        self.path = Path(path)
        self.sample_rate = sample_rate
        self.flush_interval_samples = max(1, int(flush_interval_s * sample_rate))
        self.on_error = on_error
        self.error: str | None = None
        self.samples_written = 0
        self.samples_dropped = 0  # after an error, audio that could not be recorded
        self._since_flush = 0
        self._lock = threading.Lock()
        self._file: soundfile.SoundFile | None = None
        fmt = self.path.suffix.lower().lstrip(".")
        if fmt not in RECORDING_FORMATS:
            self._fail(f"cannot record to {self.path}: unknown format {fmt!r}; use a .wav or .flac path")
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = soundfile.SoundFile(self.path, "w", samplerate=sample_rate, channels=1,
                                             format=fmt.upper(), subtype="PCM_16")
        except (OSError, RuntimeError) as error:  # soundfile's errors are RuntimeErrors
            self._fail(f"cannot record to {self.path}: {error}; recording is off, captions continue")

    @property
    def closed(self) -> bool:
        return self._file is None

    @property
    def duration_s(self) -> float:
        return self.samples_written / self.sample_rate

    def write(self, samples: np.ndarray) -> bool:
        """Append ``samples`` (float32 [N], mono, at ``sample_rate``). False if not recorded."""
        with self._lock:
            if self._file is None:
                self.samples_dropped += len(samples)
                return False
            try:
                self._file.write(np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0))  # [N]
                self.samples_written += len(samples)
                self._since_flush += len(samples)
                if self._since_flush >= self.flush_interval_samples:
                    self._flush_locked()
            except (OSError, RuntimeError) as error:
                self.samples_dropped += len(samples)
                self._stop(f"recording to {self.path} stopped: {error}; captions continue")
                return False
            return True

    def flush(self) -> None:
        with self._lock:
            if self._file is None:
                return
            try:
                self._flush_locked()
            except (OSError, RuntimeError) as error:
                self._stop(f"recording to {self.path} stopped: {error}; captions continue")

    def close(self) -> None:
        """Finish the file (writes the final header). Idempotent; never raises."""
        with self._lock:
            if self._file is None:
                return
            try:
                self._file.close()
                _fsync_path(self.path)
            except (OSError, RuntimeError) as error:
                self._fail(f"recording {self.path} may be incomplete: {error}")
            self._file = None

    def _flush_locked(self) -> None:
        assert self._file is not None
        self._file.flush()  # libsndfile's sf_write_sync: hands buffered frames to the OS and syncs
        _fsync_path(self.path)  # sf_write_sync alone does not reach the disk for every format
        self._since_flush = 0

    def _stop(self, message: str) -> None:
        try:
            assert self._file is not None
            self._file.close()
        except (OSError, RuntimeError):
            pass
        self._file = None
        self._fail(message)

    def _fail(self, message: str) -> None:
        self.error = message
        if self.on_error is not None:
            try:
                self.on_error(message)
            except Exception:  # a broken UI callback must not stop the captions
                pass


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def repair_recording(path: str | os.PathLike[str]) -> int:
    """Make a recording left by a crash readable everywhere; returns its length in samples.
    Raises JournalError when the file is missing or not a recording."""
    path = Path(path)
    if not path.is_file():
        raise JournalError(f"recording {path} does not exist; it may have been moved or deleted")
    if path.suffix.lower() == ".wav":
        return _repair_wav(path)
    if path.suffix.lower() == ".flac":
        return _repair_flac(path)
    raise JournalError(f"cannot repair {path}: not a .wav or .flac recording")


def _repair_wav(path: Path) -> int:
    """Set the RIFF and data chunk sizes from the file's real length (they are 0 after a crash)."""
    with open(path, "r+b") as handle:
        head = handle.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            raise JournalError(f"{path} is not a WAV file; cannot repair it")
        file_size = os.fstat(handle.fileno()).st_size
        block_align = 2
        offset = 12
        while offset + 8 <= file_size:
            handle.seek(offset)
            chunk_id, chunk_size = struct.unpack("<4sI", handle.read(8))
            if chunk_id == b"fmt ":
                block_align = struct.unpack("<H", handle.read(14)[12:14])[0] or 2
            elif chunk_id == b"data":
                data_start = offset + 8
                data_bytes = (file_size - data_start) // block_align * block_align
                if chunk_size != data_bytes:
                    handle.truncate(data_start + data_bytes)
                    handle.seek(offset + 4)
                    handle.write(struct.pack("<I", data_bytes))
                    handle.seek(4)
                    handle.write(struct.pack("<I", data_start + data_bytes - 8))
                    handle.flush()
                    os.fsync(handle.fileno())
                return data_bytes // block_align
            offset += 8 + chunk_size + (chunk_size & 1)
    raise JournalError(f"{path} has no audio data chunk; the recording is empty or damaged")


def _repair_flac(path: Path) -> int:
    """Decode what a crashed FLAC holds (its length is unknown) and write it again properly."""
    import soundfile

    try:
        with soundfile.SoundFile(path) as source:
            if source.frames < _UNKNOWN_LENGTH:
                return source.frames
            rate, blocks = source.samplerate, []
            while True:
                try:
                    block = source.read(160, dtype="float32")  # small reads: lose at most 10 ms at the end
                except RuntimeError:
                    break  # the end of what was written
                if len(block) == 0:
                    break
                blocks.append(block)
    except RuntimeError as error:
        raise JournalError(f"cannot read recording {path}: {error}") from error
    audio = np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
    temp = path.with_name(f".{path.name}.repair")
    soundfile.write(temp, audio, rate, format="FLAC", subtype="PCM_16")
    _fsync_path(temp)
    os.replace(temp, path)
    return len(audio)
