"""Segmenter: tokens -> segments, closing at sentence ends and pauses."""

from __future__ import annotations

from asr.tokens import EOS_ID, STREAMING_PAD_ID, STREAMING_WORD_ID, Token
from tui.segmenter import Segmenter, ends_sentence


def text(t: str, slot: int) -> Token:
    return Token(5000 + slot, t, slot * 0.08, slot * 0.08 + 0.08)


def pad(slot: int) -> Token:
    return Token(STREAMING_PAD_ID, "", slot * 0.08, slot * 0.08 + 0.08)


def word(slot: int) -> Token:
    return Token(STREAMING_WORD_ID, "", slot * 0.08, slot * 0.08 + 0.08)


def test_sentence_end_closes_when_next_word_starts() -> None:
    seg = Segmenter(pause_s=10, wall_clock=lambda: 123.0, detect_language=lambda s: "en")
    closed = seg.push([word(0), text(" Hello", 0), text(" world.", 1)], "mic")
    assert closed == [] and seg.open is not None and seg.open.text == "Hello world."
    closed = seg.push([word(2), text(" Next", 2)], "mic")
    assert [s.text for s in closed] == ["Hello world."]
    first = closed[0]
    assert first.final and first.index == 0 and first.start_s == 0.0 and abs(first.end_s - 0.16) < 1e-9
    assert first.wall_time == 123.0 and first.language == "en" and first.source == "mic"
    assert seg.open.text == "Next" and seg.open.index == 1 and not seg.open.final


def test_decimal_point_does_not_split() -> None:
    seg = Segmenter(pause_s=10)
    closed = seg.push([text(" It costs 3.", 0), text("5 euros", 1)], "mic")
    assert closed == [] and seg.open.text == "It costs 3.5 euros"


def test_pause_closes_after_pause_s_of_padding() -> None:
    seg = Segmenter(pause_s=0.4)  # 5 pad slots
    seg.push([text(" no punctuation", 0)], "system")
    assert seg.push([pad(i) for i in range(1, 5)], "system") == []
    closed = seg.push([pad(5)], "system")
    assert [s.text for s in closed] == ["no punctuation"] and closed[0].source == "system"
    assert seg.open is None
    # padding with nothing open produces nothing
    assert seg.push([pad(i) for i in range(6, 30)], "system") == []


def test_pads_between_words_keep_the_segment_open() -> None:
    seg = Segmenter(pause_s=0.4)
    tokens = [text(" a", 0), pad(1), pad(2), word(3), text(" b", 3), pad(4), pad(5), pad(6), text(" c", 7)]
    assert seg.push(tokens, "mic") == [] and seg.open.text == "a b c"


def test_eos_and_close_finalize_and_empty_is_dropped() -> None:
    seg = Segmenter()
    seg.push([text(" bye", 0)], "mic")
    closed = seg.push([Token(EOS_ID, "", 0.08, 0.16)], "mic")
    assert [s.text for s in closed] == ["bye"]
    assert seg.close() is None
    seg.push([text("   ", 3)], "mic")
    assert seg.close() is None  # whitespace only never becomes a line


def test_cjk_sentence_end_closes_without_space() -> None:
    seg = Segmenter(pause_s=10)
    closed = seg.push([text("你好。", 0), text("再见", 1)], "mic")
    assert [s.text for s in closed] == ["你好。"] and seg.open.text == "再见"


def test_long_segment_closes_at_next_word_boundary() -> None:
    seg = Segmenter(pause_s=100, max_segment_s=0.5)
    tokens = []
    for slot in range(0, 20, 2):
        tokens += [word(slot), text(" w", slot)]
    closed = seg.push(tokens, "mic")
    assert closed and all(s.end_s - s.start_s <= 0.5 + 0.16 for s in closed)
    assert "".join(s.text for s in closed).replace(" ", "") + seg.open.text.replace(" ", "") == "w" * 10


def test_indices_increase_and_delay_is_recorded() -> None:
    seg = Segmenter(pause_s=0.08, delay_ms=960, first_index=7)
    out = seg.push([text(" a.", 0), pad(1), text(" b.", 2), pad(3)], "mic")
    assert [(s.index, s.text, s.delay_ms) for s in out] == [(7, "a.", 960), (8, "b.", 960)]


def test_ends_sentence() -> None:
    assert ends_sentence("done.") and ends_sentence('"Stop!"') and ends_sentence("終わり。")
    assert ends_sentence("क्या?") and ends_sentence("हाँ।") and not ends_sentence("and,")
    assert not ends_sentence("")
