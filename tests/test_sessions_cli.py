"""`voxcap sessions` and `voxcap export` (run as real subprocesses), and interrupted-session discovery."""

from __future__ import annotations

import html
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import srt
import webvtt

from tui.commands.sessions import (
    acknowledge_interrupted,
    find_interrupted_sessions,
    list_sessions,
    resolve_session,
)
from tui.errors import JournalError
from tui.journal import Journal, SessionHeader, read_journal
from tui.segments import Segment

TEXTS = ["Good morning everyone.", "Today: fish & chips <cheap>.", "Questions --> later."]


def make_session(data_dir, *, started_at: float, close: bool, model: str = "voxtral-mini") -> Journal:
    header = SessionHeader(model_name=model, model_quant="Q4_K", started_at=started_at)
    journal = Journal(header, data_dir=data_dir)
    for index, text in enumerate(TEXTS):
        journal.append_segment(Segment(index, text, 1.0 + index * 2, 2.5 + index * 2, final=True))
    if close:
        journal.close()
    return journal


def voxcap(data_dir, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "VOXCAP_DATA_DIR": str(data_dir)}
    return subprocess.run([sys.executable, "-m", "tui.cli", *args], capture_output=True, text=True, env=env,
                          timeout=60)


@pytest.fixture
def sessions(tmp_path):
    """An older complete session, a newer interrupted one (torn last line), and a live one."""
    complete = make_session(tmp_path, started_at=1_700_000_000.0, close=True)
    crashed = make_session(tmp_path, started_at=1_700_100_000.0, close=False)
    crashed._release_fd()  # as if the process had died: its lock goes away
    with open(crashed.path, "ab") as handle:
        handle.write(b'{"type":"segment","index":3,"te')
    live = make_session(tmp_path, started_at=1_700_200_000.0, close=False)
    yield complete, crashed, live
    live.close()


def test_list_and_find_interrupted(tmp_path, sessions) -> None:
    complete, crashed, live = sessions
    listed = list_sessions(tmp_path)
    assert [s.path for s in listed] == [live.path, crashed.path, complete.path]  # newest first
    assert [s.status for s in listed] == ["live", "interrupted", "complete"]
    assert listed[2].words == sum(len(t.split()) for t in TEXTS) and listed[2].duration_s == 6.5
    assert listed[2].model == "voxtral-mini Q4_K"
    assert [s.path for s in find_interrupted_sessions(tmp_path)] == [crashed.path]
    with pytest.raises(JournalError, match="still being written"):
        acknowledge_interrupted(live.path)
    acknowledge_interrupted(crashed.path)
    assert find_interrupted_sessions(tmp_path) == []
    contents = read_journal(crashed.path)
    assert contents.recovered and not contents.torn_tail and not contents.ended_cleanly
    assert [s.text for s in contents.segments] == TEXTS


def test_acknowledge_repairs_the_recording(tmp_path) -> None:
    journal = Journal(data_dir=tmp_path, record_audio="wav")
    journal.recorder.write(np.full(8000, 0.25, np.float32))
    journal.recorder.flush()
    journal._release_fd()  # crash: neither the journal nor the WAV header is finished
    with open(journal.header.audio_path, "rb") as handle:
        assert int.from_bytes(handle.read(44)[40:44], "little") == 0
    acknowledge_interrupted(journal.path)
    with open(journal.header.audio_path, "rb") as handle:
        assert int.from_bytes(handle.read(44)[40:44], "little") == 16000


def test_resolve_session(tmp_path, sessions) -> None:
    complete, crashed, live = sessions
    assert resolve_session("last", tmp_path) == live.path
    assert resolve_session(complete.session_id, tmp_path) == complete.path
    assert resolve_session(str(crashed.path), tmp_path) == crashed.path
    assert resolve_session(complete.session_id[:-2], tmp_path) == complete.path
    with pytest.raises(JournalError, match="ambiguous"):
        resolve_session("20", tmp_path)
    with pytest.raises(JournalError, match="no session 'nope'.*voxcap sessions"):
        resolve_session("nope", tmp_path)
    with pytest.raises(JournalError, match="no sessions in"):
        resolve_session("last", tmp_path / "empty")


def in_process(monkeypatch, capsys, data_dir, *args: str) -> tuple[int, str, str]:
    """The CLI in this process (fast); the subprocess tests below cover the real entry point."""
    from tui.cli import main

    monkeypatch.setenv("VOXCAP_DATA_DIR", str(data_dir))
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_sessions_command_subprocess(tmp_path, sessions) -> None:
    complete, crashed, _ = sessions
    result = voxcap(tmp_path, "sessions")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["DATE", "DURATION", "WORDS", "MODEL", "STATUS", "PATH"]
    row = next(line for line in lines if str(crashed.path) in line)
    assert "interrupted" in row and "00:00:07" in row and " 11 " in row
    assert "complete" in next(line for line in lines if str(complete.path) in line)


def test_sessions_command_options(tmp_path, sessions, monkeypatch, capsys) -> None:
    _, crashed, _ = sessions
    code, out, _ = in_process(monkeypatch, capsys, tmp_path, "sessions", "--json")
    assert code == 0 and [json.loads(line)["status"] for line in out.splitlines()] == [
        "live", "interrupted", "complete"]
    assert in_process(monkeypatch, capsys, tmp_path, "sessions", "--ack", crashed.session_id)[0] == 0
    out = in_process(monkeypatch, capsys, tmp_path, "sessions", "-n", "2")[1]
    assert len(out.splitlines()) == 3 and "recovered" in next(
        line for line in out.splitlines() if str(crashed.path) in line)
    assert "No sessions yet" in in_process(monkeypatch, capsys, tmp_path / "empty", "sessions")[1]


def test_export_command_subprocess(tmp_path, sessions) -> None:
    complete, _, _ = sessions
    out = tmp_path / "out.srt"
    result = voxcap(tmp_path, "export", complete.session_id, "--format", "srt", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out)
    subtitles = list(srt.parse(out.read_text()))
    assert [" ".join(s.content.split()) for s in subtitles] == TEXTS
    assert [s.start.total_seconds() for s in subtitles] == [1.0, 3.0, 5.0]
    result = voxcap(tmp_path, "export", "no-such-session", "-f", "txt")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("voxcap: error: no session 'no-such-session'")
    assert len(result.stderr.strip().splitlines()) == 1


def test_export_command_variants(tmp_path, sessions, monkeypatch, capsys) -> None:
    complete, crashed, live = sessions
    code, out, err = in_process(monkeypatch, capsys, tmp_path, "export", "last", "-f", "vtt", "-o", "-")
    assert code == 0, err  # the live session, mid-way
    captions = webvtt.from_string(out).captions
    assert [html.unescape(" ".join(c.text.split())) for c in captions] == TEXTS
    code, _, err = in_process(monkeypatch, capsys, tmp_path, "export", str(crashed.path),
                              "-o", str(tmp_path / "crashed.json"))
    assert code == 0 and "did not end cleanly" in err
    document = json.loads((tmp_path / "crashed.json").read_text())  # format from the suffix
    assert [s["text"] for s in document["segments"]] == TEXTS and document["ended_cleanly"] is False
    monkeypatch.chdir(tmp_path)
    code, out, _ = in_process(monkeypatch, capsys, tmp_path, "export", complete.session_id, "-f", "md")
    assert code == 0 and out.strip() == f"{complete.session_id}.md"
    assert (tmp_path / f"{complete.session_id}.md").read_text().count("**[00:00:0") == 3
