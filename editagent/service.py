"""What the long-running faces share (the HTTP service, the MCP server): one store, one lazily loaded model, one
agent per namespace, safe to call from several threads at once.

Nothing heavy loads up front. The embedder loads on the first edit or search (``LazyEmbedder``), the language
model on the first hop that needs it (``LazyLLM``): a question answered from edits never loads it.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from editagent.memory import EditMemory, is_postgres_url, resolve_store_path
from editagent.memory.edit_memory import LazyEmbedder
from editagent.models import DEFAULT_EMBEDDER, DEFAULT_LLM, Embedder, load_embedder, quiet_loading
from editagent.schema import Answer, EditError, check_namespace
from editagent.tools import Tool, run_tool

if TYPE_CHECKING:
    from editagent.agent import EditAgent
    from editagent.keys import KeyRing
    from editagent.llm import LLM
    from editagent.memory.copy import CopyReport

logger = logging.getLogger(__name__)

# the faces' way to a store: they import nothing from editagent.memory
__all__ = ["EditMemory", "LazyLLM", "Service", "check_store", "copy_stores", "is_store", "open_store"]

MAX_AGENTS = 256  # namespaces whose agent (and its cached view of the store) is kept
NO_KEY = ("authorization: no valid API key; send the header 'Authorization: Bearer <key>' with a key from "
          "`editagent keys create`")  # the 401 of every face served over HTTP
INSECURE_WARNING = ("authentication is OFF (--insecure-no-auth): anyone who can reach this port can read and write "
                    "%s. Use it only on your own machine")


def is_store(store: str | Path) -> bool:
    """A folder holding an embedded store, or a database URL (whose tables are made on first use)."""
    return is_postgres_url(store) or (resolve_store_path(store) / "edits.sqlite3").is_file()


def check_store(store: str | Path, *, create: bool) -> str | Path:
    """The store's folder (or its database URL), refusing a folder that is not a store unless ``create``; never a
    file or a foreign folder."""
    if is_postgres_url(store):
        return store
    path = resolve_store_path(store)
    if is_store(path):
        return path
    if path.exists() and not path.is_dir():
        raise EditError(f"store: {str(path)!r} is a file, not an edit store (a folder holding edits.sqlite3)")
    if path.is_dir() and any(path.iterdir()):
        raise EditError(f"store: {str(path)!r} is a folder but not an edit store (it has no edits.sqlite3); "
                        "name an empty or new folder to start one")
    if not create:
        raise EditError(f"store: no edit store at {str(path)!r}; check --store, or pass --create to start one")
    return path


def copy_stores(source: str | Path, destination: str | Path, *, namespace: str | None = None,
                progress: bool = False) -> CopyReport:
    """``editagent store copy``: one namespace (or all, with the API keys) of an existing store into another,
    history and ids kept, verified by count and checksum."""
    from editagent.memory.copy import copy_store  # noqa: PLC0415 - only this command needs it

    if namespace is not None:
        check_namespace(namespace)
    return copy_store(check_store(source, create=False), check_store(destination, create=True),
                      namespace=namespace, progress=progress)


def warn_without_keys(ring: KeyRing) -> None:
    """A server whose store holds no live key refuses every request: say so at start-up."""
    if not any(not key.revoked for key in ring.list()):
        logger.warning("store %s holds no API key: every request will get 401; make one with "
                       "`editagent keys create --namespace NAME --store %s`", ring.location, ring.location)


def open_store(store: str | Path, *, embedder: Embedder | LazyEmbedder | str | None = None) -> EditMemory:
    """``EditMemory`` over ``store`` with the embedder loaded only when something is embedded or searched."""
    if embedder is None or isinstance(embedder, str):
        name = embedder or DEFAULT_EMBEDDER
        embedder = LazyEmbedder(name, lambda: _quietly(load_embedder, name))
    return EditMemory(store, embedder=embedder)


def _quietly(load: Any, name: str) -> Any:
    with quiet_loading():
        return load(name)


class LazyLLM:
    """An LLM loaded on its first call, then called by one thread at a time (the backends keep caches)."""

    def __init__(self, llm: LLM | str | None = None) -> None:
        self._spec = llm if isinstance(llm, str) or llm is None else None
        self._llm: LLM | None = None if isinstance(llm, str) or llm is None else llm
        self._lock = threading.RLock()

    @property
    def name(self) -> str:
        return self._llm.name if self._llm is not None else (self._spec or DEFAULT_LLM)

    @property
    def loaded(self) -> bool:
        return self._llm is not None

    def _model(self) -> LLM:
        with self._lock:
            if self._llm is None:
                from editagent.llm import TransformersLLM  # noqa: PLC0415 - torch-heavy; most requests never need it

                logger.info("loading the language model %s", self.name)
                with quiet_loading():
                    self._llm = TransformersLLM.load(self._spec or DEFAULT_LLM)
            return self._llm

    def generate(self, prompts: Sequence[str], *, stop: Sequence[str] = (), max_new_tokens: int = 64,
                 prefix: str | None = None) -> list[str]:
        with self._lock:
            return self._model().generate(prompts, stop=stop, max_new_tokens=max_new_tokens, prefix=prefix)

    def score(self, prompt: str, continuations: Sequence[str], *, prefix: str | None = None) -> list[float]:
        with self._lock:
            return self._model().score(prompt, continuations, prefix=prefix)

    def score_many(self, pairs: Sequence[tuple[str, str]], *, prefix: str | None = None) -> list[float]:
        with self._lock:
            return self._model().score_many(pairs, prefix=prefix)


class Service:
    """One store behind every namespace: the memory, a lazily loaded LLM, and one ``EditAgent`` per namespace
    (kept, so each keeps its view of the store between questions). Thread-safe."""

    def __init__(self, memory: EditMemory, llm: LLM | str | None = None) -> None:
        self.memory = memory
        self.llm = LazyLLM(llm)
        self._agents: OrderedDict[str, tuple[EditAgent, threading.Lock]] = OrderedDict()
        self._guard = threading.Lock()

    def _entry(self, namespace: str) -> tuple[EditAgent, threading.Lock]:
        from editagent.agent import EditAgent  # noqa: PLC0415 - torch-heavy: only a running service needs it

        check_namespace(namespace)
        with self._guard:
            entry = self._agents.get(namespace)
            if entry is None:
                # every agent shares the memory: its reasoner keys its view by the namespace's own version
                # (``view.EditView.version``), so one user's write does not rebuild another user's view
                entry = self._agents[namespace] = (EditAgent(namespace=namespace, memory=self.memory, llm=self.llm),
                                                   threading.Lock())
                if len(self._agents) > MAX_AGENTS:
                    self._agents.popitem(last=False)
            self._agents.move_to_end(namespace)
            return entry

    def agent(self, namespace: str) -> EditAgent:
        return self._entry(namespace)[0]

    def run(self, namespace: str, tool: Tool, arguments: Any) -> dict[str, Any]:
        """A validated tool call in ``namespace``; questions of one namespace are answered one at a time."""
        agent, asking = self._entry(namespace)
        if tool.name != "ask":
            return run_tool(agent, tool, arguments)
        with asking:
            return run_tool(agent, tool, arguments)

    def ask(self, namespace: str, question: str) -> Answer:
        agent, asking = self._entry(namespace)
        with asking:
            return agent.ask(question)

    def close(self) -> None:
        self.memory.close()
