"""The live caption file: the last few caption lines, for an OBS text source or any overlay.

OBS (and most overlay tools) re-read a text file when it changes. The file is rewritten whole
and atomically (temp file + fsync + ``os.replace``), so a reader never sees it half written.
Like the journal, it never raises into the caption path: a failed write sets ``error``.
"""

from __future__ import annotations

import os
import tempfile
import textwrap
from collections import deque
from collections.abc import Callable
from pathlib import Path


def atomic_write_text(path: str | os.PathLike[str], text: str, *, fsync: bool = True) -> None:
    """Replace ``path`` with ``text`` (UTF-8) in one step; raises OSError."""
    path = Path(path)
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            if fsync:
                os.fsync(handle.fileno())
        os.chmod(temp_name, 0o644)  # mkstemp makes 0600; overlay tools may run as another user
        os.replace(temp_name, path)
    except BaseException:
        try:
            os.unlink(temp_name)
        except OSError:
            pass
        raise


class LiveCaptionFile:
    """Keeps ``path`` holding the last ``max_lines`` finalized lines, plus the partial line.

    With ``width`` set, text is wrapped to that many characters and the last ``max_lines``
    *wrapped* lines are kept, so an overlay of fixed size always shows full lines.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_lines: int = 2,
        width: int | None = None,
        include_partial: bool = True,
        fsync: bool = True,
        on_error: Callable[[str | None], None] | None = None,
    ) -> None:
        if max_lines < 1:
            raise ValueError(f"live caption file max_lines must be >= 1, got {max_lines}")
        self.path = Path(path)
        self.max_lines = max_lines
        self.width = width
        self.include_partial = include_partial
        self.fsync = fsync
        self.on_error = on_error
        self.error: str | None = None
        self._finals: deque[str] = deque(maxlen=max_lines)  # newest last, already wrapped
        self._partial = ""
        self._written: str | None = None

    def add_final(self, text: str) -> None:
        """A segment was finalized: it joins the kept lines and the partial is cleared."""
        for line in self._wrap(text):
            self._finals.append(line)
        self._partial = ""
        self._rewrite()

    def set_partial(self, text: str) -> None:
        """The open segment's text so far (shown after the final lines when include_partial)."""
        self._partial = " ".join(text.split())
        if self.include_partial:
            self._rewrite()

    def clear(self) -> None:
        self._finals.clear()
        self._partial = ""
        self._rewrite()

    def render(self) -> str:
        lines = list(self._finals)
        if self.include_partial and self._partial:
            lines += self._wrap(self._partial)
        lines = lines[-self.max_lines :]
        return "\n".join(lines) + ("\n" if lines else "")

    def _wrap(self, text: str) -> list[str]:
        text = " ".join(text.split())
        if not text:
            return []
        return textwrap.wrap(text, self.width, break_on_hyphens=False) if self.width else [text]

    def _rewrite(self) -> None:
        content = self.render()
        if content == self._written:
            return
        try:
            atomic_write_text(self.path, content, fsync=self.fsync)
        except OSError as error:
            self._set_error(f"cannot write live caption file {self.path}: {error.strerror or error}; "
                            "check the path in the live_file setting")
            return
        self._written = content
        self._set_error(None)

    def _set_error(self, message: str | None) -> None:
        if message == self.error:
            return
        self.error = message
        if self.on_error is not None:
            try:
                self.on_error(message)
            except Exception:  # a broken UI callback must not stop the captions
                pass
