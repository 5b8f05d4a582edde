"""voxcap's configuration: one frozen dataclass, loaded from YAML, overridden by the command line.

Precedence (lowest first): the defaults below, ``config.yaml`` in the user config directory
(``$VOXCAP_CONFIG_DIR`` if set, else the XDG directory from platformdirs), then command-line
flags. Every value is validated in one place (:func:`validate`) and an invalid one raises
:class:`tui.errors.SettingsError` naming the key and the allowed values. Settings changed inside
the app (delay, theme, input device, language) are written back with :func:`save_changes`.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import platformdirs
import yaml

from tui.errors import SettingsError

APP_NAME = "voxcap"
CONFIG_FILE_NAME = "config.yaml"
CONFIG_DIR_ENV = "VOXCAP_CONFIG_DIR"

# The model's 13 training languages (model card); it detects among them by itself.
LANGUAGES: dict[str, str] = {
    "ar": "Arabic",
    "de": "German",
    "en": "English",
    "es": "Spanish",
    "fr": "French",
    "hi": "Hindi",
    "it": "Italian",
    "nl": "Dutch",
    "pt": "Portuguese",
    "zh": "Chinese",
    "ja": "Japanese",
    "ko": "Korean",
    "ru": "Russian",
}
AUTO_LANGUAGE = "auto"  # no expectation: nothing is flagged

DELAY_MIN_MS = 80
DELAY_MAX_MS = 2400
DELAY_STEP_MS = 80  # one decoder step = 80 ms of audio
DELAY_DEFAULT_MS = 480  # the model card's recommended trade-off
SOURCES = ("mic", "system", "mix", "file", "stdin")
COMPUTE_DEVICES = ("auto", "cpu", "cuda")  # plus "cuda:N"
DTYPES = ("auto", "float32", "bfloat16", "float16")
OUTPUT_FORMATS = ("text", "jsonl")
BUILTIN_THEMES = ("dark", "light", "high-contrast")

# Settings the app writes back when the user changes them on screen.
PERSISTED_KEYS = ("delay_ms", "theme", "input_device", "language")


@dataclass(frozen=True)
class Settings:
    """Every setting, with its default. ``config.example.yaml`` documents the same keys."""

    model: str | None = None  # model directory or file (safetensors, HF or GGUF); None = default model
    compute_device: str = "auto"  # auto (CUDA if present), cpu, cuda, cuda:N
    dtype: str = "auto"  # auto (bfloat16 on CUDA, float32 on CPU), float32, bfloat16, float16
    delay_ms: int = DELAY_DEFAULT_MS  # transcription delay: 80..2400 in steps of 80
    language: str = AUTO_LANGUAGE  # expected language (a hint for mismatch flags, not a model input)
    theme: str = "dark"  # dark, light, high-contrast, or a theme file in <config dir>/themes/
    source: str = "mic"  # mic, system (monitor of the default output), mix (both), file, stdin
    input_device: str | None = None  # microphone name or index; None = the system default
    file: str | None = None  # audio file for source=file (WAV, FLAC, OGG)
    realtime: bool = True  # replay files at real-time pace (false: as fast as the engine goes)
    stdin_rate: int = 16000  # sample rate of raw s16le on stdin (a WAV stream carries its own)
    stdin_channels: int = 1  # channels of raw s16le on stdin
    queue_s: float = 10.0  # most audio (s) waiting for the engine; beyond it audio is dropped, counted
    pause_s: float = 1.2  # this much padding (silence) closes the open caption segment
    max_segment_s: float = 20.0  # a segment longer than this closes at the next word
    watchdog_s: float = 20.0  # audio with sound but no text for this long restarts the stream; 0 = off
    silence_db: float = -50.0  # input below this level (dBFS) counts as silence ("no speech")
    journal: bool = True  # write the crash-safe session journal
    record_audio: bool = False  # also record the session's audio beside the journal
    live_file: str | None = None  # a text file rewritten with the last lines (for OBS text sources)
    live_file_lines: int = 2  # how many lines the live file keeps
    output_format: str = "text"  # headless output: text (finalized lines) or jsonl (events)


@dataclass(frozen=True)
class _Rule:
    check: Callable[[Any], bool]
    allowed: str


def _is_delay(value: Any) -> bool:
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        and DELAY_MIN_MS <= value <= DELAY_MAX_MS
        and value % DELAY_STEP_MS == 0
    )


def _is_number(low: float, high: float) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        return isinstance(value, int | float) and not isinstance(value, bool) and low <= value <= high

    return check


def _is_int(low: int, high: int) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high

    return check


def _is_optional_str(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value != "")


def _is_compute_device(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    if value in COMPUTE_DEVICES:
        return True
    prefix, _, index = value.partition(":")
    return prefix == "cuda" and index.isdigit()


_RULES: dict[str, _Rule] = {
    "model": _Rule(_is_optional_str, "a path to a model directory or file, or null"),
    "compute_device": _Rule(_is_compute_device, "auto, cpu, cuda, cuda:N"),
    "dtype": _Rule(lambda v: v in DTYPES, ", ".join(DTYPES)),
    "delay_ms": _Rule(_is_delay, f"{DELAY_MIN_MS}..{DELAY_MAX_MS} in steps of {DELAY_STEP_MS}"),
    "language": _Rule(lambda v: v == AUTO_LANGUAGE or v in LANGUAGES, ", ".join([AUTO_LANGUAGE, *LANGUAGES])),
    "theme": _Rule(lambda v: isinstance(v, str) and v != "", "a theme name"),
    "source": _Rule(lambda v: v in SOURCES, ", ".join(SOURCES)),
    "input_device": _Rule(_is_optional_str, "a device name or index, or null"),
    "file": _Rule(_is_optional_str, "a path to an audio file, or null"),
    "realtime": _Rule(lambda v: isinstance(v, bool), "true, false"),
    "stdin_rate": _Rule(_is_int(1000, 384000), "1000..384000 (Hz)"),
    "stdin_channels": _Rule(_is_int(1, 32), "1..32"),
    "queue_s": _Rule(_is_number(0.5, 600), "0.5..600 (seconds)"),
    "pause_s": _Rule(_is_number(0.16, 30), "0.16..30 (seconds)"),
    "max_segment_s": _Rule(_is_number(1, 600), "1..600 (seconds)"),
    "watchdog_s": _Rule(_is_number(0, 3600), "0 (off) or up to 3600 (seconds)"),
    "silence_db": _Rule(_is_number(-120, 0), "-120..0 (dBFS)"),
    "journal": _Rule(lambda v: isinstance(v, bool), "true, false"),
    "record_audio": _Rule(lambda v: isinstance(v, bool), "true, false"),
    "live_file": _Rule(_is_optional_str, "a file path, or null"),
    "live_file_lines": _Rule(_is_int(1, 100), "1..100"),
    "output_format": _Rule(lambda v: v in OUTPUT_FORMATS, ", ".join(OUTPUT_FORMATS)),
}
assert set(_RULES) == {f.name for f in fields(Settings)}, "every setting needs a validation rule"


def config_dir() -> Path:
    """The user config directory: ``$VOXCAP_CONFIG_DIR`` or the platform's (XDG on Linux)."""
    override = os.environ.get(CONFIG_DIR_ENV)
    return Path(override) if override else Path(platformdirs.user_config_dir(APP_NAME))


