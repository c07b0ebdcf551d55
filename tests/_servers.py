"""Real `editagent` server processes for tests: started on a free port of 127.0.0.1, their output kept in a file."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

EDITAGENT = [sys.executable, "-m", "editagent.cli"]
START_TIMEOUT_S = 300


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def editagent(args: Sequence[str], cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*EDITAGENT, *args], cwd=cwd, env=env(), capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"editagent {list(args)} failed ({result.returncode}):\n{result.stderr}")
    return result


def new_key(store: str | Path, *namespaces: str, read_only: bool = False) -> str:
    args = ["keys", "create", "--store", str(store), "--quiet", *(f"--namespace={n}" for n in namespaces)]
    return editagent([*args, *(["--read-only"] if read_only else [])]).stdout.strip()


@contextmanager
def running(args: Sequence[str], log: Path, ready: str) -> Iterator[subprocess.Popen[bytes]]:
    """``editagent ARGS`` until the block ends; ``ready``: a URL that answers (any status) once it listens."""
    with log.open("wb") as output:
        process = subprocess.Popen([*EDITAGENT, *args], env=env(), stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert process.poll() is None, log.read_text(errors="replace")
            try:
                httpx.get(ready, timeout=2)
                break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"the server did not start within {START_TIMEOUT_S} s"
            time.sleep(0.5)
        yield process
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Terminate a server process, killing it if it does not end within ``timeout`` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
