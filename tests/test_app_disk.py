"""A full disk mid-session: the app says so at once, and the captions keep coming (issue 5)."""

from __future__ import annotations

import errno
import os

import pytest

import tui.journal as journal_module
from tests.test_app import Harness, conversation, isolated_dirs, wait_for  # noqa: F401 (autouse fixture)


async def test_full_disk_is_shown_and_captions_continue(monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = os.write
    state = {"full": False, "fd": None}

    def write(fd: int, data: bytes) -> int:
        if state["full"] and fd == state["fd"]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(journal_module.os, "write", write)
    harness = Harness(conversation(repeats=4), live=True)
    app = harness.app
    notices: list[str] = []
    original_notify = app.notify

    def notify(message: str, *args: object, **kwargs: object) -> None:
        notices.append(str(message))
        original_notify(message, *args, **kwargs)

    app.notify = notify  # type: ignore[method-assign]
    async with app.run_test(size=(110, 32)) as pilot:
        await wait_for(pilot, lambda: harness.runtime.journal is not None, "journal open")
        segments = lambda: [e for e in harness.captions.entries if e.kind == "segment"]  # noqa: E731
        await wait_for(pilot, lambda: len(segments()) >= 1, "a first caption line")
        state["fd"] = harness.runtime.journal._fd
        state["full"] = True  # the disk fills up
        shown_before = len(segments())
        await wait_for(pilot, lambda: any("No space left" in n for n in notices), "a disk-full notice")
        await wait_for(pilot, lambda: len(segments()) > shown_before + 1, "captions after the disk filled")
        assert app.is_running and app.state != "error"
        state["full"] = False  # space comes back: what was kept in memory is written, once, in order
        await pilot.press("q")
        await wait_for(pilot, lambda: not app.is_running, "exit")
        shown = [e.text for e in segments()]
    contents = journal_module.read_journal(harness.runtime.journal_path)
    assert [s.text for s in contents.segments][: len(shown)] == shown
