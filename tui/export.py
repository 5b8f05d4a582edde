"""Transcript exporters: plain text, SRT, WebVTT, JSON and Markdown.

Input is a parsed journal (``JournalContents``, from a file or ``Journal.contents()`` mid-session)
or an in-memory list of segments; only final segments with text are exported.

Subtitle cues follow the audio clock: a cue starts when its segment starts. Long segments are
split into readable cues (at most ``MAX_CUE_CHARS`` characters and ``MAX_CUE_S`` seconds), their
times spread over the segment's span in proportion to the text. Cues never overlap: where two
segments overlap (mixed mic + system input) the earlier cue ends when the next begins.
"""

from __future__ import annotations

import json
import math
import os
import textwrap
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from tui.errors import JournalError
from tui.journal import JournalContents, Mark, SessionHeader, read_journal, segment_record
from tui.livefile import atomic_write_text
from tui.segments import Segment

FORMATS = ("txt", "srt", "vtt", "json", "md")
MAX_CUE_CHARS = 84  # two subtitle lines of 42 characters, the common broadcast limit
MAX_LINE_CHARS = 42
MAX_CUE_S = 7.0  # longer cues are hard to follow
MIN_CUE_MS = 1  # a cue must end after it starts
SOURCE_LABELS = {"mic": "Mic", "system": "System", "file": "File", "stdin": "Stdin"}
MARK_LABELS = {
    "delay_change": "Delay changed", "restart": "Stream restarted", "dropped_audio": "Audio dropped",
    "bookmark": "Bookmark", "pause": "Paused", "resume": "Resumed",
}


@dataclass(frozen=True)
class Cue:
    start_ms: int
    end_ms: int
    text: str  # one line, whitespace collapsed, not escaped
    source: str


def _final_segments(segments: Sequence[Segment]) -> list[Segment]:
    kept = [s for s in segments if s.final and s.text.strip()]
    return sorted(kept, key=lambda s: (s.start_s, s.index))


def _split_words(words: list[str], parts: int) -> list[list[str]]:
    """Split ``words`` into ``parts`` runs of about equal character length."""
    total = sum(len(w) + 1 for w in words)
    runs: list[list[str]] = [[]]
    used = 0
    for word in words:
        target = total * len(runs) / parts
        if runs[-1] and used + (len(word) + 1) / 2 > target and len(runs) < parts:
            runs.append([])
        runs[-1].append(word)
        used += len(word) + 1
    return runs


def build_cues(segments: Sequence[Segment], *, max_chars: int = MAX_CUE_CHARS,
               max_duration_s: float = MAX_CUE_S) -> list[Cue]:
    """Subtitle cues for the final segments: split long ones, integer ms, monotonic, no overlap."""
    raw: list[Cue] = []
    for segment in _final_segments(segments):
        words = segment.text.split()
        start_ms = round(segment.start_s * 1000)
        end_ms = max(round(segment.end_s * 1000), start_ms)
        text = " ".join(words)
        duration_s = (end_ms - start_ms) / 1000
        parts = max(math.ceil(len(text) / max_chars), math.ceil(duration_s / max_duration_s), 1)
        runs = _split_words(words, min(parts, len(words)))
        while parts < len(words) and max(len(" ".join(run)) for run in runs) > max_chars:
            parts += 1  # balanced runs came out too long for one cue: use one more
            runs = _split_words(words, parts)
        weights = [sum(len(w) + 1 for w in run) for run in runs]
        done = 0
        for run, weight in zip(runs, weights, strict=True):
            cue_start = start_ms + round((end_ms - start_ms) * done / sum(weights))
            done += weight
            cue_end = start_ms + round((end_ms - start_ms) * done / sum(weights))
            raw.append(Cue(cue_start, cue_end, " ".join(run), segment.source))
    cues: list[Cue] = []
    for cue in raw:
        start_ms = cue.start_ms
        if cues:
            previous = cues[-1]
            if previous.end_ms > start_ms:  # overlap: end the earlier cue when this one starts
                cut = max(start_ms, previous.start_ms + MIN_CUE_MS)
                cues[-1] = Cue(previous.start_ms, cut, previous.text, previous.source)
            start_ms = max(start_ms, cues[-1].end_ms)
        cues.append(Cue(start_ms, max(cue.end_ms, start_ms + MIN_CUE_MS), cue.text, cue.source))
    return cues


def format_timestamp(ms: int, separator: str = ".") -> str:
    """``HH:MM:SS.mmm`` (VTT) or, with separator ",", ``HH:MM:SS,mmm`` (SRT)."""
    hours, rest = divmod(max(ms, 0), 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}{separator}{millis:03d}"


def _clock(seconds: float) -> str:
    return format_timestamp(round(seconds * 1000))[:8]


def _label(source: str) -> str:
    return SOURCE_LABELS.get(source, source.title())


def _mixed(segments: Sequence[Segment]) -> bool:
    return len({s.source for s in segments}) > 1


def _cue_lines(text: str) -> str:
    return "\n".join(textwrap.wrap(text, MAX_LINE_CHARS, break_on_hyphens=False)) or text


def render_srt(segments: Sequence[Segment]) -> str:
    labelled = _mixed(_final_segments(segments))
    blocks = []
    for number, cue in enumerate(build_cues(segments), start=1):
        text = f"[{_label(cue.source)}] {cue.text}" if labelled else cue.text
        timing = f"{format_timestamp(cue.start_ms, ',')} --> {format_timestamp(cue.end_ms, ',')}"
        blocks.append(f"{number}\n{timing}\n{_cue_lines(text)}\n")
    return "\n".join(blocks)


def escape_vtt(text: str) -> str:
    """Cue text escaping: ``&`` ``<`` ``>`` become entities (which also breaks any ``-->``)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _vtt_note(text: str) -> str:
    return "NOTE " + " ".join(text.split()).replace("-->", "->")


def render_vtt(segments: Sequence[Segment], *, header: SessionHeader | None = None,
               marks: Sequence[Mark] = ()) -> str:
    labelled = _mixed(_final_segments(segments))
    blocks = ["WEBVTT\n"]
    if header is not None and header.session_id:
        about = f"voxcap session {header.session_id}, model {header.model_name or '?'}"
        blocks.append(_vtt_note(about) + "\n")
    pending_marks = sorted(marks, key=lambda m: m.audio_s)
    for cue in build_cues(segments):
        while pending_marks and pending_marks[0].audio_s * 1000 <= cue.start_ms:
            blocks.append(_vtt_note(_describe_mark(pending_marks.pop(0))) + "\n")
        text = _cue_lines(escape_vtt(cue.text))
        if labelled:
            text = f"<v {_label(cue.source)}>{text}</v>"
        blocks.append(f"{format_timestamp(cue.start_ms)} --> {format_timestamp(cue.end_ms)}\n{text}\n")
    blocks += [_vtt_note(_describe_mark(mark)) + "\n" for mark in pending_marks]
    return "\n".join(blocks)


def render_txt(segments: Sequence[Segment]) -> str:
    finals = _final_segments(segments)
    labelled = _mixed(finals)
    lines = [(f"[{_label(s.source)}] " if labelled else "") + " ".join(s.text.split()) for s in finals]
    return "\n".join(lines) + ("\n" if lines else "")


def _describe_mark(mark: Mark) -> str:
    label = MARK_LABELS.get(mark.kind, mark.kind)
    details = ", ".join(f"{key} {value}" for key, value in mark.details.items())
    return f"{label} at {_clock(mark.audio_s)}" + (f" ({details})" if details else "")


_MARKDOWN_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*_[]<>#|~"})


def escape_markdown(text: str) -> str:
    return text.translate(_MARKDOWN_SPECIAL)


def render_md(segments: Sequence[Segment], *, header: SessionHeader | None = None,
              marks: Sequence[Mark] = (), ended_cleanly: bool | None = None) -> str:
    finals = _final_segments(segments)
    labelled = _mixed(finals)
    out: list[str] = []
    if header is not None and header.started_at:
        out.append(f"# Transcript, {datetime.fromtimestamp(header.started_at):%Y-%m-%d %H:%M}\n")
    else:
        out.append("# Transcript\n")
    if header is not None:
        model = " ".join(p for p in (header.model_name, header.model_quant) if p) or "unknown model"
        facts = [f"Model: {model}" + (f" on {header.device}" if header.device else ""),
                 f"Delay: {header.delay_ms} ms", f"Language: {header.language or 'auto'}",
                 f"Input: {header.input_source}"
                 + (f" ({header.input_device})" if header.input_device else "")]
        if header.session_id:
            state = "" if ended_cleanly is None or ended_cleanly else " (interrupted)"
            facts.append(f"Session: {header.session_id}{state}")
        out.append("\n".join(f"- {escape_markdown(fact)}" for fact in facts) + "\n")
    entries: list[tuple[float, int, str]] = []
    for s in finals:
        who = f"*{_label(s.source)}:* " if labelled else ""
        text = escape_markdown(" ".join(s.text.split()))
        entries.append((s.start_s, 1, f"**[{_clock(s.start_s)}]** {who}{text}"))
    entries += [(m.audio_s, 0, f"> *{escape_markdown(_describe_mark(m))}*") for m in marks]
    out += [text + "\n" for _, _, text in sorted(entries, key=lambda e: (e[0], e[1]))]
    return "\n".join(out)


def render_json(segments: Sequence[Segment], *, header: SessionHeader | None = None,
                marks: Sequence[Mark] = (), ended_cleanly: bool | None = None) -> str:
    finals = _final_segments(segments)
    document: dict[str, Any] = {
        "format": "voxcap-transcript",
        "version": 1,
        "header": None if header is None else {k: v for k, v in header.to_record().items() if k != "type"},
        "ended_cleanly": ended_cleanly,
        "segments": [{k: v for k, v in segment_record(s).items() if k != "type"} for s in finals],
        "marks": [asdict(m) for m in sorted(marks, key=lambda m: m.audio_s)],
        "text": " ".join(" ".join(s.text.split()) for s in finals),
    }
    return json.dumps(document, ensure_ascii=False, indent=2, default=str) + "\n"


def render(fmt: str, transcript: JournalContents | Sequence[Segment], *, header: SessionHeader | None = None,
           marks: Sequence[Mark] = ()) -> str:
    """The transcript in ``fmt`` (one of FORMATS) as a string."""
    ended_cleanly: bool | None = None
    if isinstance(transcript, JournalContents):
        header, marks, ended_cleanly = transcript.header, transcript.marks, transcript.ended_cleanly
        segments: Sequence[Segment] = transcript.segments
    else:
        segments = transcript
    if fmt == "txt":
        return render_txt(segments)
    if fmt == "srt":
        return render_srt(segments)
    if fmt == "vtt":
        return render_vtt(segments, header=header, marks=marks)
    if fmt == "md":
        return render_md(segments, header=header, marks=marks, ended_cleanly=ended_cleanly)
    if fmt == "json":
        return render_json(segments, header=header, marks=marks, ended_cleanly=ended_cleanly)
    raise JournalError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")


def default_export_path(journal_path: str | os.PathLike[str], fmt: str) -> Path:
    """Beside the journal: ``<session id>.<fmt>``."""
    return Path(journal_path).with_suffix(f".{fmt}")


def export_to_file(fmt: str, transcript: JournalContents | Sequence[Segment], path: str | os.PathLike[str],
                   *, header: SessionHeader | None = None, marks: Sequence[Mark] = ()) -> Path:
    """Write the export atomically; raises JournalError naming the path when it cannot."""
    text = render(fmt, transcript, header=header, marks=marks)
    path = Path(path)
    try:
        atomic_write_text(path, text)
    except OSError as error:
        raise JournalError(f"cannot write export {path}: {error.strerror or error}; choose another path "
                           "with -o") from error
    return path


def export_journal(journal_path: str | os.PathLike[str], fmt: str,
                   out: str | os.PathLike[str] | None = None) -> Path:
    """Read a journal and write it as ``fmt`` to ``out`` (default: beside the journal)."""
    return export_to_file(fmt, read_journal(journal_path), out or default_export_path(journal_path, fmt))
