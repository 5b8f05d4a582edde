"""Language of finished segments: script rules, py3langid for Latin text, mismatch flags."""

from __future__ import annotations

import pytest

from tui.langid import LanguageDetector, detect_by_script, is_mismatch


@pytest.fixture(scope="module")
def detector() -> LanguageDetector:
    detector = LanguageDetector()
    detector.warm_up()
    return detector


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Привет, как у тебя дела?", "ru"),
        ("こんにちは、元気ですか", "ja"),
        ("東京に行きます", "ja"),  # Han plus kana is Japanese
        ("今天天气很好", "zh"),
        ("안녕하세요 반갑습니다", "ko"),
        ("नमस्ते, आप कैसे हैं?", "hi"),
        ("مرحبا كيف حالك", "ar"),
        ("Hello everyone, thank you for coming today.", "en"),
        ("Bonjour à tous, merci d'être venus aujourd'hui.", "fr"),
        ("Guten Morgen, vielen Dank, dass Sie gekommen sind.", "de"),
        ("Buenos días a todos, gracias por venir hoy.", "es"),
        ("Goedemorgen allemaal, bedankt dat jullie er zijn.", "nl"),
        ("Bom dia a todos, obrigado por terem vindo hoje.", "pt"),
        ("Buongiorno a tutti, grazie di essere venuti oggi.", "it"),
    ],
)
def test_detects_each_language(detector: LanguageDetector, text: str, expected: str) -> None:
    assert detector.detect(text) == expected


def test_short_or_letterless_text_is_unknown(detector: LanguageDetector) -> None:
    assert detector.detect("No.") is None  # one word: any guess would be noise
    assert detector.detect("123 456") is None
    assert detect_by_script("") is None


def test_latin_is_unknown_until_warmed_up() -> None:
    cold = LanguageDetector()
    assert cold.detect("Hello everyone, thank you for coming today.") is None
    assert cold.detect("Привет, как у тебя дела?") == "ru"  # scripts need no model


def test_mismatch_only_when_both_known_and_different() -> None:
    assert is_mismatch("fr", "en")
    assert not is_mismatch("en", "en")
    assert not is_mismatch(None, "en")
    assert not is_mismatch("fr", "auto")
