"""What a benchmark result records about the machine it ran on: figures from runs on different machines are only
comparable as ratios, and the report says which machine each came from."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any


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
