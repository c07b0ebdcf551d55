"""Sustained mixed load on one edit store from several processes, then a check that nothing was lost.

Issue 6 asks for "sustained mixed add/search/ask load from several processes for a fixed time, reporting
throughput, p99 latency and a final consistency check with nothing lost". Each of ``--workers`` processes
(spawned, each with its own real packaged embedder and its own ``EditMemory`` on the same store) runs for
``--seconds`` a random mix of:

* ``add``: a batch of ``--batch`` edits to one namespace in one ``EditMemory.add`` (a share ``--update-share``
  of them re-edit one of this worker's own earlier keys, so supersession happens under load too);
* ``search``: ``EditMemory.search(limit=5)`` in one namespace; half the queries are the exact sentence of one of
  the worker's own live edits, whose top hit must be that edit (read-your-writes, counted);
* ``ask``: by default the retrieval an ``ask`` does, without the language model: the chain walk's read of
  the namespace's live edits (``EditMemory.edits``, what ``EditAgent.ask`` with the default method looks edits
  up in) plus MeLLo's per-hop retrieval (``EditMemory.top1``) for a two-hop question; with ``--with-llm``
  a real ``EditAgent.ask`` (packaged SmolLM2-135M, ``--ask-method``, slow on a CPU) of a two-hop question
  whose last hop half the time no edit covers, so the model answers it.

Namespaces are shared by all workers; keys are not (a worker only re-edits its own subjects), so the live edit of
every key is known exactly. When all workers have stopped, the parent opens the store afresh and checks: every
edit a worker added is stored, the live set of every namespace equals the expected one (nothing lost, nothing
extra), ``count`` equals SQLite, each namespace's FAISS file and the freshly loaded index hold exactly SQLite's
live rowids, and exact-sentence searches find their edits. It writes ``<out>/load_bench.json`` and
``<out>/load_bench.md``.

With ``--http`` the store is served by a real ``editagent serve`` subprocess (one process, worker threads) and
the workers are HTTP clients with a write API key: ``add`` is ``POST /{ns}/edits``, ``search`` is
``GET /{ns}/edits/search``, and ``ask`` is ``POST /{ns}/ask`` of a two-hop question the seeded edits answer (each
answer is checked). Latencies are seen by the client, HTTP included. The server's log must not hold the key, and
the language model must not have loaded. It writes ``<out>/http_load.{json,md}``; the same check follows.

Run from the repository root::

    OMP_NUM_THREADS=1 python benchmarks/load_bench.py --seconds 60            # 4 workers, retrieval-path ask
    OMP_NUM_THREADS=1 python benchmarks/load_bench.py --seconds 120 --with-llm  # real EditAgent.ask
    OMP_NUM_THREADS=1 python benchmarks/load_bench.py --seconds 60 --http      # through `editagent serve`
    python benchmarks/load_bench.py --seconds 5 --workers 2 --out /tmp/lb      # smoke test
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import multiprocessing
import os
import platform
import random
import shlex
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import faiss
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from editagent.memory import EditMemory, VectorIndex  # noqa: E402
from editagent.relations import fact_question  # noqa: E402
from editagent.schema import Edit  # noqa: E402

logger = logging.getLogger("load_bench")

OPS = ("add", "search", "ask")
FIRST = ["Ada", "Boris", "Chiara", "Dmitri", "Elena", "Farid", "Greta", "Hiroshi", "Ingrid", "Jamal", "Katja",
         "Luis", "Mirela", "Nikolai", "Olufemi", "Priya", "Quentin", "Rosa", "Stellan", "Tamar"]
LAST = ["Abernathy", "Brennan", "Castellano", "Delacroix", "Eriksen", "Fontaine", "Gallagher", "Hartmann",
        "Iwasaki", "Jovanovic", "Kowalski", "Lindqvist", "Moreau", "Nakamura", "Oyelaran", "Petrov"]
PERSON_RELATIONS = ["country of citizenship", "employer", "place of birth", "occupation"]
OBJECTS = {"country of citizenship": ["Portugal", "Kenya", "Canada", "Japan", "Chile", "Norway"],
           "employer": ["NASA", "Toyota", "Siemens", "BBC", "Nokia", "Airbus"],
           "place of birth": ["Lisbon", "Nairobi", "Oslo", "Kyoto", "Valparaiso", "Toronto"],
           "occupation": ["chemist", "pilot", "architect", "composer", "surgeon", "poet"]}
COUNTRY_FACTS = ["capital", "official language", "continent"]  # second hops of the seeded two-hop chains


def person(tag: str, n: int) -> str:
    """A unique, pronounceable subject: worker/seed ``tag`` and a running number keep it apart from all others."""
    return f"{FIRST[n % len(FIRST)]} {LAST[n // len(FIRST) % len(LAST)]} {tag}-{n}"


def seed_edits(namespaces: list[str], per_namespace: int) -> list[Edit]:
    """Edits every worker can ask about: people (first hop) and facts about their countries (second hop)."""
    edits = []
    for position, namespace in enumerate(namespaces):
        for n in range(per_namespace):
            relation = PERSON_RELATIONS[n % len(PERSON_RELATIONS)]
            edits.append(Edit(subject=person(f"s{position}", n), relation=relation,
                              object=OBJECTS[relation][n % len(OBJECTS[relation])], namespace=namespace,
                              source="load_bench seed"))
        for country in OBJECTS["country of citizenship"]:
            for k, relation in enumerate(COUNTRY_FACTS):
                edits.append(Edit(subject=country, relation=relation, object=f"{country}-{relation}-{position}-{k}",
                                  namespace=namespace, source="load_bench seed"))
    return edits


# -- workers ------------------------------------------------------------------------------------------


def expected_answer(args: argparse.Namespace, namespace: str, n: int, second: str) -> str:
    """The seeded answer of "What is the <second> of the country of citizenship of person(s<pos>, n)?"."""
    position = args.namespace_names.index(namespace)
    country = OBJECTS["country of citizenship"][n % len(OBJECTS["country of citizenship"])]
    return f"{country}-{second}-{position}-{COUNTRY_FACTS.index(second)}"


class MemoryClient:
    """The operations on an ``EditMemory`` in this process (and ``EditAgent.ask`` with ``--with-llm``)."""

    def __init__(self, args: argparse.Namespace, store: str) -> None:
        import torch

        from editagent.models import load_embedder

        torch.set_num_threads(1)
        self.memory = EditMemory(store, embedder=load_embedder())
        self.agents: dict[str, Any] = {}
        if args.with_llm:
            from editagent.agent import EditAgent
            from editagent.llm import TransformersLLM

            llm = TransformersLLM.load()
            self.agents = {ns: EditAgent(namespace=ns, memory=self.memory, llm=llm, method=args.ask_method)
                           for ns in args.namespace_names}

    def add(self, namespace: str, batch: list[Edit]) -> None:
        self.memory.add(batch, progress=False)

    def search(self, namespace: str, query: str) -> str | None:
        hits = self.memory.search(query, namespace=namespace, limit=5)
        return hits[0].id if hits else None

    def ask(self, namespace: str, question: str, subject: str, second: str) -> tuple[str | None, int]:
        if self.agents:
            answer = self.agents[namespace].ask(question)
            return answer.text, answer.llm_calls
        self.memory.edits(namespace)  # the default method's chain walk reads the live edits
        hop1 = self.memory.top1([fact_question(subject, "country of citizenship")], [namespace])[0]
        if hop1 is not None:
            self.memory.top1([fact_question(hop1.edit.object, second)], [namespace])
        return None, 0  # the retrieval path has no answer text to check

    def close(self) -> None:
        self.memory.close()


class HttpClient:
    """The same operations through a running ``editagent serve``, with an API key, on one kept-alive connection."""

    def __init__(self, base: str, key: str) -> None:
        import httpx

        self.http = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=120)

    def _ok(self, reply: Any) -> Any:
        if reply.status_code >= 300:
            raise RuntimeError(f"HTTP {reply.status_code}: {reply.text[:300]}")
        return reply.json()

    def add(self, namespace: str, batch: list[Edit]) -> None:
        body = [edit.model_dump(mode="json", include={"id", "subject", "relation", "object", "source"})
                for edit in batch]
        self._ok(self.http.post(f"/{namespace}/edits", json=body))

    def search(self, namespace: str, query: str) -> str | None:
        hits = self._ok(self.http.get(f"/{namespace}/edits/search", params={"q": query, "limit": 5}))["hits"]
        return hits[0]["id"] if hits else None

    def ask(self, namespace: str, question: str, subject: str, second: str) -> tuple[str | None, int]:
        answer = self._ok(self.http.post(f"/{namespace}/ask", json={"question": question}))
        return answer["text"], answer["llm_calls"]

    def close(self) -> None:
        self.http.close()


def worker(index: int, args: argparse.Namespace, store: str, out: str, barrier: Any, base: str = "",
           key: str = "") -> None:
    """One process: load models (or connect), wait for the others, then run the mix until the shared deadline."""
    record: dict[str, Any] = {"worker": index, "latencies_ms": {op: [] for op in OPS}, "added": [],
                              "failed_adds": [], "errors": [], "read_your_writes": [0, 0], "llm_asks": 0,
                              "llm_calls": 0, "answers_checked": [0, 0]}
    try:
        rng = random.Random(args.seed * 1000 + index)
        client: Any = HttpClient(base, key) if args.http else MemoryClient(args, store)
        barrier.wait()
        began = time.monotonic()
        deadline = began + args.seconds
        own: dict[str, list[tuple[str, str, str]]] = defaultdict(list)  # namespace -> (subject, relation, id)
        live_sentence: dict[str, tuple[str, str]] = {}  # id -> (namespace, sentence) of this worker's live edits
        counter = 0
        weights = [args.mix[op] for op in OPS]
        while time.monotonic() < deadline:
            op = rng.choices(OPS, weights)[0]
            namespace = rng.choice(args.namespace_names)
            try:
                if op == "add":
                    batch = []
                    for _ in range(args.batch):
                        if own[namespace] and rng.random() < args.update_share:
                            subject, relation, _old = rng.choice(own[namespace])
                        else:
                            subject, relation = person(f"w{index}", counter), rng.choice(PERSON_RELATIONS)
                            counter += 1
                        batch.append(Edit(subject=subject, relation=relation, object=rng.choice(OBJECTS[relation]),
                                          namespace=namespace, source=f"load_bench worker {index}"))
                    started = time.perf_counter()
                    try:
                        client.add(namespace, batch)
                    except Exception as error:
                        record["failed_adds"].append({"ids": [e.id for e in batch], "error": repr(error)})
                        raise
                    record["latencies_ms"]["add"].append((time.perf_counter() - started) * 1000)
                    for edit in batch:
                        record["added"].append([edit.id, namespace, edit.subject, edit.relation])
                        keys = own[namespace]
                        for position, (subject, relation, old) in enumerate(keys):
                            if (subject, relation) == (edit.subject, edit.relation):
                                live_sentence.pop(old, None)
                                keys[position] = (subject, relation, edit.id)
                                break
                        else:
                            keys.append((edit.subject, edit.relation, edit.id))
                        live_sentence[edit.id] = (namespace, edit.sentence)
                elif op == "search":
                    mine = [(i, s) for i, (ns, s) in live_sentence.items() if ns == namespace]
                    check = bool(mine) and rng.random() < 0.5
                    if check:
                        expected, query = rng.choice(mine)
                    else:
                        n = rng.randrange(args.seed_edits)
                        query = fact_question(person(f"s{args.namespace_names.index(namespace)}", n),
                                              PERSON_RELATIONS[n % len(PERSON_RELATIONS)])
                    started = time.perf_counter()
                    top = client.search(namespace, query)
                    record["latencies_ms"]["search"].append((time.perf_counter() - started) * 1000)
                    if check:
                        record["read_your_writes"][0] += 1
                        record["read_your_writes"][1] += int(top == expected)
                else:
                    n = rng.randrange(args.seed_edits) // len(PERSON_RELATIONS) * len(PERSON_RELATIONS)
                    subject = person(f"s{args.namespace_names.index(namespace)}", n)  # n % 4 == 0: citizenship
                    # with the model, half the questions end in a hop no edit covers (the model answers it)
                    second = "head of state" if args.with_llm and rng.random() < 0.5 else rng.choice(COUNTRY_FACTS)
                    question = f"What is the {second} of the country of citizenship of {subject}?"
                    started = time.perf_counter()
                    text, llm_calls = client.ask(namespace, question, subject, second)
                    record["latencies_ms"]["ask"].append((time.perf_counter() - started) * 1000)
                    record["llm_asks"] += int(args.with_llm)
                    record["llm_calls"] += llm_calls
                    if text is not None and second in COUNTRY_FACTS:
                        record["answers_checked"][0] += 1
                        record["answers_checked"][1] += int(text == expected_answer(args, namespace, n, second))
            except Exception:
                record["errors"].append(traceback.format_exc(limit=3))
        record["ran_seconds"] = time.monotonic() - began  # to the end of the last operation, just past the deadline
        client.close()
    except Exception:
        record["errors"].append(traceback.format_exc())
        barrier.abort()  # the others must not wait for a worker that will never arrive
    finally:
        Path(out, f"worker-{index}.json").write_text(json.dumps(record))


# -- the parent --------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 2) if values else None


def check_store(store: Path, embedder: Any, records: list[dict[str, Any]], seeded: list[Edit],
                namespaces: list[str]) -> dict[str, Any]:
    """Everything the workers were promised, against what a fresh opener of the store finds."""
    expected_live: dict[str, dict[tuple[str, str], str]] = {ns: {} for ns in namespaces}
    for edit in seeded:
        expected_live[edit.namespace][(edit.subject, edit.relation)] = edit.id
    added_ids = []
    for record in records:  # keys are per worker, so each worker's own order decides the live edit
        for edit_id, namespace, subject, relation in record["added"]:
            expected_live[namespace][(subject, relation)] = edit_id
            added_ids.append(edit_id)
    connection = sqlite3.connect(store / "edits.sqlite3")
    per_namespace = {}
    with EditMemory(store, embedder=embedder) as memory:
        stored_ids = {row[0] for row in connection.execute("SELECT id FROM edits")}
        for namespace in namespaces:
            rows = connection.execute("SELECT id, rowid FROM edits WHERE namespace=? AND status='live'",
                                      (namespace,)).fetchall()
            live_ids, live_rowids = {r[0] for r in rows}, {int(r[1]) for r in rows}
            want = set(expected_live[namespace].values())
            file_ids = {int(i) for i in VectorIndex.load(store / "index" / f"{namespace}.faiss").ids()}
            loaded_ids = {int(i) for i in memory._index(namespace).ids()}  # what this fresh process serves from
            sample = random.Random(0).sample(sorted(want), min(20, len(want)))
            found = 0
            for edit_id in sample:
                stored = memory.get(edit_id)
                hits = memory.search(stored.sentence, namespace=namespace, limit=1) if stored else []
                found += int(bool(hits) and hits[0].id == edit_id)
            per_namespace[namespace] = {
                "live_in_sqlite": len(live_ids), "expected_live": len(want),
                "lost": len(want - live_ids), "unexpected_live": len(live_ids - want),
                "count_equals_sqlite": memory.count(namespace) == len(live_ids),
                "index_file_equals_sqlite": file_ids == live_rowids,
                "loaded_index_equals_sqlite": loaded_ids == live_rowids,
                "exact_sentence_top1_found": found, "exact_sentence_top1_tried": len(sample),
            }
        integrity = connection.execute("PRAGMA integrity_check").fetchone()[0]
    connection.close()
    missing = [i for i in added_ids if i not in stored_ids]
    ok = (not missing and integrity == "ok" and all(
        v["lost"] == 0 and v["unexpected_live"] == 0 and v["count_equals_sqlite"] and v["index_file_equals_sqlite"]
        and v["loaded_index_equals_sqlite"] and v["exact_sentence_top1_found"] == v["exact_sentence_top1_tried"]
        for v in per_namespace.values()))
    return {"consistent": ok, "added_edits": len(added_ids), "added_edits_missing_from_sqlite": len(missing),
            "sqlite_integrity_check": integrity, "namespaces": per_namespace}


def command() -> str:
    env = [f"{key}={shlex.quote(os.environ[key])}" for key in ("OMP_NUM_THREADS",) if key in os.environ]
    script = Path(sys.argv[0])
    argv = [str(script.resolve().relative_to(REPO_ROOT)) if script.resolve().is_relative_to(REPO_ROOT)
            else sys.argv[0], *sys.argv[1:]]
    python = Path(sys.executable)
    interpreter = str(python.relative_to(REPO_ROOT)) if python.is_relative_to(REPO_ROOT) else str(python)
    return " ".join([*env, interpreter, *(shlex.quote(a) for a in argv)])


def markdown(report: dict[str, Any]) -> str:
    server = report.get("server")
    lines = [
        "# Load benchmark: " + ("HTTP clients against `editagent serve`" if server else
                                "several processes on one edit store"), "",
        f"`{report['command']}` on {report['date']}: {report['workers']} worker processes for "
        f"{report['seconds']} s on one store, namespaces {', '.join(report['namespaces'])}, add batches of "
        f"{report['batch']} ({int(report['update_share'] * 100)}% re-edits), mix {report['mix']}, "
        f"ask = {report['ask']}.", "",
        f"Machine: {report['machine']['cpu_count']} CPUs ({report['machine']['cpu_model']}), load average "
        f"{report['machine']['load_average_at_start'][0]:.1f} at the start and "
        f"{report['machine']['load_average_at_end'][0]:.1f} at the end (shared with other work, so absolute "
        "numbers are pessimistic).", "",
        *([f"Server: `{server['command']}`; {server['auth']}. Key in the server's log: {server['key_in_log']}; "
           f"language model loaded: {server['language_model_loaded']}. Latencies are the client's, HTTP "
           f"included. Answers checked against the seeded edits: {report['totals']['answers_right']} right.", ""]
          if server else []),
        "| operation | count | throughput (ops/s) | p50 ms | p99 ms | max ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for op, row in report["operations"].items():
        lines.append(f"| {op} | {row['count']} | {row['ops_per_second']} | {row['p50_ms']} | {row['p99_ms']} | "
                     f"{row['max_ms']} |")
    totals = report["totals"]
    lines += ["", f"All operations: {totals['ops']} in {report['measured_seconds']} s = "
              f"{totals['ops_per_second']} ops/s; "
              f"{totals['edits_added']} edits added = {totals['edits_per_second']} edits/s. Read-your-writes "
              f"searches (own edit's exact sentence, top hit must be that edit): {totals['read_your_writes']}. "
              f"Errors: {totals['errors']}, failed adds: {totals['failed_adds']}."
              + (f" Asks with the model: {totals['llm_asks']}, making {totals['llm_calls']} LLM calls."
                 if totals["llm_asks"] else ""), "",
              "## Consistency after the run (fresh open of the store)", "",
              f"**{'consistent: nothing lost' if report['check']['consistent'] else 'INCONSISTENT'}**. "
              f"{report['check']['added_edits']} edits added by workers, "
              f"{report['check']['added_edits_missing_from_sqlite']} missing from SQLite; SQLite integrity check: "
              f"{report['check']['sqlite_integrity_check']}.", "",
              "| namespace | live in SQLite | expected live | lost | unexpected live | count = SQLite | "
              "FAISS file = SQLite | loaded index = SQLite | exact-sentence top-1 |",
              "| --- | ---: | ---: | ---: | ---: | --- | --- | --- | ---: |"]
    for namespace, row in report["check"]["namespaces"].items():
        lines.append(f"| {namespace} | {row['live_in_sqlite']} | {row['expected_live']} | {row['lost']} | "
                     f"{row['unexpected_live']} | {row['count_equals_sqlite']} | {row['index_file_equals_sqlite']} | "
                     f"{row['loaded_index_equals_sqlite']} | "
                     f"{row['exact_sentence_top1_found']}/{row['exact_sentence_top1_tried']} |")
    lines += ["", f"Wall time {report['wall_seconds']} s (model loading and the check included).", ""]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--namespaces", type=int, default=3, help="namespaces shared by all workers")
    parser.add_argument("--batch", type=int, default=5, help="edits per add")
    parser.add_argument("--update-share", type=float, default=0.2, help="share of added edits that re-edit a key")
    parser.add_argument("--mix", default="add=0.2,search=0.5,ask=0.3", help="relative weights of the operations")
    parser.add_argument("--seed-edits", type=int, default=200, help="people seeded per namespace before the run")
    parser.add_argument("--with-llm", action="store_true", help="ask with a real EditAgent.ask (SmolLM2; slow)")
    parser.add_argument("--http", action="store_true",
                        help="drive a real `editagent serve` subprocess over HTTP with an API key instead of "
                        "opening the store in each worker; writes http_load.{json,md}")
    parser.add_argument("--ask-method", choices=["agent", "mello", "pokemqa"], default="agent",
                        help="EditAgent method with --with-llm")
    parser.add_argument("--store", type=Path, default=None,
                        help="store folder, kept after the run (default: a fresh temporary one, removed)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--name", help="result files' name (default: load_bench, or http_load with --http)")
    args = parser.parse_args(argv)
    mix = dict(part.split("=") for part in args.mix.split(","))
    if set(mix) - set(OPS) or not mix:
        parser.error(f"--mix: use weights for {', '.join(OPS)}, e.g. add=0.2,search=0.5,ask=0.3")
    args.mix = {op: float(mix.get(op, 0)) for op in OPS}
    if args.http and args.with_llm:
        parser.error("--http asks questions the edits answer; --with-llm is for the in-process run")
    args.namespace_names = [f"tenant-{i}" for i in range(args.namespaces)]
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    wall = time.perf_counter()
    load_at_start = list(os.getloadavg())
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="load_bench-"))
    store = args.store or scratch / "store"

    from editagent.models import load_embedder

    embedder = load_embedder()
    seeded = seed_edits(args.namespace_names, args.seed_edits)
    with EditMemory(store, embedder=embedder) as memory:
        memory.add(seeded, progress=False)
    logger.info("seeded %d edits in %s; starting %d workers", len(seeded), store, args.workers)

    with contextlib.ExitStack() as stack:
        base, key, log = stack.enter_context(http_server(args, store, scratch)) if args.http else ("", "", None)
        run_seconds = run_workers(args, store, scratch, base, key)
    records = [json.loads((scratch / f"worker-{i}.json").read_text()) for i in range(args.workers)]
    server = None
    if log is not None:  # what the server wrote: requests, never the key; the model loaded only if asked for
        text = log.read_text(errors="replace")
        server = {"command": "editagent serve --store STORE --port PORT (uvicorn: one process, worker threads)",
                  "auth": "every request carries a write key (Authorization: Bearer)",
                  "key_in_log": key in text, "language_model_loaded": "loading the language model" in text}
    load_at_end = list(os.getloadavg())
    logger.info("workers done in %.1f s; checking the store", run_seconds)
    check = check_store(store, embedder, records, seeded, args.namespace_names)

    # throughput over the measured window: from the common start to the end of each worker's last operation
    window = float(np.mean([r["ran_seconds"] for r in records if "ran_seconds" in r] or [args.seconds]))
    operations = {}
    for op in OPS:
        values = [v for record in records for v in record["latencies_ms"][op]]
        operations[op] = {"count": len(values), "ops_per_second": round(len(values) / window, 2),
                          "p50_ms": percentile(values, 50), "p95_ms": percentile(values, 95),
                          "p99_ms": percentile(values, 99), "max_ms": round(max(values), 2) if values else None}
    ryw = [sum(r["read_your_writes"][k] for r in records) for k in (0, 1)]
    total_ops = sum(row["count"] for row in operations.values())
    added = sum(len(r["added"]) for r in records)
    errors = [e for r in records for e in r["errors"]]
    report = {
        "command": command(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "workers": args.workers, "seconds": args.seconds, "run_seconds": round(run_seconds, 2),
        "namespaces": args.namespace_names, "batch": args.batch, "update_share": args.update_share,
        "mix": args.mix, "seed_edits_per_namespace": args.seed_edits, "seeded_edits": len(seeded),
        "ask": (f"EditAgent.ask (packaged SmolLM2-135M-Instruct, method {args.ask_method!r}; half the questions "
                "end in a hop no edit covers)" if args.with_llm else
                "POST /{ns}/ask of a two-hop question answered from the seeded edits (the answer is checked)"
                if args.http else
                "retrieval path only: EditMemory.edits(namespace) + EditMemory.top1 for each of two hops"),
        "server": server,
        "operations": operations,
        "measured_seconds": round(window, 2),
        "totals": {"ops": total_ops, "ops_per_second": round(total_ops / window, 2), "edits_added": added,
                   "edits_per_second": round(added / window, 2),
                   "read_your_writes": f"{ryw[1]}/{ryw[0]}", "errors": len(errors),
                   "failed_adds": sum(len(r["failed_adds"]) for r in records),
                   "llm_asks": sum(r["llm_asks"] for r in records),
                   "answers_right": "{1}/{0}".format(*(sum(r["answers_checked"][k] for r in records)
                                                       for k in (0, 1))),
                   "llm_calls": sum(r["llm_calls"] for r in records)},
        "errors_sample": errors[:5],
        "check": check,
        "machine": {"cpu_count": os.cpu_count(), "cpu_model": cpu_model(), "platform": platform.platform(),
                    "python": platform.python_version(), "faiss": faiss.__version__,
                    "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                    "load_average_at_start": load_at_start, "load_average_at_end": load_at_end},
        "wall_seconds": round(time.perf_counter() - wall, 1),
    }
    shutil.rmtree(scratch)  # worker logs and the temporary store; pass --store to keep a store
    name = args.name or ("http_load" if args.http else "load_bench")
    (out / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / f"{name}.md").write_text(markdown(report))
    print(markdown(report))
    healthy = server is None or not (server["key_in_log"] or server["language_model_loaded"])
    return 0 if check["consistent"] and not errors and healthy else 1


def run_workers(args: argparse.Namespace, store: Path, scratch: Path, base: str, key: str) -> float:
    """Start the worker processes, release them together, wait for them; the seconds from release to the end."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(args.workers + 1)
    workers = [context.Process(target=worker, args=(i, args, str(store), str(scratch), barrier, base, key))
               for i in range(args.workers)]
    for process in workers:
        process.start()
    try:
        barrier.wait()  # every worker has loaded its models: the timed run starts now
    except threading.BrokenBarrierError:
        logger.error("a worker failed while loading; see errors in the report")
    started = time.perf_counter()
    for process in workers:
        process.join()
    return time.perf_counter() - started


