"""The live caption file (for OBS text sources): last N lines, rewritten atomically."""

from __future__ import annotations

import threading

from tui.livefile import LiveCaptionFile, atomic_write_text


def test_keeps_the_last_lines_and_the_partial(tmp_path) -> None:
    path = tmp_path / "captions.txt"
    live = LiveCaptionFile(path, max_lines=2)
    live.add_final("First line.")
    assert path.read_text() == "First line.\n"
    live.set_partial("and then  some")
    assert path.read_text() == "First line.\nand then some\n"
    live.add_final("Second line.")
    live.add_final("Third\nline.")
    assert path.read_text() == "Second line.\nThird line.\n"
    live.set_partial("partial")
    assert path.read_text() == "Third line.\npartial\n"
    live.clear()
    assert path.read_text() == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["captions.txt"]  # no temp files left


def test_width_wraps_and_partial_can_be_left_out(tmp_path) -> None:
    live = LiveCaptionFile(tmp_path / "c.txt", max_lines=3, width=12, include_partial=False)
    live.add_final("one two three four five six seven")
    assert live.render() == "three four\nfive six\nseven\n"
    live.set_partial("not shown")
    assert "not shown" not in (tmp_path / "c.txt").read_text()


def test_readers_never_see_a_half_written_file(tmp_path) -> None:
    path = tmp_path / "c.txt"
    live = LiveCaptionFile(path, max_lines=2, fsync=False)
    states: set[str] = {""}
    path.write_text("")
    seen: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            seen.append(path.read_text())

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for index in range(300):
            live.add_final(f"line {index} " + "z" * (index * 37 % 900))
            states.add(live.render())
    finally:
        stop.set()
        thread.join()
    assert seen and set(seen) <= states


def test_errors_are_reported_not_raised(tmp_path) -> None:
    reports: list[str | None] = []
    live = LiveCaptionFile(tmp_path / "missing-dir" / "c.txt", on_error=reports.append)
    live.add_final("hello")
    assert live.error is not None and "missing-dir" in live.error and reports == [live.error]
    (tmp_path / "missing-dir").mkdir()
    live.add_final("again")
    assert live.error is None and reports[-1] is None
    assert (tmp_path / "missing-dir" / "c.txt").read_text() == "hello\nagain\n"


def test_atomic_write_replaces_and_keeps_permissions_readable(tmp_path) -> None:
    target = tmp_path / "t.txt"
    atomic_write_text(target, "a")
    atomic_write_text(target, "bé")
    assert target.read_text(encoding="utf-8") == "bé"
    assert target.stat().st_mode & 0o044 == 0o044
