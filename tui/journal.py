"""Session journals: one JSONL file per session, written record by record so no final line is lost.

A journal is ``<data dir>/sessions/<session id>.jsonl``. Its first line is a ``header`` record
(model, device, delay, input, settings); then one line per event, appended, flushed and fsync'd
as it happens: ``segment`` (a finalized caption line), ``mark`` (delay change, restart, dropped
audio, bookmark, pause, resume); on a clean close an ``end`` record. A crash can only tear the
last line, which the reader detects and ignores. Example::

    {"type": "header", "format": 1, "session_id": "20261125-130537-3f2a", "model_name": ...}
    {"type": "segment", "index": 0, "text": "Hello.", "start_s": 0.48, "end_s": 1.2, ...}
    {"type": "mark", "kind": "bookmark", "audio_s": 3.1, "wall_time": 1764075940.2, "details": {}}
    {"type": "end", "reason": "normal", "wall_time": 1764075999.0, "audio_s": 61.0, ...}

The writer never raises into the caption path: I/O errors put it in an error state (``error``,
``on_error``) and keep the unwritten records in memory (bounded) until a later write succeeds.
Session discovery (``list_sessions``, ``find_interrupted_sessions``) is in ``tui.commands.sessions``;
exporters in ``tui.export``.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tui.errors import JournalError
from tui.segments import Segment

if TYPE_CHECKING:
    from tui.recording import AudioRecorder

try:
    import fcntl
except ImportError:  # not POSIX: journals work, but a live session cannot be told from a crashed one
    fcntl = None  # type: ignore[assignment]

JOURNAL_FORMAT = 1  # bumped when a record changes incompatibly; readers accept <= this
DATA_DIR_ENV = "VOXCAP_DATA_DIR"
MARK_KINDS = frozenset({"delay_change", "restart", "dropped_audio", "bookmark", "pause", "resume"})
DEFAULT_MAX_PENDING = 50_000  # unwritten records kept while the disk fails (~10 MB of caption text)


def data_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """voxcap's data directory: ``override``, else ``$VOXCAP_DATA_DIR``, else the XDG data dir."""
    if override is not None:
        return Path(override)
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV])
    import platformdirs

    return Path(platformdirs.user_data_dir("voxcap"))


def sessions_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """Where journals (and recordings beside them) live."""
    return data_dir(override) / "sessions"


def new_session_id(now: float | None = None) -> str:
    """``YYYYMMDD-HHMMSS-xxxx`` in local time: sorts by start, readable, unique enough."""
    stamp = datetime.fromtimestamp(time.time() if now is None else now).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{secrets.token_hex(2)}"


@dataclass(frozen=True)
class SessionHeader:
    """What a session was made with; the journal's first record. Fill what you know."""

    model_name: str = ""
    model_format: str = ""  # "consolidated" | "hf" | "gguf" ...
    model_quant: str = ""  # "bf16", "Q4_K", ...
    device: str = ""  # "cuda:0", "cpu"
    delay_ms: int = 480  # delay at the start (changes go in as delay_change marks)
    language: str | None = None  # expected language (ISO 639-1), None = auto
    input_source: str = "mic"  # "mic" | "system" | "file" | "stdin" | "mix"
    input_device: str | None = None  # device name or file path
    settings: dict[str, Any] = field(default_factory=dict)  # the effective settings, as data
    audio_path: str | None = None  # the recording beside the journal, if any
    # Filled in by Journal when it starts the session (leave empty):
    session_id: str = ""
    started_at: float = 0.0  # time.time()
    voxcap_version: str = ""

    def to_record(self) -> dict[str, Any]:
        started_iso = datetime.fromtimestamp(self.started_at, UTC).isoformat(timespec="milliseconds")
        return {"type": "header", "format": JOURNAL_FORMAT, **asdict(self), "started_iso": started_iso}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> SessionHeader:
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in record.items() if key in known})


@dataclass(frozen=True)
class Mark:
    """A moment in the session that is not a caption: see MARK_KINDS."""

    kind: str
    audio_s: float  # on the session's audio clock
    wall_time: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        return {"type": "mark", **asdict(self)}


