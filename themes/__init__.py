"""voxcap's themes: one YAML file per theme, the colours of a Textual :class:`~textual.theme.Theme`.

Built-in themes live beside this module (``dark.yaml``, ``light.yaml``, ``high-contrast.yaml``).
Users add their own as ``<config dir>/themes/NAME.yaml`` with the same keys (``name``, ``dark``,
``primary``, ``background``... and optional ``variables``); a user theme with a built-in's name
replaces it. Widgets use ``$variables`` only, so every theme styles every widget.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml
from textual.theme import Theme

from tui.errors import SettingsError

BUILTIN_DIR = Path(__file__).resolve().parent
_THEME_KEYS = {f.name for f in fields(Theme)}


def load_theme_file(path: Path) -> Theme:
    """Read one theme file; errors name the file and the key."""
    try:
        data: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise SettingsError(f"theme file {path}: cannot read it ({error}); fix or remove it") from error
    if not isinstance(data, dict):
        raise SettingsError(f"theme file {path}: expected a mapping of theme keys")
    unknown = sorted(set(data) - _THEME_KEYS)
    if unknown:
        raise SettingsError(
            f"theme file {path}: unknown key {unknown[0]!r}; allowed: {', '.join(sorted(_THEME_KEYS))}"
        )
    data.setdefault("name", path.stem)
    if "primary" not in data:
        raise SettingsError(f"theme file {path}: missing key 'primary' (a colour such as '#4EA1FF')")
    try:
        return Theme(**data)
    except (TypeError, ValueError) as error:
        raise SettingsError(f"theme file {path}: {error}") from error


def _load_dir(directory: Path) -> dict[str, Theme]:
    themes: dict[str, Theme] = {}
    if directory.is_dir():
        for path in sorted(directory.glob("*.yaml")):
            theme = load_theme_file(path)
            themes[theme.name] = theme
    return themes


def builtin_themes() -> dict[str, Theme]:
    return _load_dir(BUILTIN_DIR)


def load_themes(config_dir: Path | None) -> dict[str, Theme]:
    """Built-in themes, then the user's (``<config_dir>/themes/*.yaml``) over them."""
    themes = builtin_themes()
    if config_dir is not None:
        themes.update(_load_dir(config_dir / "themes"))
    return themes
