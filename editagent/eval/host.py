"""What a benchmark result records about the machine it ran on and the command that produced it: figures from runs
on different machines are only comparable as ratios, and the report says which machine and command each came from."""

from __future__ import annotations

import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any

# Thread settings change every timing, so a recorded command carries the ones that were set.
THREAD_SETTINGS = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")


def cpu_model() -> str:
    """The CPU's marketing name (Linux reads it from /proc/cpuinfo; elsewhere what ``platform`` knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def machine(**extra: Any) -> dict[str, Any]:
    """CPU count and model, platform and Python version, then ``extra`` (library versions, thread settings)."""
    return {"cpu_count": os.cpu_count(), "cpu_model": cpu_model(), "platform": platform.platform(),
            "python": platform.python_version(), **extra}


def command_line(argv: list[str] | None = None) -> str:
    """The command that ran (``sys.argv`` by default) as one can paste it: the thread settings that were set, then
    ``python``, the script relative to the working directory when it lies inside it, and the quoted arguments."""
    argv = list(sys.argv if argv is None else argv)
    script = Path(argv[0]).resolve() if argv else None
    if script is not None and script.is_relative_to(Path.cwd()):
        argv[0] = str(script.relative_to(Path.cwd()))
    env = [f"{key}={shlex.quote(os.environ[key])}" for key in THREAD_SETTINGS if key in os.environ]
    return " ".join([*env, "python", *(shlex.quote(arg) for arg in argv)])