def segment_record(segment: Segment) -> dict[str, Any]:
    return {
        "type": "segment",
        "index": segment.index,
        "text": segment.text,
        "start_s": round(segment.start_s, 6),
        "end_s": round(segment.end_s, 6),
        "wall_time": segment.wall_time,
        "delay_ms": segment.delay_ms,
        "language": segment.language,
        "source": segment.source,
    }


def segment_from_record(record: dict[str, Any]) -> Segment:
    return Segment(
        index=int(record["index"]),
        text=str(record["text"]),
        start_s=float(record["start_s"]),
        end_s=float(record["end_s"]),
        final=True,
        wall_time=float(record.get("wall_time") or 0.0),
        delay_ms=int(record.get("delay_ms") or 0),
        language=record.get("language"),
        source=str(record.get("source") or "mic"),
    )


@dataclass
class JournalContents:
    """A parsed journal (or a live journal's snapshot)."""

    path: Path
    header: SessionHeader
    segments: list[Segment]
    marks: list[Mark]
    end: dict[str, Any] | None = None  # the end record; None = interrupted (or still running)
    recovered: bool = False  # an interrupted session that was acknowledged later
    torn_tail: bool = False  # the last line was cut off by a crash (ignored)
    damaged_lines: int = 0  # other unreadable lines (ignored)

    @property
    def ended_cleanly(self) -> bool:
        return self.end is not None

    @property
    def duration_s(self) -> float:
        """Audio-clock length: the end record's, else the latest time any record mentions."""
        times = [0.0] + [s.end_s for s in self.segments] + [m.audio_s for m in self.marks]
        if self.end is not None:
            times.append(float(self.end.get("audio_s") or 0.0))
        return max(times)

    @property
    def word_count(self) -> int:
        return sum(len(segment.text.split()) for segment in self.segments)

    @property
    def audio_path(self) -> str | None:
        return (self.end or {}).get("audio_path") or self.header.audio_path