def config_path() -> Path:
    return config_dir() / CONFIG_FILE_NAME


def _coerce(key: str, value: Any) -> Any:
    """Accept the spellings YAML and the command line produce (ints for floats, device numbers)."""
    if key == "input_device" and isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # a device index written as a bare number
    if key in ("queue_s", "pause_s", "max_segment_s", "watchdog_s", "silence_db") and isinstance(value, int):
        return value if isinstance(value, bool) else float(value)
    return value


def validate(
    values: Mapping[str, Any], origin: str, theme_names: Iterable[str] | None = None
) -> dict[str, Any]:
    """Check keys and values; return them coerced. ``origin`` names the file or "command line"."""
    known = {f.name for f in fields(Settings)}
    checked: dict[str, Any] = {}
    for key, raw in values.items():
        if key not in known:
            raise SettingsError(
                f"{origin}: unknown setting {key!r}; known settings: {', '.join(sorted(known))}"
            )
        value = _coerce(key, raw)
        rule = _RULES[key]
        if not rule.check(value):
            raise SettingsError(f"{origin}: invalid value {raw!r} for {key!r}; allowed: {rule.allowed}")
        checked[key] = value
    if theme_names is not None and "theme" in checked:
        names = sorted(set(theme_names))
        if checked["theme"] not in names:
            raise SettingsError(
                f"{origin}: unknown theme {checked['theme']!r} for 'theme'; allowed: {', '.join(names)}"
            )
    return checked


def read_config_file(path: Path) -> dict[str, Any]:
    """The raw mapping in a config file ({} if the file does not exist)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as error:
        message = f"cannot read config file {path}: {error.strerror}; check its permissions"
        raise SettingsError(message) from error
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise SettingsError(f"{path}: not valid YAML ({error}); fix the file or delete it") from error
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsError(f"{path}: expected a mapping of setting: value, got {type(data).__name__}")
    return data


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    path: Path | None = None,
    theme_names: Iterable[str] | None = None,
) -> Settings:
    """Defaults, then the config file, then ``overrides`` (command-line values; None means unset)."""
    path = config_path() if path is None else path
    names = list(theme_names) if theme_names is not None else None
    from_file = validate(read_config_file(path), str(path), names)
    cli = {key: value for key, value in (overrides or {}).items() if value is not None}
    from_cli = validate(cli, "command line", names)
    return replace(Settings(), **{**from_file, **from_cli})


def save_changes(changes: Mapping[str, Any], path: Path | None = None) -> Path:
    """Write changed settings into the user config file, keeping its other keys; atomic replace."""
    path = config_path() if path is None else path
    checked = validate(changes, "settings change")
    data = read_config_file(path)
    data.update(checked)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=".config-", suffix=".yaml", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as temp:
            temp.write("# voxcap settings (see config.example.yaml for every key and its default)\n")
            yaml.safe_dump(data, temp, sort_keys=True, allow_unicode=True)
        os.replace(temp_name, path)
    except OSError as error:
        Path(temp_name).unlink(missing_ok=True)
        message = f"cannot write config file {path}: {error.strerror}; check the directory"
        raise SettingsError(message) from error
    return path


def settings_as_dict(settings: Settings) -> dict[str, Any]:
    """Plain mapping (for journal headers and JSON output)."""
    return dataclasses.asdict(settings)


def next_delay(delay_ms: int, steps: int) -> int:
    """Move the delay by ``steps`` 80 ms steps, clamped to the allowed range."""
    value = delay_ms + steps * DELAY_STEP_MS
    return max(DELAY_MIN_MS, min(DELAY_MAX_MS, value))
