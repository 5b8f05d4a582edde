"""The session journal: round trip, fsync per record, torn lines, write errors, signals."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from tui import journal as journal_module
from tui.journal import AppendResult, Journal, SessionHeader, data_dir, read_journal, sessions_dir
from tui.segments import Segment


def seg(index: int, text: str | None = None, start: float | None = None) -> Segment:
    start = index * 2.0 if start is None else start
    return Segment(index, text or f"segment {index}.", start, start + 1.5, final=True, wall_time=1e9 + index,
                   delay_ms=480, language="en", source="mic")


HEADER = SessionHeader(model_name="voxtral-mini-4b", model_format="gguf", model_quant="Q4_K", device="cpu",
                       delay_ms=480, language="en", input_source="file", input_device="talk.wav",
                       settings={"theme": "dark", "vad": True})


def test_round_trip(tmp_path) -> None:
    journal = Journal(HEADER, data_dir=tmp_path)
    assert journal.path.parent == tmp_path / "sessions" and journal.path.suffix == ".jsonl"
    for index in range(3):
        assert journal.append_segment(seg(index)) is AppendResult.WRITTEN
    assert journal.add_mark("delay_change", 4.0, from_ms=480, to_ms=960) is AppendResult.WRITTEN
    assert journal.add_mark("bookmark", 5.0) is AppendResult.WRITTEN
    assert journal.close() is True
    contents = read_journal(journal.path)
    assert contents.ended_cleanly and not contents.torn_tail and contents.damaged_lines == 0
    header = contents.header
    assert (header.model_name, header.model_quant, header.device, header.input_device) == (
        "voxtral-mini-4b", "Q4_K", "cpu", "talk.wav")
    assert header.settings == {"theme": "dark", "vad": True}
    assert header.session_id == journal.session_id and header.started_at > 0 and header.voxcap_version
    assert contents.segments == [seg(i) for i in range(3)]
    assert [(m.kind, m.audio_s, m.details) for m in contents.marks] == [
        ("delay_change", 4.0, {"from_ms": 480, "to_ms": 960}), ("bookmark", 5.0, {})]
    assert contents.end["reason"] == "normal" and contents.end["segments"] == 3
    assert contents.duration_s == 5.5 and contents.word_count == 6
    lines = journal.path.read_text().splitlines()
    assert [json.loads(line)["type"] for line in lines] == ["header", "segment", "segment", "segment", "mark",
                                                             "mark", "end"]


def test_partials_duplicates_and_closed_journal_are_refused(tmp_path) -> None:
    journal = Journal(data_dir=tmp_path)
    partial = Segment(0, "still talk", 0.0, 1.0, final=False)
    assert journal.append_segment(partial) is AppendResult.REJECTED
    assert journal.append_segment(seg(0)) is AppendResult.WRITTEN
    assert journal.append_segment(seg(0, "changed text")) is AppendResult.DUPLICATE
    assert journal.add_mark("no-such-kind", 1.0) is AppendResult.REJECTED
    journal.close()
    assert journal.append_segment(seg(1)) is AppendResult.REJECTED
    assert journal.close() is True  # idempotent
    contents = read_journal(journal.path)
    assert [s.text for s in contents.segments] == ["segment 0."]
    assert journal.path.read_text().count('"type":"end"') == 1


def test_each_record_is_on_disk_and_fsynced_before_append_returns(tmp_path, monkeypatch) -> None:
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(journal_module.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    journal = Journal(HEADER, data_dir=tmp_path)
    for index in range(5):
        before = len(synced)
        journal.append_segment(seg(index))
        assert len(synced) > before  # fsync ran inside this append
        # a separate reader process sees the record now, before close
        out = subprocess.run([sys.executable, "-c", "import sys; from tui.journal import read_journal; "
                              "print(len(read_journal(sys.argv[1]).segments))", str(journal.path)],
                             capture_output=True, text=True, check=True)
        assert int(out.stdout) == index + 1
    journal.close()


def test_torn_last_line_and_damaged_lines_are_ignored(tmp_path) -> None:
    journal = Journal(data_dir=tmp_path)
    for index in range(3):
        journal.append_segment(seg(index))
    with open(journal.path, "ab") as handle:  # what a crash in the middle of a write leaves
        handle.write(b'{"type":"segment","index":3,"text":"cut o')
    contents = read_journal(journal.path)
    assert contents.torn_tail and not contents.ended_cleanly
    assert [s.index for s in contents.segments] == [0, 1, 2]
    lines = journal.path.read_bytes().split(b"\n")
    lines.insert(2, b"not json at all")
    journal.path.write_bytes(b"\n".join(lines))
    contents = read_journal(journal.path)
    assert contents.damaged_lines == 1 and [s.index for s in contents.segments] == [0, 1, 2]


def test_reader_errors_name_the_file(tmp_path) -> None:
    from tui.errors import JournalError

    with pytest.raises(JournalError, match="cannot read session journal .*missing.jsonl"):
        read_journal(tmp_path / "missing.jsonl")
    (tmp_path / "other.jsonl").write_text('{"type":"segment"}\n')
    with pytest.raises(JournalError, match="not a voxcap session journal"):
        read_journal(tmp_path / "other.jsonl")


def test_data_dir_override_order(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("VOXCAP_DATA_DIR", str(tmp_path / "env"))
    assert data_dir() == tmp_path / "env"
    assert data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert sessions_dir() == tmp_path / "env" / "sessions"
    monkeypatch.delenv("VOXCAP_DATA_DIR")
    assert data_dir().name == "voxcap"


class FlakyDisk:
    """Replaces os.write for one journal's file: fails with ENOSPC (optionally after a partial write)."""

    def __init__(self, monkeypatch, partial: bool = False) -> None:
        self.failing = False
        self.partial = partial
        self.journal: Journal | None = None
        self._real = os.write
        monkeypatch.setattr(journal_module.os, "write", self.write)

    def write(self, fd: int, data: bytes) -> int:
        if self.failing and self.journal is not None and fd == self.journal._fd:
            if self.partial and len(data) > 4:
                self._real(fd, bytes(data[: len(data) // 2]))  # a torn record on disk
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self._real(fd, data)


@pytest.mark.parametrize("partial", [False, True])
def test_write_errors_never_raise_and_records_are_kept(tmp_path, monkeypatch, partial) -> None:
    disk = FlakyDisk(monkeypatch, partial)
    reports: list[str | None] = []
    journal = Journal(HEADER, data_dir=tmp_path, on_error=reports.append, retry_interval_s=0.0)
    disk.journal = journal
    journal.append_segment(seg(0))
    disk.failing = True
    assert journal.append_segment(seg(1)) is AppendResult.PENDING
    assert journal.error is not None and "No space left on device (ENOSPC)" in journal.error
    assert reports == [journal.error]
    assert journal.add_mark("bookmark", 3.0) is AppendResult.PENDING
    assert journal.append_segment(seg(2)) is AppendResult.PENDING
    assert journal.pending_count == 3
    snapshot = journal.contents()  # export still sees everything
    assert [s.index for s in snapshot.segments] == [0, 1, 2] and len(snapshot.marks) == 1
    assert journal.retry() is False
    assert [s.index for s in read_journal(journal.path).segments] == [0]
    assert read_journal(journal.path).damaged_lines == 0  # a torn write was cut off again
    disk.failing = False
    assert journal.append_segment(seg(3)) is AppendResult.WRITTEN  # catches up, in order
    assert journal.error is None and reports[-1] is None and journal.pending_count == 0
    journal.close()
    contents = read_journal(journal.path)
    assert [s.index for s in contents.segments] == [0, 1, 2, 3] and contents.damaged_lines == 0
    assert contents.ended_cleanly and not contents.torn_tail


def test_failed_close_keeps_records_for_retry(tmp_path, monkeypatch) -> None:
    disk = FlakyDisk(monkeypatch)
    journal = Journal(data_dir=tmp_path, retry_interval_s=60.0)
    disk.journal = journal
    disk.failing = True
    journal.append_segment(seg(0))
    assert journal.close("SIGTERM") is False and journal.closed
    assert journal.pending_count == 2  # the segment and the end record
    assert journal.close() is False  # closing again retries, still failing
    disk.failing = False
    assert journal.close() is True  # and writes what was left, once
    assert journal.retry() is True
    contents = read_journal(journal.path)
    assert [s.index for s in contents.segments] == [0] and contents.end["reason"] == "SIGTERM"
    assert journal.path.read_text().count('"type":"end"') == 1


def test_pending_records_are_bounded_and_the_header_kept(tmp_path) -> None:
    blocker = tmp_path / "data"
    blocker.write_text("a file where the data directory should be")
    journal = Journal(HEADER, data_dir=blocker, max_pending=10, retry_interval_s=0.0)
    for index in range(50):
        assert journal.append_segment(seg(index)) is AppendResult.PENDING
    assert journal.pending_count == 10 and journal.lost_records == 41
    assert "records lost" in journal.error
    blocker.unlink()  # the user fixes the problem
    assert journal.retry() and journal.error is None
    contents = read_journal(journal.path)
    assert contents.header.model_name == HEADER.model_name
    assert [s.index for s in contents.segments] == list(range(41, 50))


def test_unwritable_directory_does_not_raise(tmp_path) -> None:
    (tmp_path / "file").write_text("in the way")
    reports: list[str | None] = []
    journal = Journal(data_dir=tmp_path / "file", on_error=reports.append)
    assert journal.error is not None and str(tmp_path / "file") in journal.error and reports
    assert journal.append_segment(seg(0)) is AppendResult.PENDING
    assert [s.text for s in journal.contents().segments] == ["segment 0."]
    assert journal.close() is False


def test_close_from_a_signal_handler_during_a_write_is_deferred(tmp_path, monkeypatch) -> None:
    """A handler that runs between os.write and fsync (close, then SystemExit as the installed
    handler does) must leave every record on disk exactly once and the journal closed."""
    journal = Journal(data_dir=tmp_path)
    journal.append_segment(seg(0))
    real_fsync = os.fsync
    fired: list[bool] = []

    def interrupted_fsync(fd: int) -> None:
        if not fired:
            fired.append(True)
            assert journal.close("SIGTERM") is False  # deferred: a write is in progress
            raise SystemExit(143)
        real_fsync(fd)

    monkeypatch.setattr(journal_module.os, "fsync", interrupted_fsync)
    with pytest.raises(SystemExit):
        journal.append_segment(seg(1))
    assert journal.closed
    contents = read_journal(journal.path)
    assert [s.index for s in contents.segments] == [0, 1]
    assert contents.end["reason"] == "SIGTERM" and contents.damaged_lines == 0


CHILD = textwrap.dedent("""
    import signal, sys, time
    from tui.journal import Journal, SessionHeader, install_signal_handlers
    from tui.segments import Segment
    journal = Journal(SessionHeader(model_name="child"), path=sys.argv[1])
    install_signal_handlers(journal)
    for index in range(3):
        journal.append_segment(Segment(index, f"line {index}", index, index + 1, final=True))
    print("ready", flush=True)
    while True:
        time.sleep(0.05)
""")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_signal_handlers_close_the_journal(tmp_path, signum) -> None:
    path = tmp_path / "child.jsonl"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    child.send_signal(signum)
    assert child.wait(timeout=10) == 128 + signum
    contents = read_journal(path)
    assert contents.ended_cleanly and contents.end["reason"] == signum.name
    assert [s.index for s in contents.segments] == [0, 1, 2]


def test_install_signal_handlers_restores_previous() -> None:
    from tui.journal import install_signal_handlers

    before = signal.getsignal(signal.SIGHUP)
    restore = install_signal_handlers(lambda: None, (signal.SIGHUP,), exit_after=False)
    assert signal.getsignal(signal.SIGHUP) is not before
    os.kill(os.getpid(), signal.SIGHUP)  # no journal yet: the handler must cope
    restore()
    assert signal.getsignal(signal.SIGHUP) is before
