"""Running the `ketafollow` command as a real process against a test database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


COMMAND = [sys.executable, "-m", "api.cli"]


def run(*args: str, database_url: str, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "KETAFOLLOW_ENV": "test", "DATABASE_URL": database_url, **env}
    return subprocess.run(  # noqa: S603 - our own command
        [*COMMAND, *args], input=stdin, capture_output=True, text=True, cwd=ROOT, env=environment, timeout=60
    )
