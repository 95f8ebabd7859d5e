"""Run the real ``factost`` console script in a subprocess, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

FACTOST = str(Path(sys.executable).parent / "factost")


def run_factost(*args: str, cwd: Path | None = None, timeout: float = 300, check: bool = True,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [FACTOST, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd, env={**os.environ, **(env or {})}
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"factost {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1].strip()


def invoke(capsys: Any, *args: str) -> tuple[int, str, str]:
    """Run the CLI's entry point in this process (imports already loaded: fast); (exit code, stdout, stderr)."""
    from pipelines.cli import main

    capsys.readouterr()
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err
