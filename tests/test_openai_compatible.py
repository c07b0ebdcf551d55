"""OpenAICompatibleLLM against a tiny in-process HTTP server (no model, no llama.cpp needed)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from editagent.llm import LLM, OpenAICompatibleLLM
from editagent.llm import openai_compatible as module

Reply = tuple[int, dict[str, Any]]


class FakeOpenAIServer:
    """A real HTTP server on 127.0.0.1 answering with canned OpenAI-shaped JSON.

    It stands in for the protocol only: it checks what the client sends and how it reads
    the answers, not what a model would say. The test against a real server (llama-cpp-python
    serving SmolLM2) is ``tests/test_openai_server.py``.
    """

    def __init__(self, answer: Callable[[str, dict[str, Any]], Reply]) -> None:
        self.answer = answer
        self.requests: list[tuple[str, dict[str, Any], dict[str, str]]] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer._lock:
                    outer.requests.append((self.path, body, dict(self.headers)))
                status, payload = outer.answer(self.path, body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:  # keep pytest output clean
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.01,), daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve() -> Iterator[Callable[[Callable[[str, dict[str, Any]], Reply]], FakeOpenAIServer]]:
    servers: list[FakeOpenAIServer] = []

    def start(answer: Callable[[str, dict[str, Any]], Reply]) -> FakeOpenAIServer:
        servers.append(FakeOpenAIServer(answer))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(module, "_BACKOFF_S", 0.0)


def completion(text: str) -> Reply:
    return 200, {"object": "text_completion", "choices": [{"index": 0, "text": text, "finish_reason": "stop"}]}


def test_generate_sends_a_greedy_request_and_cuts_at_every_stop(serve: Any) -> None:
    server = serve(lambda path, body: completion(" Paris\nQ: next\n\nmore"))
    llm = OpenAICompatibleLLM(server.url + "/v1/", "smol", api_key="secret")
    assert isinstance(llm, LLM)
    stops = ["<a>", "<b>", "<c>", "<d>", "\nQ:", "\n\n"]
    assert llm.generate(["The capital of France is"], stop=stops, max_new_tokens=7) == [" Paris"]
    path, body, headers = server.requests[0]
    assert path == "/v1/completions"  # a base_url ending in /v1/ is not doubled
    assert body == {"model": "smol", "prompt": "The capital of France is", "max_tokens": 7, "temperature": 0,
                    "stop": ["<a>", "<b>", "<c>", "<d>"]}
    assert headers["Authorization"] == "Bearer secret"
    assert llm.calls == 1 and llm.name == "smol"


def test_generate_omits_empty_stops_and_reads_the_api_key_from_the_environment(
        serve: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "from-env")
    server = serve(lambda path, body: completion("x"))
    llm = OpenAICompatibleLLM(server.url, "smol", name="local")
    assert llm.generate(["p"], stop=["", ""]) == ["x"]
    _, body, headers = server.requests[0]
    assert "stop" not in body and body["max_tokens"] == 64
    assert headers["Authorization"] == "Bearer from-env" and llm.name == "local"
    assert llm.generate(["p"], max_new_tokens=0) == [""] and len(server.requests) == 1


def test_batched_generation_keeps_the_order_under_concurrency(serve: Any) -> None:
    active, peak, lock = [0], [0], threading.Lock()

    def answer(path: str, body: dict[str, Any]) -> Reply:
        index = int(body["prompt"].split()[-1])
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.02 * (8 - index))  # later prompts finish first
        with lock:
            active[0] -= 1
        return completion(f" answer {index}")

    server = serve(answer)
    llm = OpenAICompatibleLLM(server.url, "smol", max_concurrency=4)
    prompts = [f"question {i}" for i in range(8)]
    assert llm.generate(prompts) == [f" answer {i}" for i in range(8)]
    assert 1 < peak[0] <= 4
    assert llm.calls == 8


def test_chat_endpoint_sends_one_user_message(serve: Any) -> None:
    def answer(path: str, body: dict[str, Any]) -> Reply:
        return 200, {"object": "chat.completion",
                     "choices": [{"index": 0, "message": {"role": "assistant", "content": "Rome.\nDone"}}]}

    server = serve(answer)
    llm = OpenAICompatibleLLM(server.url, "smol", endpoint="chat")
    assert llm.generate(["Capital of Italy?"], stop=["\n"], max_new_tokens=5) == ["Rome."]
    path, body, _ = server.requests[0]
    assert path == "/v1/chat/completions"
    assert body == {"model": "smol", "messages": [{"role": "user", "content": "Capital of Italy?"}],
                    "max_tokens": 5, "temperature": 0, "stop": ["\n"]}


def test_server_error_is_retried_then_raised_with_url_status_and_message(serve: Any) -> None:
    server = serve(lambda path, body: (500, {"error": {"message": "model exploded", "type": "server_error"}}))
    llm = OpenAICompatibleLLM(server.url, "smol")
    with pytest.raises(RuntimeError) as caught:
        llm.generate(["p"])
    message = str(caught.value)
    assert f"{server.url}/v1/completions" in message and "HTTP 500" in message and "model exploded" in message
    assert len(server.requests) == 3  # one try and two retries


def test_client_error_is_raised_at_once(serve: Any) -> None:
    server = serve(lambda path, body: (404, {"detail": "Not Found"}))
    llm = OpenAICompatibleLLM(server.url, "smol", endpoint="chat")
    with pytest.raises(RuntimeError, match=r"/v1/chat/completions failed with HTTP 404: Not Found"):
        llm.generate(["p"])
    assert len(server.requests) == 1


def test_a_transient_server_error_is_retried(serve: Any) -> None:
    seen: list[int] = []

    def answer(path: str, body: dict[str, Any]) -> Reply:
        seen.append(1)
        return (503, {"error": {"message": "busy"}}) if len(seen) == 1 else completion("ok")

    llm = OpenAICompatibleLLM(serve(answer).url, "smol")
    assert llm.generate(["p"]) == ["ok"]
    assert len(seen) == 2


def test_connection_refused_names_the_url() -> None:
    probe = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = probe.server_address[1]
    probe.server_close()  # nothing listens there now
    llm = OpenAICompatibleLLM(f"http://127.0.0.1:{port}", "smol", timeout=5)
    with pytest.raises(RuntimeError, match=rf"POST http://127.0.0.1:{port}/v1/completions failed"):
        llm.generate(["p"])


# "The capital of France is" + " Paris", echoed, then one generated token (" .") at the end of the text.
ECHO = {"tokens": ["The", " capital", " of", " France", " is", " Paris", " ."],
        "text_offset": [0, 3, 11, 14, 21, 24, 30],
        "token_logprobs": [None, -1.0, -2.0, -3.0, -0.5, -0.25, -9.0]}


def test_score_sums_the_continuation_tokens_of_an_echo(serve: Any) -> None:
    def answer(path: str, body: dict[str, Any]) -> Reply:
        logprobs = ECHO if body["prompt"].endswith("Paris") else {
            "tokens": ["The", " capital", " of", " France", " is", " To", "kyo", "!"],
            "text_offset": [0, 3, 11, 14, 21, 24, 27, 30],
            "token_logprobs": [None, -1.0, -2.0, -3.0, -0.5, -4.0, -0.125, -1.0]}
        return 200, {"choices": [{"index": 0, "text": body["prompt"] + " .", "logprobs": logprobs}]}

    server = serve(answer)
    llm = OpenAICompatibleLLM(server.url, "smol")
    assert llm.score("The capital of France is", [" Paris", " Tokyo", ""]) == [-0.25, -4.125, 0.0]
    assert llm.calls == 3 and len(server.requests) == 2  # an empty continuation needs no request
    path, body, _ = server.requests[0]
    assert path == "/v1/completions"
    assert {key: body[key] for key in ("echo", "logprobs", "max_tokens", "temperature")} == {
        "echo": True, "logprobs": 1, "max_tokens": 1, "temperature": 0}
    assert llm.score_many([("The capital of France", " is Paris")]) == [-0.75]


def test_a_token_straddling_the_prompt_end_counts_for_the_continuation() -> None:
    # prompt "ab", continuation "cd", tokens "a" | "bc" | "d": "bc" belongs partly to the continuation.
    assert module._sum_after([0, 1, 3], [None, -1.0, -2.0], start=2, end=4) == (-3.0, 2)
    assert module._sum_after([0, 2], [None, -1.0], start=2, end=4) == (-1.0, 1)


def test_score_without_echo_logprobs_is_not_implemented(serve: Any) -> None:
    llm = OpenAICompatibleLLM(serve(lambda path, body: completion("x")).url, "smol")
    with pytest.raises(NotImplementedError, match="prompt log-probabilities"):
        llm.score("p", [" q"])
    generated_only = serve(lambda path, body: (200, {"choices": [{"text": "x", "logprobs": {
        "tokens": ["x"], "text_offset": [len(body["prompt"])], "token_logprobs": [-1.0]}}]}))
    with pytest.raises(NotImplementedError, match="do not cover the echoed continuation"):
        OpenAICompatibleLLM(generated_only.url, "smol").score("p", [" q"])
    refusing = serve(lambda path, body: (400, {"error": {"message": "echo is not supported"}}))
    with pytest.raises(NotImplementedError, match="echo is not supported"):
        OpenAICompatibleLLM(refusing.url, "smol").score("p", [" q"])


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="endpoint"):
        OpenAICompatibleLLM("http://x", "m", endpoint="embeddings")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_concurrency"):
        OpenAICompatibleLLM("http://x", "m", max_concurrency=0)