@contextlib.contextmanager
def http_server(args: argparse.Namespace, store: Path, scratch: Path) -> Iterator[tuple[str, str, Path]]:
    """``editagent serve`` over the store on a free port of 127.0.0.1, with a fresh write key for every namespace;
    warmed up (embedder loaded, each namespace asked once) before the run. Yields (base URL, key, its log)."""
    import httpx

    from editagent.keys import KeyRing

    with KeyRing(store) as ring:
        _, key = ring.create(args.namespace_names, label="load_bench")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    base, log = f"http://127.0.0.1:{port}", scratch / "server.log"
    with log.open("wb") as output:
        server = subprocess.Popen([sys.executable, "-m", "editagent.cli", "serve", "--store", str(store), "--port",
                                   str(port)], stdout=output, stderr=subprocess.STDOUT)
    try:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=300) as client:
            for _ in range(600):
                if server.poll() is not None:
                    raise RuntimeError(f"editagent serve exited: {log.read_text(errors='replace')[-2000:]}")
                try:
                    client.get("/health")
                    break
                except httpx.TransportError:
                    time.sleep(0.5)
            for position, namespace in enumerate(args.namespace_names):  # questions the edits answer
                question = f"What is the capital of the country of citizenship of {person(f's{position}', 0)}?"
                client.get(f"/{namespace}/edits/search", params={"q": question}).raise_for_status()
                client.post(f"/{namespace}/ask", json={"question": question}).raise_for_status()
        logger.info("editagent serve is up at %s", base)
        yield base, key, log
    finally:
        server.terminate()
        server.wait(timeout=60)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    sys.exit(main())
