"""The machine facts every benchmark result records."""

from __future__ import annotations

import os

from editagent.eval import host


def test_machine_names_this_cpu_and_keeps_each_benchmarks_extras() -> None:
    facts = host.machine(torch_threads=1, faiss="1.x")
    assert facts["cpu_count"] == os.cpu_count()
    assert facts["cpu_model"] == host.cpu_model() and facts["cpu_model"].strip()
    assert facts["python"].count(".") == 2
    assert (facts["torch_threads"], facts["faiss"]) == (1, "1.x")
