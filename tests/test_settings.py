"""Settings: defaults, YAML from the config dir, CLI overrides, validation messages, persistence."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from tui.errors import SettingsError
from tui.settings import (
    CONFIG_DIR_ENV,
    PERSISTED_KEYS,
    Settings,
    config_path,
    load_settings,
    next_delay,
    save_changes,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(CONFIG_DIR_ENV, str(tmp_path))
    return tmp_path


def write_config(directory: Path, text: str) -> None:
    (directory / "config.yaml").write_text(text, encoding="utf-8")


def test_defaults_without_a_file(config_dir: Path) -> None:
    assert config_path() == config_dir / "config.yaml"
    assert load_settings() == Settings()


def test_file_then_command_line(config_dir: Path) -> None:
    write_config(config_dir, "delay_ms: 960\ntheme: light\nlanguage: fr\nqueue_s: 5\n")
    settings = load_settings({"delay_ms": 240, "theme": None})
    assert settings.delay_ms == 240  # the flag wins
    assert settings.theme == "light" and settings.language == "fr"  # unset flags keep the file's
    assert settings.queue_s == 5.0 and isinstance(settings.queue_s, float)


@pytest.mark.parametrize(
    ("text", "key", "allowed"),
    [
        ("delay_ms: 500\n", "delay_ms", "80..2400 in steps of 80"),
        ("delay_ms: 2480\n", "delay_ms", "80..2400 in steps of 80"),
        ("language: xx\n", "language", "auto, ar, de, en"),
        ("source: bluetooth\n", "source", "mic, system, mix, file, stdin"),
        ("realtime: maybe\n", "realtime", "true, false"),
        ("compute_device: tpu\n", "compute_device", "auto, cpu, cuda, cuda:N"),
    ],
)
def test_invalid_value_names_key_and_allowed_values(
    config_dir: Path, text: str, key: str, allowed: str
) -> None:
    write_config(config_dir, text)
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert repr(key) in message and allowed in message and str(config_dir / "config.yaml") in message


def test_unknown_key_and_bad_yaml(config_dir: Path) -> None:
    write_config(config_dir, "dealy_ms: 480\n")
    with pytest.raises(SettingsError, match="unknown setting 'dealy_ms'.*delay_ms"):
        load_settings()
    write_config(config_dir, "delay_ms: [480\n")
    with pytest.raises(SettingsError, match="not valid YAML"):
        load_settings()
    write_config(config_dir, "- 1\n- 2\n")
    with pytest.raises(SettingsError, match="expected a mapping"):
        load_settings()


def test_command_line_errors_say_command_line(config_dir: Path) -> None:
    with pytest.raises(SettingsError, match="command line: invalid value 100 for 'delay_ms'"):
        load_settings({"delay_ms": 100})


def test_theme_checked_against_known_names(config_dir: Path) -> None:
    write_config(config_dir, "theme: neon\n")
    with pytest.raises(SettingsError, match="unknown theme 'neon'.*dark, high-contrast, light"):
        load_settings(theme_names=["dark", "light", "high-contrast"])


def test_save_changes_keeps_other_keys_and_round_trips(config_dir: Path) -> None:
    write_config(config_dir, "queue_s: 4.0\ntheme: light\n")
    save_changes({"delay_ms": 1200, "theme": "high-contrast", "input_device": "3", "language": "de"})
    data = yaml.safe_load((config_dir / "config.yaml").read_text())
    assert data == {
        "queue_s": 4.0,
        "theme": "high-contrast",
        "delay_ms": 1200,
        "input_device": "3",
        "language": "de",
    }
    settings = load_settings()
    assert (
        settings.delay_ms,
        settings.theme,
        settings.input_device,
        settings.language,
        settings.queue_s,
    ) == (
        1200,
        "high-contrast",
        "3",
        "de",
        4.0,
    )
    with pytest.raises(SettingsError):
        save_changes({"delay_ms": 7})
    assert set(PERSISTED_KEYS) <= {f.name for f in dataclasses.fields(Settings)}


def test_save_changes_creates_the_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nested = tmp_path / "a" / "b"
    monkeypatch.setenv(CONFIG_DIR_ENV, str(nested))
    save_changes({"theme": "light"})
    assert load_settings().theme == "light"


def test_device_index_as_number(config_dir: Path) -> None:
    write_config(config_dir, "input_device: 2\n")
    assert load_settings().input_device == "2"


def test_example_config_documents_every_setting_with_its_default() -> None:
    path = ROOT / "config.example.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    defaults = dataclasses.asdict(Settings())
    assert data == defaults
    lines = path.read_text(encoding="utf-8").splitlines()
    for key in defaults:  # each key has a comment right above it
        index = next(i for i, line in enumerate(lines) if line.startswith(f"{key}:"))
        assert lines[index - 1].startswith("#"), f"{key} has no comment"
    assert load_settings(path=path) == Settings()


def test_next_delay_clamps() -> None:
    assert next_delay(480, 1) == 560 and next_delay(80, -1) == 80 and next_delay(2400, 3) == 2400
