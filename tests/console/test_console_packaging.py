"""The server's package data names every template and static file of the console (without them it is broken).

Checked against pyproject.toml's globs, as setuptools applies them, instead of building a
wheel here (tests/test_packaging.py builds and installs the wheels).
"""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONSOLE = ROOT / "consent_sidecar" / "console"


def test_package_data_covers_the_consoles_templates_and_static_files() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = config["tool"]["setuptools"]["package-data"]["consent_sidecar.console"]
    assets = sorted(str(p.relative_to(CONSOLE)) for d in ("templates", "static") for p in (CONSOLE / d).iterdir())
    assert "templates/base.html" in assets and "static/console.js" in assets
    unpacked = [a for a in assets if not any(fnmatch.fnmatchcase(a, pattern) for pattern in patterns)]
    assert unpacked == [], "add them to [tool.setuptools.package-data] in pyproject.toml"
