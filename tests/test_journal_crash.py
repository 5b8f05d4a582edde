"""The journal under SIGKILL at random moments, and on a really full disk (a tiny tmpfs)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from tui.journal import AppendResult, Journal, SessionHeader, read_journal
from tui.segments import Segment

WRITER = textwrap.dedent("""
    import random, sys
    from tui.journal import AppendResult, Journal, SessionHeader
    from tui.segments import Segment
    rng = random.Random(int(sys.argv[2]))
    journal = Journal(SessionHeader(model_name="child"), path=sys.argv[1])
    index = 0
    while True:
        text = f"{index}:" + "x" * rng.choice([1, 40, 400, 40000])
        if journal.append_segment(Segment(index, text, index * 0.08, index * 0.08 + 0.08, final=True)) \\
                is AppendResult.WRITTEN:
            print(index, flush=True)  # reported as finalized only after append returned
        if rng.random() < 0.2:
            journal.add_mark("bookmark", index * 0.08)
        index += 1
""")


def _expected_text(seed: int, index: int) -> str:
    """The child's text for segment ``index`` (same random draws, marks included)."""
    rng = random.Random(seed)
    for i in range(index + 1):
        text = f"{i}:" + "x" * rng.choice([1, 40, 400, 40000])
        rng.random()
    return text


def test_sigkill_at_random_moments_loses_and_repeats_nothing(tmp_path) -> None:
    rng = random.Random(2026)
    for trial in range(24):
        path = tmp_path / f"trial{trial}.jsonl"
        child = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(trial)],
                                 stdout=subprocess.PIPE, text=True)
        reported: list[int] = []
        wanted = rng.randint(0, 30)
        while len(reported) < wanted:
            reported.append(int(child.stdout.readline()))
        if rng.random() < 0.5:
            os.sched_yield()
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        reported += [int(line) for line in child.stdout.read().split()]
        child.stdout.close()
        if not path.exists():  # killed before the journal was even created
            assert reported == []
            continue
        contents = read_journal(path)  # parses, whatever the moment of the kill
        indices = [s.index for s in contents.segments]
        assert indices == list(range(len(indices))), f"trial {trial}: gaps or repeats in {indices}"
        assert set(reported) <= set(indices), f"trial {trial}: reported segments missing"
        assert len(indices) <= len(reported) + 1  # at most the one being reported when killed
        complete_lines = path.read_bytes().split(b"\n")[:-1]  # the reader dedups; check the raw file
        raw = [json.loads(line)["index"] for line in complete_lines if b'"type":"segment"' in line]
        assert raw == indices, f"trial {trial}: a segment line was written twice"
        for segment in contents.segments[-3:]:
            assert segment.text == _expected_text(trial, segment.index)
        assert not contents.ended_cleanly


@pytest.fixture
def tiny_tmpfs(tmp_path) -> Path:
    mount_point = tmp_path / f"full-{uuid.uuid4().hex[:6]}"
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount_point)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "--lazy", str(mount_point)], check=False)  # lazy: a failed test's open fd


def test_full_disk_keeps_captions_going_and_catches_up(tiny_tmpfs) -> None:
    reports: list[str | None] = []
    journal = Journal(SessionHeader(model_name="m"), data_dir=tiny_tmpfs, on_error=reports.append,
                      retry_interval_s=0.0)
    filler = tiny_tmpfs / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:  # eat the rest of the disk
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    results = [journal.append_segment(Segment(i, f"line {i} " + "y" * 1000, i, i + 1, final=True))
               for i in range(40)]
    assert AppendResult.PENDING in results  # the disk did fill up, and nothing raised
    assert journal.error is not None and "ENOSPC" in journal.error and reports[0] == journal.error
    assert [s.index for s in journal.contents().segments] == list(range(40))
    on_disk = read_journal(journal.path)
    assert on_disk.damaged_lines == 0 and not on_disk.torn_tail
    filler.unlink()  # space comes back
    assert journal.close() is True and journal.error is None and reports[-1] is None
    contents = read_journal(journal.path)
    assert [s.index for s in contents.segments] == list(range(40)) and contents.ended_cleanly
