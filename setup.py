"""Build hook: record the esmdiv commit a wheel is built from, in ``esmdiv/_build_info.py``.

Everything else about the package is in ``pyproject.toml``. A run reports which esmdiv it is
(``environment.esmdiv.git_commit``); from a git checkout it asks git, but an installed wheel or a
tree copied to another machine has no ``.git`` beside it. So when setuptools builds the package,
this writes the commit into the built copy (never into the source tree, where the file is
git-ignored): ``ESMDIV_GIT_COMMIT`` when set, else the commit of the checkout being built (only
when its git top level is this folder), with whether the checkout had uncommitted changes.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
COMMIT_ENV = "ESMDIV_GIT_COMMIT"


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(HERE), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def build_commit() -> tuple[str | None, bool | None, str | None]:
    """(commit, dirty, how it was found) for the tree being built; ``(None, None, None)`` if unknown."""
    given = (os.environ.get(COMMIT_ENV) or "").strip().lower()
    if re.fullmatch(r"[0-9a-f]{7,64}", given):
        return given, None, COMMIT_ENV
    top = _git("rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != HERE:
        return None, None, None
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    return commit, (bool(status) if status is not None else None), "git checkout at build time"


def build_info_source() -> str:
    commit, dirty, how = build_commit()
    return (
        '"""Written by setup.py when this esmdiv was built; read by esmdiv.report.fingerprint."""\n\n'
        f"GIT_COMMIT = {commit!r}\nGIT_DIRTY = {dirty!r}\nFOUND_BY = {how!r}\n"
    )


class BuildPyWithCommit(build_py):
    """``build_py`` that also writes ``esmdiv/_build_info.py`` into the build folder."""

    def run(self) -> None:
        super().run()
        if not self.dry_run and not getattr(self, "editable_mode", False):
            target = Path(self.build_lib) / "esmdiv" / "_build_info.py"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(build_info_source(), encoding="utf-8")


if __name__ == "__main__":
    setup(cmdclass={"build_py": BuildPyWithCommit})
