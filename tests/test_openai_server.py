"""OpenAICompatibleLLM against a real server: llama-cpp-python serving the packaged SmolLM2 GGUF.

Needs ``pip install 'editagent[server-test]'`` (llama-cpp-python compiles llama.cpp, which takes
minutes); without it the module is skipped. The recorded run is benchmarks/results/openai_server_check.md.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip(
    "llama_cpp",
    reason="llama-cpp-python is not installed (pip install 'editagent[server-test]'); the OpenAI-compatible "
           "backend's real-server test is recorded in benchmarks/results/openai_server_check.md")

from _models import real_llm
from _servers import stop

from editagent.llm import LLM, OpenAICompatibleLLM, cut_at_stop
from editagent.models import _smollm2_gguf

pytestmark = pytest.mark.server

MODEL = "smollm2-135m-instruct"
STARTUP_TIMEOUT_S = 120
BOS = "<|im_start|>"  # SmolLM2's BOS token; its GGUF says not to add it
BOS_OVERRIDE = ("--kv_overrides", "tokenizer.ggml.add_bos_token=bool:true")
CAPITAL = "The capital of France is"
PROMPTS = [
    "Q: What is the capital of France?\nA: Paris\n\nQ: What is the capital of Italy?\nA:",
    "Q: What is the capital of Germany?\nA: Berlin\n\nQ: What is the capital of Spain?\nA:",
    "The three primary colours are",
]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start_server(log_dir: Path, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
    """``python -m llama_cpp.server`` on a free port, answering /v1/models; the process and its URL."""
    gguf = _smollm2_gguf(Path())
    if not gguf.is_file():
        pytest.skip(f"the packaged GGUF is missing: {gguf}")
    port = _free_port()
    log_path = log_dir / "server.log"
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", MODEL,
               "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", *extra]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                   env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        if process.poll() is not None:
            pytest.fail(f"the server exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/v1/models", timeout=5) as answer:
                models = json.loads(answer.read())
            break
        except OSError:
            if time.monotonic() > deadline:
                stop(process)
                pytest.fail(f"no answer from {url}/v1/models within {STARTUP_TIMEOUT_S} s:\n"
                            f"{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
    assert any(entry["id"] == MODEL for entry in models["data"])
    return process, url


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The stock server; terminated when the module's tests are done."""
    process, url = _start_server(tmp_path_factory.mktemp("llama_server"))
    try:
        yield url
    finally:
        stop(process)


@pytest.fixture(scope="module")
def bos_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server that adds SmolLM2's BOS token, so that its echoed log-probs line up (llama-cpp-python#1983)."""
    process, url = _start_server(tmp_path_factory.mktemp("llama_bos_server"), *BOS_OVERRIDE)
    try:
        yield url
    finally:
        stop(process)


@pytest.fixture(scope="module")
def llm(server: str) -> OpenAICompatibleLLM:
    return OpenAICompatibleLLM(server, MODEL, max_concurrency=3)


def test_batched_generation_is_greedy_and_deterministic(llm: OpenAICompatibleLLM) -> None:
    assert isinstance(llm, LLM)
    first = llm.generate(PROMPTS, max_new_tokens=16)
    second = llm.generate(PROMPTS, max_new_tokens=16)
    print("sample generations:", json.dumps(dict(zip(PROMPTS, first, strict=True)), indent=1))
    assert all(text.strip() for text in first)
    assert first == second
    assert llm.calls == 6


def test_stop_strings_are_honoured(llm: OpenAICompatibleLLM) -> None:
    stops = ["\n", ".", ",", "Q:", " and"]  # five: the fifth is applied by the client only
    free = llm.generate(PROMPTS, max_new_tokens=24)
    stopped = llm.generate(PROMPTS, stop=stops, max_new_tokens=24)
    print("stopped:", stopped)
    assert stopped == [cut_at_stop(text, stops)[0] for text in free]
    assert stopped != free
    assert not any(stop in text for text in stopped for stop in stops)


def test_chat_endpoint_answers(server: str) -> None:
    chat = OpenAICompatibleLLM(server, MODEL, endpoint="chat")
    [answer] = chat.generate(["What is the capital of France? Answer in one word."], max_new_tokens=12)
    print("chat answer:", repr(answer))
    assert "Paris" in answer


def test_score_prefers_the_true_capital_and_matches_transformers(bos_server: str) -> None:
    llm = OpenAICompatibleLLM(bos_server, MODEL)
    continuations = [" Paris", " Tokyo", " London"]
    scores = llm.score(CAPITAL, continuations)
    # The same weights, de-quantised, in TransformersLLM, with the BOS token the server adds.
    local = real_llm().score(BOS + CAPITAL, continuations)
    print(f"server scores {[round(x, 3) for x in scores]}; TransformersLLM {[round(x, 3) for x in local]}")
    paris, tokyo, _ = scores
    assert paris > tokyo
    assert scores == pytest.approx(local, abs=0.5)  # Q4_1 kernels vs float32; a shifted token is off by nats
    assert llm.score_many([(CAPITAL, " Paris")]) == pytest.approx([paris])


@pytest.mark.xfail(strict=False, reason="llama-cpp-python#1983: echoed log-probs are shifted by one token "
                                        "when the model adds no BOS token (SmolLM2)")
def test_stock_server_scores_match_transformers(llm: OpenAICompatibleLLM) -> None:
    scores = llm.score(CAPITAL, [" Paris", " Tokyo", " London"])
    local = real_llm().score(CAPITAL, [" Paris", " Tokyo", " London"])
    print(f"stock server scores {[round(x, 3) for x in scores]}; TransformersLLM {[round(x, 3) for x in local]}")
    assert scores == pytest.approx(local, abs=0.5)


def test_the_models_decomposition_through_the_server_walks_the_store(llm: OpenAICompatibleLLM, tmp_path: Path,
                                                                     embedder: object) -> None:
    """EditAgent(decomposer="llm"/"auto") over a served model: its reading is parsed strictly and walked like the
    rules' (SmolLM2 is a weak decomposer; the check is that every answer is either from the edits or the plain
    model's own, never an edit taken for a question it does not answer)."""
    from editagent import Edit, EditAgent
    from editagent.decompose.llm_decompose import LLMDecomposer

    questions = ["Where does Alice's manager live?", "How many legs does a spider have?"]
    for question, chain in zip(questions, LLMDecomposer(llm, max_hops=4).decompose(questions), strict=True):
        assert chain is None or chain.entity.casefold() in question.casefold()
    for decomposer in ("llm", "auto"):
        agent = EditAgent(store=tmp_path / decomposer, llm=llm, embedder=embedder, decomposer=decomposer)
        agent.edit_many([Edit(subject="Alice", relation="manager", object="Bob Tanaka"),
                         Edit(subject="Bob Tanaka", relation="home city", object="Porto")])
        edited, unrelated = agent.ask_many(questions)
        if decomposer == "auto":  # the rules read it: the model is not asked
            assert (edited.text, [hop.tier for hop in edited.trace]) == ("Porto", ["exact", "meaning"])
        else:  # the model's reading, whatever it is, either reaches the edits or leaves the plain model to answer
            assert edited.text == "Porto" or edited.route == "model"
        assert unrelated.route == "model"
