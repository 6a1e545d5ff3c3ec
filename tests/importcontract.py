"""Check the import contract (.importlinter) with import-linter, as `make lint` does.

import-linter finds a package's modules by walking its folder, and setup.cfg maps builder/ and
trainer/ into frozenaug from outside it; so the check runs on a staged copy laid out as the
wheel installs it. ``python tests/importcontract.py`` exits with lint-imports' status.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYOUT = {"frozenaug": "frozenaug", "frozenaug/builder": "builder", "frozenaug/trainer": "trainer"}


def stage(dst: Path) -> Path:
    """Copy the package's .py files into ``dst`` as installed; returns the package folder."""
    for to, src in LAYOUT.items():
        shutil.copytree(ROOT / src, dst / to, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dst / "frozenaug"


def lint_imports(staged_root: Path) -> subprocess.CompletedProcess:
    """Run lint-imports on a staged tree (its copy of the package shadows the installed one)."""
    exe = Path(sys.executable).parent / "lint-imports"
    env = {**os.environ, "PYTHONPATH": str(staged_root)}
    return subprocess.run([str(exe), "--no-cache", str(ROOT / ".importlinter")], cwd=staged_root,
                          env=env, capture_output=True, text=True)


def main() -> int:
    with tempfile.TemporaryDirectory() as d:
        stage(Path(d))
        p = lint_imports(Path(d))
    sys.stdout.write(p.stdout[p.stdout.find("Contracts"):] if "Contracts" in p.stdout
                     else p.stdout)
    sys.stderr.write(p.stderr)
    return p.returncode


if __name__ == "__main__":
    sys.exit(main())