def read_journal(path: str | os.PathLike[str]) -> JournalContents:
    """Parse a journal. Tolerates a torn last line and damaged lines; raises JournalError when
    the file cannot be read or holds no header."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise JournalError(f"cannot read session journal {path}: {error.strerror}; check the path") from error
    lines = raw.split(b"\n")
    torn_tail = lines[-1] != b""  # a complete journal ends with a newline
    header: SessionHeader | None = None
    segments: list[Segment] = []
    marks: list[Mark] = []
    seen: set[int] = set()
    contents_end: dict[str, Any] | None = None
    recovered = False
    damaged = 0
    for number, line in enumerate(lines[:-1] if torn_tail else lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            kind = record["type"]
            if kind == "header" and header is None:
                header = SessionHeader.from_record(record)
            elif kind == "segment":
                segment = segment_from_record(record)
                if segment.index not in seen:  # the writer never repeats one; be safe anyway
                    seen.add(segment.index)
                    segments.append(segment)
            elif kind == "mark":
                marks.append(Mark(str(record["kind"]), float(record["audio_s"]),
                                  float(record.get("wall_time") or 0.0), dict(record.get("details") or {})))
            elif kind == "end":
                contents_end = record
            elif kind == "recovered":
                recovered = True
        except (ValueError, KeyError, TypeError):
            damaged += 1
            if number == 0:
                break
    if header is None:
        raise JournalError(f"{path} is not a voxcap session journal (no header record); pick a .jsonl "
                           "file from `voxcap sessions`")
    return JournalContents(path, header, segments, marks, contents_end, recovered, torn_tail, damaged)


class AppendResult(Enum):
    WRITTEN = "written"  # on disk (fsync'd), with everything before it
    PENDING = "pending"  # kept in memory: the disk failed (see Journal.error); retried later
    DUPLICATE = "duplicate"  # a segment with this index was taken before: ignored
    REJECTED = "rejected"  # not final, unknown mark kind, or the journal is closed: ignored


@dataclass(frozen=True, slots=True)
class _Record:
    seq: int  # order of submission; the header is 0
    data: bytes  # one JSON line, newline included
    record: dict[str, Any]


def _describe(error: OSError, path: Path) -> str:
    code = errno.errorcode.get(error.errno or 0, "")
    reason = f"{error.strerror or error} ({code})" if code else str(error.strerror or error)
    hints = {errno.ENOSPC: "free some disk space", errno.EDQUOT: "free some disk space",
             errno.EACCES: f"make {path.parent} writable or set {DATA_DIR_ENV}",
             errno.EROFS: f"set {DATA_DIR_ENV} to a writable directory"}
    hint = hints.get(error.errno or 0, "check the disk")
    return f"cannot write session journal {path}: {reason}; captions continue, {hint}"


class Journal:
    """Writes one session's journal. Thread-safe; every public method is safe to call from a
    signal handler (a close that interrupts a write is deferred to the end of that write).

    ``append_segment`` / ``add_mark`` return at once with an AppendResult and never raise. On an
    I/O error the record stays in memory, ``error`` says what is wrong, ``on_error(message)`` is
    called (and ``on_error(None)`` once writing works again), and writes are retried at most every
    ``retry_interval_s`` (or now, with ``retry()``).
    """

    def __init__(
        self,
        header: SessionHeader | None = None,
        *,
        data_dir: str | os.PathLike[str] | None = None,
        path: str | os.PathLike[str] | None = None,
        on_error: Callable[[str | None], None] | None = None,
        max_pending: int = DEFAULT_MAX_PENDING,
        retry_interval_s: float = 1.0,
        record_audio: str | None = None,
        on_audio_error: Callable[[str | None], None] | None = None,
    ) -> None:
        from tui import __version__

        header = header or SessionHeader()
        started_at = header.started_at or time.time()
        session_id = header.session_id or new_session_id(started_at)
        self.path = Path(path) if path is not None else sessions_dir(data_dir) / f"{session_id}.jsonl"
        self.recorder: AudioRecorder | None = None  # with record_audio="wav"|"flac": feed it the 16 kHz input
        audio_path = header.audio_path
        if record_audio is not None:
            from tui.recording import AudioRecorder, recording_path

            audio_path = str(recording_path(self.path, record_audio))
            self.recorder = AudioRecorder(audio_path, on_error=on_audio_error)
        self.header = SessionHeader(**{**asdict(header), "session_id": session_id, "started_at": started_at,
                                       "voxcap_version": header.voxcap_version or __version__,
                                       "audio_path": audio_path})
        self.on_error = on_error
        self.max_pending = max(2, max_pending)
        self.retry_interval_s = retry_interval_s
        self.lost_records = 0  # records dropped from memory because max_pending was reached
        self.segments_written = 0
        self._lock = threading.RLock()  # reentrant: a signal handler may run on a writing thread
        self._fd: int | None = None
        self._created = False
        self._pending: deque[_Record] = deque()
        self._committed = (0, -1)  # (file size, seq of the last record on disk): one attribute, set at once
        self._needs_newline = False  # a torn record could not be cut off: start the next on a new line
        self._next_seq = 0
        self._indices: set[int] = set()
        self._last_audio_s = 0.0
        self._error: str | None = None
        self._retry_at = 0.0
        self._busy = False
        self._deferred_close: str | None = None
        self._closed = False
        with self._lock:
            self._submit(self.header.to_record())

    @property
    def session_id(self) -> str:
        return self.header.session_id

    @property
    def error(self) -> str | None:
        """What is wrong with writing, or None while every record is on disk."""
        return self._error

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def pending_count(self) -> int:
        """Records in memory that are not on disk yet."""
        with self._lock:
            self._prune()
            return len(self._pending)

    def append_segment(self, segment: Segment) -> AppendResult:
        """Journal a finalized segment (partials are refused; each index is written once)."""
        with self._lock:
            if not segment.final or self._closed:
                return AppendResult.REJECTED
            if segment.index in self._indices:
                return AppendResult.DUPLICATE
            self._indices.add(segment.index)
            self._last_audio_s = max(self._last_audio_s, segment.end_s)
            record = segment_record(segment)
            record["wall_time"] = segment.wall_time or time.time()  # when it was journaled, if unset
            return self._submit(record)

    def add_mark(self, kind: str, audio_s: float, **details: Any) -> AppendResult:
        """Journal a mark (kind in MARK_KINDS), e.g. ``add_mark("delay_change", 12.3, to_ms=960)``."""
        with self._lock:
            if kind not in MARK_KINDS or self._closed:
                return AppendResult.REJECTED
            self._last_audio_s = max(self._last_audio_s, audio_s)
            return self._submit(Mark(kind, round(audio_s, 6), time.time(), details).to_record())

    def retry(self) -> bool:
        """Try to write what is pending now; True when everything is on disk."""
        with self._lock:
            if self._busy:
                return False
            self._busy = True
            try:
                self._drain(force=True)
                return self.pending_count == 0
            finally:
                self._after_busy()

    def close(self, reason: str = "normal") -> bool:
        """Write the end record, flush and close. Idempotent. True when everything reached the disk;
        False leaves the unwritten records in memory (``retry()`` still works, ``contents()`` shows
        them). Called from a signal handler in the middle of a write, it finishes after that write."""
        with self._lock:
            if self._busy:
                self._deferred_close = reason
                return False
            self._busy = True
            try:
                if self._closed:  # closed before, maybe with records left over: try them again
                    self._drain(force=True)
                    return self.pending_count == 0
                return self._close_now(reason)
            finally:
                self._busy = False

    def contents(self) -> JournalContents:
        """Everything journaled so far, from disk plus what is still in memory (for exports)."""
        with self._lock:
            try:
                contents = read_journal(self.path)
            except JournalError:
                contents = JournalContents(self.path, self.header, [], [])
            known = {segment.index for segment in contents.segments}
            for pending in list(self._pending):
                if pending.seq <= self._committed[1]:
                    continue
                record = pending.record
                if record["type"] == "segment" and record["index"] not in known:
                    contents.segments.append(segment_from_record(record))
                elif record["type"] == "mark":
                    contents.marks.append(Mark(record["kind"], record["audio_s"], record["wall_time"],
                                               record["details"]))
                elif record["type"] == "end":
                    contents.end = record
            return contents

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        self.close("normal" if exc_type is None else f"error: {exc_type.__name__}")

    # --- internals (called with the lock held) ---

    def _submit(self, record: dict[str, Any]) -> AppendResult:
        if self._closed:  # a signal handler closed the journal while this append was on its way
            return AppendResult.REJECTED
        data = (json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str) + "\n").encode()
        self._enqueue(_Record(self._next_seq, data, record))
        self._next_seq += 1
        if self._busy:  # re-entered from a signal handler mid-write: the outer call writes it
            return AppendResult.PENDING
        self._busy = True
        try:
            self._drain(force=False)
            return AppendResult.PENDING if self.pending_count else AppendResult.WRITTEN
        finally:
            self._after_busy()

    def _prune(self) -> None:
        """Drop records already on disk from the head of the queue (at most one, after a signal)."""
        while self._pending and self._pending[0].seq <= self._committed[1]:
            self._pending.popleft()

    def _enqueue(self, record: _Record) -> None:
        self._pending.append(record)
        if self.pending_count > self.max_pending:  # the disk has failed for long: keep the header and
            del self._pending[1 if self._pending[0].seq == 0 else 0]  # the newest, drop the oldest
            self.lost_records += 1

    def _after_busy(self) -> None:
        self._busy = False
        if self._deferred_close is not None and not self._closed:
            reason, self._deferred_close = self._deferred_close, None
            self._busy = True
            try:
                self._close_now(reason)
            finally:
                self._busy = False

    def _close_now(self, reason: str) -> bool:
        end = {"type": "end", "reason": reason, "wall_time": time.time(),
               "audio_s": round(self._last_audio_s, 6), "segments": len(self._indices),
               "lost_records": self.lost_records}
        if self.recorder is not None:  # finish the recording first: the end record vouches for it
            self.recorder.close()
            audio_s = max(end["audio_s"], round(self.recorder.duration_s, 6))
            end.update(audio_path=str(self.recorder.path), audio_s=audio_s, audio_error=self.recorder.error)
        self._closed = True
        data = (json.dumps(end, ensure_ascii=False, separators=(",", ":"), default=str) + "\n").encode()
        self._enqueue(_Record(self._next_seq, data, end))
        self._next_seq += 1
        self._drain(force=True)
        return self.pending_count == 0

    def _drain(self, force: bool) -> None:
        if self.pending_count == 0:
            return
        if self._error is not None and not force and time.monotonic() < self._retry_at:
            return
        try:
            self._write_pending()
        except OSError as error:
            self._retry_at = time.monotonic() + self.retry_interval_s
            message = _describe(error, self.path)
            if self.lost_records:
                message += f" ({self.lost_records} records lost: memory limit)"
            self._set_error(message)
            return
        self._set_error(None)
        if self._closed and self._fd is not None:
            self._release_fd()

    def _write_pending(self) -> None:
        if self._fd is None:
            self._open()
        assert self._fd is not None
        self._reconcile()
        self._prune()
        while self._pending:
            record = self._pending[0]
            size = self._committed[0]
            data = b"\n" + record.data if self._needs_newline else record.data
            self._write_all(data, size)
            self._committed = (size + len(data), record.seq)  # one store: a signal can't split it
            self._needs_newline = False
            self._pending.popleft()
            if record.record["type"] == "segment":
                self.segments_written += 1

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(self.path, flags | (0 if self._created else os.O_EXCL), 0o644)
        self._created = True
        if fcntl is not None:
            try:  # held while the session runs: `voxcap sessions` tells live from interrupted by it
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                pass
        try:  # make the new directory entry durable too
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError:
            pass
        self._fd = fd
        self._committed = (os.fstat(fd).st_size, self._committed[1])

    def _reconcile(self) -> None:
        """Match the file's real size to what we believe is on disk (an interrupted or failed
        write may have left a whole record we did not count, or a torn one)."""
        assert self._fd is not None
        actual = os.fstat(self._fd).st_size
        size, last_seq = self._committed
        if actual == size:
            return
        first = next((r for r in self._pending if r.seq > last_seq), None)
        if first is not None and actual == size + len(first.data) and not self._needs_newline:
            self._committed = (actual, first.seq)  # it was written; don't write it twice
            return
        try:
            os.ftruncate(self._fd, size)
        except OSError:
            self._committed = (actual, last_seq)
            self._needs_newline = True

    def _write_all(self, data: bytes, size: int) -> None:
        assert self._fd is not None
        try:
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            os.fsync(self._fd)
        except OSError:
            self._reconcile()  # cut a torn record off so the next write starts a clean line
            raise

    def _release_fd(self) -> None:
        assert self._fd is not None
        try:
            os.close(self._fd)  # releases the flock too
        except OSError:
            pass
        self._fd = None

    def _set_error(self, message: str | None) -> None:
        if message == self._error:
            return
        self._error = message
        if self.on_error is not None:
            try:
                self.on_error(message)
            except Exception:  # a broken UI callback must not stop the journal or the captions
                pass


def install_signal_handlers(
    journal: Journal | Callable[[], Journal | None],
    signals: Iterable[signal.Signals] = (signal.SIGTERM, signal.SIGHUP),
    *,
    exit_after: bool = True,
) -> Callable[[], None]:
    """Close the journal (reason = the signal's name, e.g. "SIGTERM") when one of ``signals``
    arrives, then exit with status 128 + signum (``exit_after``). ``journal`` may be a callable
    returning the current journal. Call from the main thread; returns a function that restores
    the previous handlers. (An asyncio app can instead call ``journal.close("SIGTERM")`` from
    ``loop.add_signal_handler``.)"""

    def handle(signum: int, _frame: object) -> None:
        current = journal() if callable(journal) and not isinstance(journal, Journal) else journal
        if current is not None:
            current.close(reason=signal.Signals(signum).name)
        if exit_after:
            raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, handle) for sig in signals}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore
