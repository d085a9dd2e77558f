"""`make test` installs no system package (issue 24, item 9): it may run as root, where an
`apt-get install` would change the machine. Oracle: the commands `make -n` would run."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SYSTEM = ("apt-get", "apt ", "sudo", "dnf ", "yum ", "brew ")

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")


def _dry(target: str, tmp_path: Path) -> str:
    # a fresh venv path, so that every prerequisite's recipe is listed
    res = subprocess.run(["make", "-n", "-C", str(REPO), target, f"VENV={tmp_path / 'venv'}"], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_make_test_installs_no_system_package(tmp_path):
    text = _dry("test", tmp_path)
    assert "pytest" in text
    assert not [w for w in SYSTEM if w in text], text


def test_make_browser_is_where_chromium_is_installed(tmp_path):
    assert "apt-get install -y chromium" in _dry("browser", tmp_path)
    ci = (REPO / ".ci" / "run").read_text()
    assert ci.index("make browser") < ci.index("make test")
