"""Exporters, checked by reading the files back with independent parsers (srt, webvtt-py, json)."""

from __future__ import annotations

import html
import json
import random
import re

import pytest
import srt
import webvtt

from tui.errors import JournalError
from tui.export import FORMATS, MAX_CUE_CHARS, MAX_CUE_S, build_cues, export_journal, render
from tui.journal import Journal, SessionHeader, read_journal
from tui.segments import Segment


def seg(index: int, text: str, start: float, end: float, source: str = "mic", final: bool = True) -> Segment:
    return Segment(index, text, start, end, final=final, wall_time=1_700_000_000.0 + index, source=source)


TRICKY = [
    seg(0, "Hello, world.", 0.48, 1.52),
    seg(1, "Fish & chips <b>not bold</b> and a --> arrow.", 1.6, 3.04),
    seg(2, "Ünïcödé, 日本語のテキスト, emoji 🎙.", 3.2, 4.0),
    seg(3, "Over the hour mark.", 3725.123, 3727.9),
]


def _vtt_ms(stamp: str) -> int:
    hours, minutes, rest = stamp.split(":")
    seconds, millis = rest.split(".")
    return ((int(hours) * 60 + int(minutes)) * 60 + int(seconds)) * 1000 + int(millis)


def _check_monotonic(spans: list[tuple[int, int]]) -> None:
    for (start, end), (next_start, _) in zip(spans, spans[1:], strict=False):
        assert start < end <= next_start
    assert spans[-1][0] < spans[-1][1]


def test_srt_parses_with_same_text_and_timings() -> None:
    subtitles = list(srt.parse(render("srt", TRICKY), ignore_errors=False))
    assert [" ".join(s.content.split()) for s in subtitles] == [s.text for s in TRICKY]
    for subtitle, segment in zip(subtitles, TRICKY, strict=True):
        assert abs(subtitle.start.total_seconds() - segment.start_s) <= 0.001
        assert abs(subtitle.end.total_seconds() - segment.end_s) <= 0.001
    assert [s.index for s in subtitles] == [1, 2, 3, 4]
    _check_monotonic([(round(s.start.total_seconds() * 1000), round(s.end.total_seconds() * 1000))
                      for s in subtitles])
    assert "01:02:05,123 --> 01:02:07,900" in render("srt", TRICKY)


def test_vtt_parses_with_same_text_and_timings() -> None:
    text = render("vtt", TRICKY)
    captions = webvtt.from_string(text).captions
    assert [html.unescape(" ".join(c.text.split())) for c in captions] == [s.text for s in TRICKY]
    for caption, segment in zip(captions, TRICKY, strict=True):
        assert abs(_vtt_ms(caption.start) - segment.start_s * 1000) <= 1
        assert abs(_vtt_ms(caption.end) - segment.end_s * 1000) <= 1
    _check_monotonic([(_vtt_ms(c.start), _vtt_ms(c.end)) for c in captions])
    body = text.split("\n\n", 1)[1]
    assert "-->" not in "".join(line for line in body.splitlines() if not re.match(r"^[\d:.]+ --> ", line))
    assert "<b>" not in text and "&amp;" in text


def test_long_segments_split_into_readable_cues_within_the_span() -> None:
    rng = random.Random(5)
    words = ["alpha", "be", "gamma", "delta", "epsilon", "z", "etaetaetaeta", "theta"]
    long_text = " ".join(rng.choice(words) for _ in range(120))
    segments = [seg(0, long_text, 10.0, 52.0), seg(1, "short", 52.5, 53.0)]
    cues = build_cues(segments)
    first = [c for c in cues if c.start_ms < 52_000]
    assert len(first) > 1
    assert " ".join(c.text for c in first) == long_text
    assert first[0].start_ms == 10_000 and first[-1].end_ms == 52_000
    for cue in first:
        assert len(cue.text) <= MAX_CUE_CHARS or " " not in cue.text
        assert cue.end_ms - cue.start_ms <= MAX_CUE_S * 1000 + 1
    parsed = list(srt.parse(render("srt", segments)))
    assert " ".join(" ".join(p.content.split()) for p in parsed[:-1]) == long_text
    for line in "\n".join(p.content for p in parsed).splitlines():
        assert len(line) <= 42 or " " not in line


def test_overlapping_sources_give_monotonic_labelled_cues() -> None:
    segments = [seg(0, "mic talks", 0.0, 4.0, "mic"), seg(1, "system talks", 2.0, 5.0, "system"),
                seg(2, "same start", 5.0, 5.0, "mic"), seg(3, "also same start", 5.0, 6.0, "system")]
    captions = webvtt.from_string(render("vtt", segments)).captions
    assert [c.voice for c in captions] == ["Mic", "System", "Mic", "System"]
    assert [c.text for c in captions] == ["mic talks", "system talks", "same start", "also same start"]
    _check_monotonic([(_vtt_ms(c.start), _vtt_ms(c.end)) for c in captions])
    assert abs(_vtt_ms(captions[1].start) - 2000) <= 1  # starts stay on the audio clock
    subtitles = list(srt.parse(render("srt", segments)))
    assert subtitles[1].content == "[System] system talks"
    assert render("txt", segments).splitlines()[0] == "[Mic] mic talks"


def test_partials_and_blank_segments_are_not_exported() -> None:
    segments = [seg(0, "final one", 0.0, 1.0), seg(1, "   ", 1.0, 1.5),
                seg(2, "still open", 1.5, 2.0, final=False)]
    for fmt in FORMATS:
        text = render(fmt, segments)
        assert "final one" in text and "still open" not in text
    assert render("txt", segments) == "final one\n"


def test_json_and_markdown() -> None:
    header = SessionHeader(model_name="voxtral-mini", model_quant="Q4_K", session_id="20260101-000000-abcd",
                           started_at=1_767_225_600.0, language="en")
    document = json.loads(render("json", TRICKY, header=header))
    assert [s["text"] for s in document["segments"]] == [s.text for s in TRICKY]
    assert [s["start_s"] for s in document["segments"]] == [s.start_s for s in TRICKY]
    assert document["header"]["model_quant"] == "Q4_K"
    markdown = render("md", TRICKY, header=header)
    assert "**[01:02:05]** Over the hour mark." in markdown
    assert r"Fish & chips \<b\>not bold\</b\> and a --\> arrow." in markdown
    assert "voxtral-mini Q4\\_K" in markdown


def test_unknown_format_is_a_journal_error() -> None:
    with pytest.raises(JournalError, match="unknown export format 'doc'"):
        render("doc", TRICKY)


def test_export_from_a_journal_and_mid_session(tmp_path) -> None:
    journal = Journal(SessionHeader(model_name="m"), data_dir=tmp_path)
    for segment in TRICKY[:3]:
        journal.append_segment(segment)
    journal.add_mark("bookmark", 1.55, note="here")
    live = journal.contents()  # mid-session: no end record yet
    assert not live.ended_cleanly and [s.text for s in live.segments] == [s.text for s in TRICKY[:3]]
    assert "Bookmark at 00:00:01" in render("md", live)
    vtt_text = render("vtt", live)
    assert "NOTE Bookmark at 00:00:01 (note here)" in vtt_text
    assert len(webvtt.from_string(vtt_text).captions) == 3
    journal.close()
    out = export_journal(journal.path, "srt")
    assert out == journal.path.with_suffix(".srt")
    assert [" ".join(s.content.split()) for s in srt.parse(out.read_text())] == [s.text for s in TRICKY[:3]]
    assert read_journal(journal.path).ended_cleanly


def test_random_sessions_round_trip_through_parsers() -> None:
    rng = random.Random(11)
    for _ in range(20):
        t, segments = 0.0, []
        for index in range(rng.randint(1, 30)):
            t += rng.choice([0.0, 0.08, 0.5, 3.0])
            length = rng.choice([0.0, 0.08, 1.2, 9.5])
            vocabulary = ["a", "bb", "c&d", "<e>", "f-->g", "hé"]
            words = " ".join(rng.choice(vocabulary) for _ in range(rng.randint(1, 40)))
            segments.append(seg(index, words, round(t, 3), round(t + length, 3)))
            t += length
        subtitles = list(srt.parse(render("srt", segments)))
        captions = webvtt.from_string(render("vtt", segments)).captions
        assert " ".join(" ".join(s.content.split()) for s in subtitles) == " ".join(s.text for s in segments)
        assert " ".join(html.unescape(" ".join(c.text.split())) for c in captions) == " ".join(
            s.text for s in segments)
        spans = [(_vtt_ms(c.start), _vtt_ms(c.end)) for c in captions]
        _check_monotonic(spans)
        assert spans == [(round(s.start.total_seconds() * 1000), round(s.end.total_seconds() * 1000))
                         for s in subtitles]
        # each segment's cues lie within its span on the audio clock, to within one token (80 ms)
        cues = iter(build_cues(segments))
        for segment in segments:
            words: list[str] = []
            while words != segment.text.split():
                cue = next(cues)
                words += cue.text.split()
                assert segment.start_s * 1000 - 1 <= cue.start_ms <= cue.end_ms <= segment.end_s * 1000 + 80
