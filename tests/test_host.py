"""The machine facts every benchmark result records."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from editagent.eval import host


def test_machine_names_this_cpu_and_keeps_each_benchmarks_extras() -> None:
    facts = host.machine(torch_threads=1, faiss="1.x")
    assert facts["cpu_count"] == os.cpu_count()
    assert facts["cpu_model"] == host.cpu_model() and facts["cpu_model"].strip()
    assert facts["python"].count(".") == 2
    assert (facts["torch_threads"], facts["faiss"]) == (1, "1.x")


def test_command_line_is_pasteable_with_the_thread_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    script = Path.cwd() / "benchmarks" / "mquake.py"
    line = host.command_line([str(script), "--method", "cake", "--note", "two words"])
    assert line == "OMP_NUM_THREADS=1 python benchmarks/mquake.py --method cake --note 'two words'"
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert host.command_line(["/elsewhere/run.py"]) == "python /elsewhere/run.py"
