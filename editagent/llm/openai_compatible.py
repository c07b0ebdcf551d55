"""OpenAICompatibleLLM: the LLM interface over an OpenAI-compatible HTTP server.

Works with anything that speaks ``/v1/completions`` (and ``/v1/chat/completions``): vLLM,
llama-cpp-python's server, Ollama, LM Studio, OpenAI itself. Only the standard library is
used (``urllib.request`` + ``json``), so this backend adds no dependency. A batch is sent
as concurrent single-prompt requests (``max_concurrency`` at a time); servers that batch
continuously (vLLM, llama.cpp with several slots) turn them into one batch themselves.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, TypeVar

from editagent.llm.base import cut_at_stop

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
_MAX_SERVER_STOPS = 4  # the OpenAI API, and servers copying it, accept at most 4 stop strings
_RETRIES = 2
_BACKOFF_S = 0.5
_SCORE_UNSUPPORTED = (
    "{url} does not return prompt log-probabilities (echo=true, logprobs=1), which score() needs; "
    "use a server that supports them (vLLM, llama-cpp-python's server) or TransformersLLM. Server said: {detail}"
)


class _HTTPStatusError(RuntimeError):
    """An HTTP error answer; ``status`` lets callers tell a refused request from a broken server."""

    def __init__(self, message: str, status: int, detail: str) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


class OpenAICompatibleLLM:
    """Greedy generation and continuation scoring through an OpenAI-compatible server.

    ``base_url``: the server's root, with or without the trailing ``/v1``
    (``http://127.0.0.1:8000`` and ``https://api.openai.com/v1`` both work).
    ``endpoint``: ``"completions"`` sends raw prompts (what the few-shot prompts of this
    package expect); ``"chat"`` wraps each prompt as one user message of a chat request, for
    servers or models that only offer chat. ``score``/``score_many`` always use
    ``/v1/completions`` with ``echo=true, logprobs=1``; a server without prompt log-probabilities
    makes them raise ``NotImplementedError``.

    Known server bug: llama-cpp-python (0.3.36 at least, issue abetlen/llama-cpp-python#1983) shifts
    echoed log-probs by one token for models whose GGUF does not add a BOS token (SmolLM2 among them),
    so ``score`` gets wrong numbers from it; starting that server with
    ``--kv_overrides tokenizer.ggml.add_bos_token=bool:true`` makes them right (every prompt then starts
    with the BOS token). llama.cpp's own ``llama-server`` does not echo prompt log-probs at all.

    ``prefix`` is accepted for the interface and ignored: the text sent is the full prompt
    either way, and servers that cache prompts (vLLM's prefix caching, llama.cpp's slot cache)
    reuse a shared few-shot prefix on their own.

    Output is greedy (``temperature: 0``) and cut client-side before the earliest stop string;
    at most the first 4 stop strings are sent to the server (the OpenAI limit), all are applied here.
    """

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None,
                 endpoint: Literal["completions", "chat"] = "completions", timeout: float = 120,
                 max_concurrency: int = 4, name: str | None = None) -> None:
        if endpoint not in ("completions", "chat"):
            raise ValueError(f"endpoint must be 'completions' or 'chat', not {endpoint!r}")
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        root = base_url.rstrip("/")
        self.base_url = root[: -len("/v1")] if root.endswith("/v1") else root
        self.model = model
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY", "none")
        self.endpoint = endpoint
        self.timeout = timeout
        self.max_concurrency = max_concurrency
        self.name = name or model
        self.calls = 0
        self._lock = threading.Lock()

    # -- public ----------------------------------------------------------------------------------

    def generate(self, prompts: Sequence[str], *, stop: Sequence[str] = (), max_new_tokens: int = 64,
                 prefix: str | None = None) -> list[str]:
        """Greedy completions, cut before the first stop string; same order as ``prompts``."""
        del prefix  # the server sees full prompts; see the class docstring
        if not prompts:
            return []
        stop = [s for s in stop if s]
        self._count(len(prompts))
        if max_new_tokens <= 0:  # several servers read max_tokens=0 as "no limit"
            return [""] * len(prompts)
        return self._map(lambda prompt: cut_at_stop(self._complete(prompt, stop, max_new_tokens), stop)[0],
                         list(prompts))

    def score(self, prompt: str, continuations: Sequence[str], *, prefix: str | None = None) -> list[float]:
        """Sum of log-probabilities of each continuation's tokens after ``prompt``."""
        return self.score_many([(prompt, c) for c in continuations], prefix=prefix)

    def score_many(self, pairs: Sequence[tuple[str, str]], *, prefix: str | None = None) -> list[float]:
        """``score`` for many (prompt, continuation) pairs at once, as concurrent requests."""
        del prefix
        if not pairs:
            return []
        self._count(len(pairs))
        return self._map(lambda pair: self._score_one(*pair), list(pairs))

    # -- requests --------------------------------------------------------------------------------

    def _complete(self, prompt: str, stop: list[str], max_new_tokens: int) -> str:
        body: dict[str, Any] = {"model": self.model, "max_tokens": max_new_tokens, "temperature": 0}
        if stop:
            body["stop"] = stop[:_MAX_SERVER_STOPS]
        if self.endpoint == "chat":
            body["messages"] = [{"role": "user", "content": prompt}]
            choice = _first_choice(self._post("/v1/chat/completions", body))
            return (choice.get("message") or {}).get("content") or ""
        body["prompt"] = prompt
        return _first_choice(self._post("/v1/completions", body)).get("text") or ""

    def _score_one(self, prompt: str, continuation: str) -> float:
        """Echo ``prompt + continuation`` with its token log-probabilities; sum those past the prompt.

        ``max_tokens`` is 1, not 0: llama-cpp-python reads 0 as "no limit" and would generate to the
        end of its context. The one generated token starts at or after the end of the text and is
        excluded by its offset.
        """
        if not continuation:
            return 0.0
        text = prompt + continuation
        body = {"model": self.model, "prompt": text, "max_tokens": 1, "temperature": 0, "echo": True,
                "logprobs": 1}
        url = self._url("/v1/completions")
        try:
            choice = _first_choice(self._post("/v1/completions", body))
        except _HTTPStatusError as error:
            if error.status in (400, 422, 501):
                raise NotImplementedError(_SCORE_UNSUPPORTED.format(url=url, detail=error.detail)) from error
            raise
        logprobs = choice.get("logprobs") or {}
        offsets, values = logprobs.get("text_offset"), logprobs.get("token_logprobs")
        if not offsets or not values or len(offsets) != len(values):
            raise NotImplementedError(_SCORE_UNSUPPORTED.format(
                url=url, detail="the answer had no text_offset/token_logprobs for the echoed prompt"))
        total, counted = _sum_after(offsets, values, len(prompt), len(text))
        if not counted:  # e.g. llama.cpp's own server: log-probs of the generated token only
            raise NotImplementedError(_SCORE_UNSUPPORTED.format(
                url=url, detail="the answer's log-probs do not cover the echoed continuation"))
        return total

    def _url(self, path: str) -> str:
        return self.base_url + path

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST JSON; retries connection errors and 5xx answers (with backoff); other errors raise at once."""
        url = self._url(path)
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {self.api_key}"}
        for attempt in range(_RETRIES + 1):
            request = urllib.request.Request(url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return json.loads(response.read().decode("utf-8"))
            except urllib.error.HTTPError as error:
                detail = _server_message(error)
                failure: Exception = _HTTPStatusError(
                    f"POST {url} failed with HTTP {error.code}: {detail}", error.code, detail)
                if error.code < 500:
                    raise failure from None
            except (OSError, json.JSONDecodeError) as error:  # URLError, refused, reset, timeout, bad body
                failure = RuntimeError(f"POST {url} failed: {getattr(error, 'reason', None) or error!r}")
            if attempt < _RETRIES:
                logger.warning("%s; retrying (%d/%d)", failure, attempt + 1, _RETRIES)
                time.sleep(_BACKOFF_S * 2**attempt)
        raise failure

    def _map(self, function: Callable[[Any], _T], items: list[Any]) -> list[_T]:
        """``function`` over ``items``, ``max_concurrency`` at a time; results in input order."""
        if len(items) == 1 or self.max_concurrency == 1:
            return [function(item) for item in items]
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(items))) as pool:
            return list(pool.map(function, items))

    def _count(self, n: int) -> None:
        with self._lock:
            self.calls += n

    def __repr__(self) -> str:
        return f"OpenAICompatibleLLM({self.base_url!r}, {self.model!r}, endpoint={self.endpoint!r})"


def _first_choice(answer: dict[str, Any]) -> dict[str, Any]:
    choices = answer.get("choices") if isinstance(answer, dict) else None
    if not choices:
        raise RuntimeError(f"the server's answer has no choices: {str(answer)[:300]}")
    return choices[0]


def _sum_after(offsets: Sequence[int], values: Sequence[float | None], start: int,
               end: int) -> tuple[float, int]:
    """Sum the log-probs of tokens ending after character ``start`` and starting before ``end``; and their count.

    A token that straddles the prompt/continuation boundary counts (as in TransformersLLM, which
    scores every token past the prompt's own tokenisation); tokens at or after ``end`` were
    generated, not echoed. A ``None`` log-prob (the very first token has no context) counts as 0.
    """
    total, counted = 0.0, 0
    for i, (offset, value) in enumerate(zip(offsets, values, strict=True)):
        token_end = offsets[i + 1] if i + 1 < len(offsets) else end
        if offset >= end or token_end <= start:
            continue
        total += value or 0.0
        counted += 1
    return total, counted


def _server_message(error: urllib.error.HTTPError) -> str:
    """The server's own error message: OpenAI's ``{"error": {"message"}}``, FastAPI's ``detail``, or raw text."""
    try:
        raw = error.read().decode("utf-8", errors="replace")
    except OSError:
        raw = ""
    try:
        body = json.loads(raw)
    except ValueError:
        return raw.strip()[:500] or str(error.reason)
    if isinstance(body, dict):
        inner = body.get("error")
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        if isinstance(inner, str):
            return inner
        if "detail" in body:
            return str(body["detail"])[:500]
    return raw.strip()[:500]
