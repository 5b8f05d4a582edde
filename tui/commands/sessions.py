"""`voxcap sessions`: list journaled sessions; plus session discovery for the app.

The app calls ``find_interrupted_sessions()`` at start to offer recovery (export) of sessions
that ended without an end record, and ``acknowledge_interrupted(path)`` once the user has
dealt with one, so it is not offered again.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from tui.errors import JournalError
from tui.journal import read_journal, sessions_dir

try:
    import fcntl
except ImportError:  # not POSIX: no way to tell a live session from an interrupted one
    fcntl = None  # type: ignore[assignment]

STATUSES = ("complete", "interrupted", "recovered", "live", "damaged")


@dataclass(frozen=True)
class SessionSummary:
    session_id: str
    path: Path
    started_at: float  # time.time() at the start (0 when damaged)
    duration_s: float  # audio-clock length
    words: int
    segments: int
    model: str
    status: str  # one of STATUSES; "interrupted" = no end record, not live, not acknowledged
    audio_path: str | None = None
    problem: str | None = None  # why a "damaged" journal could not be read


def is_live(path: str | os.PathLike[str]) -> bool:
    """True while a voxcap process is writing this journal (it holds an exclusive flock)."""
    if fcntl is None:
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # also drops our shared lock
    return False


def summarize(path: str | os.PathLike[str]) -> SessionSummary:
    path = Path(path)
    try:
        contents = read_journal(path)
    except JournalError as error:
        return SessionSummary(path.stem, path, 0.0, 0.0, 0, 0, "", "damaged", problem=str(error))
    header = contents.header
    if contents.ended_cleanly:
        status = "complete"
    elif is_live(path):
        status = "live"
    else:
        status = "recovered" if contents.recovered else "interrupted"
    model = " ".join(part for part in (header.model_name, header.model_quant) if part)
    return SessionSummary(header.session_id or path.stem, path, header.started_at, contents.duration_s,
                          contents.word_count, len(contents.segments), model, status, contents.audio_path)


def list_sessions(data_dir: str | os.PathLike[str] | None = None) -> list[SessionSummary]:
    """Every journal in the sessions directory, newest first."""
    directory = sessions_dir(data_dir)
    if not directory.is_dir():
        return []
    summaries = [summarize(path) for path in directory.glob("*.jsonl")]
    return sorted(summaries, key=lambda s: (s.started_at, s.session_id), reverse=True)


def _last_record_type(path: Path) -> str | None:
    """The type of the last complete record, from the file's tail only (cheap for long sessions)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, os.fstat(handle.fileno()).st_size - 65536))
            lines = handle.read().split(b"\n")[:-1]  # drop what follows the last newline (torn or empty)
        return str(json.loads(lines[-1])["type"]) if lines else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def find_interrupted_sessions(data_dir: str | os.PathLike[str] | None = None) -> list[SessionSummary]:
    """Sessions that ended without an end record (a crash, a kill, a power cut), are not being
    written now and have not been acknowledged; newest first. Meant for the app's start: only
    journals whose last record is not ``end``/``recovered`` are parsed in full."""
    directory = sessions_dir(data_dir)
    if not directory.is_dir():
        return []
    finished = ("end", "recovered")
    unfinished = [path for path in directory.glob("*.jsonl") if _last_record_type(path) not in finished]
    summaries = [summarize(path) for path in unfinished]
    interrupted = [s for s in summaries if s.status == "interrupted"]
    return sorted(interrupted, key=lambda s: (s.started_at, s.session_id), reverse=True)


def acknowledge_interrupted(path: str | os.PathLike[str], *, repair_audio: bool = True) -> None:
    """Mark an interrupted session as dealt with: cut a torn last line, append a ``recovered``
    record, and make its recording readable. Raises JournalError if it cannot."""
    path = Path(path)
    if is_live(path):
        raise JournalError(f"session {path} is still being written by a running voxcap; leave it be")
    contents = read_journal(path)
    try:
        with open(path, "r+b") as handle:
            raw = handle.read()
            handle.truncate(raw.rfind(b"\n") + 1)  # drop a torn last record, if any
            handle.seek(0, os.SEEK_END)
            handle.write(json.dumps({"type": "recovered", "wall_time": time.time()}).encode() + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:
        raise JournalError(f"cannot mark {path} as recovered: {error.strerror or error}; "
                           "check the file's permissions") from error
    if repair_audio and contents.audio_path and Path(contents.audio_path).is_file():
        from tui.recording import repair_recording

        repair_recording(contents.audio_path)


def resolve_session(spec: str, data_dir: str | os.PathLike[str] | None = None) -> Path:
    """A journal path from a path, a session id (or a unique prefix of one), or ``last``."""
    if spec == "last":
        sessions = list_sessions(data_dir)
        if not sessions:
            raise JournalError(f"no sessions in {sessions_dir(data_dir)} yet; run voxcap first")
        return sessions[0].path
    if Path(spec).is_file():
        return Path(spec)
    directory = sessions_dir(data_dir)
    exact = directory / f"{spec}.jsonl"
    if exact.is_file():
        return exact
    matches = sorted(directory.glob(f"{spec}*.jsonl")) if directory.is_dir() and spec else []
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise JournalError(f"session {spec!r} is ambiguous ({len(matches)} match); give more of the id")
    raise JournalError(f"no session {spec!r} in {directory}; run `voxcap sessions` to list them")


def format_duration(seconds: float) -> str:
    whole = int(seconds + 0.5)  # half up: 6.5 s shows as 00:00:07
    return f"{whole // 3600:02d}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sessions", help="list recorded sessions (journals)",
        description="List journaled sessions, newest first. Export one with `voxcap export ID`.")
    parser.add_argument("--json", action="store_true", help="print one JSON object per session")
    parser.add_argument("-n", "--limit", type=int, default=0, help="show only the newest N sessions")
    parser.add_argument("--ack", metavar="SESSION",
                        help="mark an interrupted session as recovered (it is no longer offered at start)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.ack:
        path = resolve_session(args.ack)
        acknowledge_interrupted(path)
        print(f"marked {path} as recovered")
        return 0
    sessions = list_sessions()
    if args.limit > 0:
        sessions = sessions[: args.limit]
    if args.json:
        for s in sessions:
            print(json.dumps({**asdict(s), "path": str(s.path)}, ensure_ascii=False))
        return 0
    if not sessions:
        print(f"No sessions yet in {sessions_dir()}.")
        return 0
    rows = [("DATE", "DURATION", "WORDS", "MODEL", "STATUS", "PATH")]
    for s in sessions:
        date = datetime.fromtimestamp(s.started_at).strftime("%Y-%m-%d %H:%M") if s.started_at else "?"
        duration = format_duration(s.duration_s)
        rows.append((date, duration, str(s.words), s.model or "?", s.status, str(s.path)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1])
    return 0
