"""voxcap installs as a wheel with everything it needs at run time (themes, stylesheets)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_contains_packages_themes_and_styles(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path),
         str(ROOT)],  # fmt: skip
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("voxcap-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in ["asr/__init__.py", "asr/stream.py", "asr/weights/gguf_reader.py", "asr/quant/types.py",
                     "tui/cli.py", "tui/app.py", "tui/app.tcss", "themes/dark.yaml", "themes/light.yaml",
                     "themes/high-contrast.yaml"]:  # fmt: skip
        assert required in names, f"{required} missing from the wheel"
    assert not any(name.startswith("tests/") for name in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "voxcap = tui.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
