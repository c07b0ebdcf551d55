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
import random
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter, defaultdict
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

from editagent.eval import host  # noqa: E402
from editagent.memory import EditMemory, VectorIndex, is_postgres_url  # noqa: E402
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
    """The same operations through running ``editagent serve`` processes, with an API key, on one kept-alive
    connection to each; consecutive requests go to the next host, so a read often lands on another host than
    the write it checks."""

    def __init__(self, bases: list[str], key: str) -> None:
        import httpx

        self.clients = [httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=120)
                        for base in bases]
        self.turn = 0

    @property
    def http(self) -> Any:
        self.turn += 1
        return self.clients[self.turn % len(self.clients)]

    def _ok(self, reply: Any) -> Any:
        if reply.status_code >= 300:
            raise RuntimeError(f"HTTP {reply.status_code}: {reply.text[:300]}")
        return reply.json()

    def add(self, namespace: str, batch: list[Edit]) -> None:
        body = [edit.model_dump(mode="json", include={"id", "subject", "relation", "object", "source"})
                for edit in batch]
        self._ok(self.http.post(f"/{namespace}/edits", json=body))

    def search(self, namespace: str, query: str) -> str | None:
        hits = self._ok(self.http.get(f"/{namespace}/edits/search", params={"query": query, "limit": 5}))["hits"]
        return hits[0]["id"] if hits else None

    def ask(self, namespace: str, question: str, subject: str, second: str) -> tuple[str | None, int]:
        answer = self._ok(self.http.post(f"/{namespace}/ask", json={"question": question}))
        return answer["text"], answer["llm_calls"]

    def close(self) -> None:
        for client in self.clients:
            client.close()


def worker(index: int, args: argparse.Namespace, store: str, out: str, barrier: Any, bases: list[str] | None = None,
           key: str = "") -> None:
    """One process: load models (or connect), wait for the others, then run the mix until the shared deadline."""
    record: dict[str, Any] = {"worker": index, "latencies_ms": {op: [] for op in OPS}, "added": [],
                              "failed_adds": [], "errors": [], "read_your_writes": [0, 0], "llm_asks": 0,
                              "llm_calls": 0, "answers_checked": [0, 0]}
    try:
        rng = random.Random(args.seed * 1000 + index)
        client: Any = HttpClient(bases or [], key) if args.http else MemoryClient(args, store)
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


def check_store(store: str | Path, embedder: Any, records: list[dict[str, Any]], seeded: list[Edit],
                namespaces: list[str]) -> dict[str, Any]:
    """Everything the workers were promised, against what a fresh opener of the store finds (either backend)."""
    expected_live: dict[str, dict[tuple[str, str], str]] = {ns: {} for ns in namespaces}
    for edit in seeded:
        expected_live[edit.namespace][(edit.subject, edit.relation)] = edit.id
    added_ids = []
    for record in records:  # keys are per worker, so each worker's own order decides the live edit
        for edit_id, namespace, subject, relation in record["added"]:
            expected_live[namespace][(subject, relation)] = edit_id
            added_ids.append(edit_id)
    embedded = not is_postgres_url(store)
    per_namespace = {}
    with EditMemory(store, embedder=embedder) as memory:
        stored_ids = {row.id for row in memory.edits(None, include_history=True)}
        for namespace in namespaces:
            live_rows = memory.edits(namespace)
            live_ids = {row.id for row in live_rows}
            facts = Counter((row.subject.casefold(), row.relation.casefold()) for row in live_rows)
            want = set(expected_live[namespace].values())
            sample = random.Random(0).sample(sorted(want), min(20, len(want)))
            found = 0
            for edit_id in sample:
                stored = memory.get(edit_id)
                hits = memory.search(stored.sentence, namespace=namespace, limit=1) if stored else []
                found += int(bool(hits) and hits[0].id == edit_id)
            per_namespace[namespace] = {
                "live": len(live_ids), "expected_live": len(want),
                "lost": len(want - live_ids), "unexpected_live": len(live_ids - want),
                "duplicate_live_facts": sum(n - 1 for n in facts.values()),
                "count_equals_live_rows": memory.count(namespace) == len(live_ids),
                "exact_sentence_top1_found": found, "exact_sentence_top1_tried": len(sample),
            }
            if embedded:  # the FAISS file and a freshly loaded index hold exactly SQLite's live rowids
                rowids = {int(i) for i in memory.backend.sql.live_rowids(namespace)}
                file_ids = {int(i) for i in VectorIndex.load(Path(store) / "index" / f"{namespace}.faiss").ids()}
                loaded_ids = {int(i) for i in memory.backend._index(namespace).ids()}
                per_namespace[namespace] |= {"index_file_equals_sqlite": file_ids == rowids,
                                             "loaded_index_equals_sqlite": loaded_ids == rowids}
    integrity = "not applicable (PostgreSQL)"
    if embedded:
        connection = sqlite3.connect(Path(store) / "edits.sqlite3")
        integrity = connection.execute("PRAGMA integrity_check").fetchone()[0]
        connection.close()
    missing = [i for i in added_ids if i not in stored_ids]
    ok = (not missing and integrity in ("ok", "not applicable (PostgreSQL)") and all(
        v["lost"] == 0 and v["unexpected_live"] == 0 and v["duplicate_live_facts"] == 0 and v["count_equals_live_rows"]
        and v.get("index_file_equals_sqlite", True) and v.get("loaded_index_equals_sqlite", True)
        and v["exact_sentence_top1_found"] == v["exact_sentence_top1_tried"] for v in per_namespace.values()))
    return {"consistent": ok, "added_edits": len(added_ids), "added_edits_missing_from_store": len(missing),
            "sqlite_integrity_check": integrity, "namespaces": per_namespace}


def markdown(report: dict[str, Any]) -> str:
    server = report.get("server")
    lines = [
        "# Load benchmark: " + ("HTTP clients against `editagent serve`" if server else
                                "several processes on one edit store"), "",
        f"`{report['command']}` on {report['date']}: {report['workers']} worker processes for "
        f"{report['seconds']} s on one store ({report.get('backend', 'embedded')}), namespaces "
        f"{', '.join(report['namespaces'])}, add batches of "
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
              f"{report['check']['added_edits_missing_from_store']} missing from the store; SQLite integrity check: "
              f"{report['check']['sqlite_integrity_check']}.", "",
              "| namespace | live | expected live | lost | unexpected live | duplicate live facts | "
              "count = live rows | FAISS file = SQLite | loaded index = SQLite | exact-sentence top-1 |",
              "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- | --- | ---: |"]
    for namespace, row in report["check"]["namespaces"].items():
        lines.append(f"| {namespace} | {row['live']} | {row['expected_live']} | {row['lost']} | "
                     f"{row['unexpected_live']} | {row['duplicate_live_facts']} | {row['count_equals_live_rows']} | "
                     f"{row.get('index_file_equals_sqlite', 'n/a')} | {row.get('loaded_index_equals_sqlite', 'n/a')} | "
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
    parser.add_argument("--store", default=None,
                        help="store folder (kept after the run) or postgresql:// URL (default: a fresh temporary "
                        "folder, removed)")
    parser.add_argument("--pgserver", action="store_true",
                        help="the store: a throwaway PostgreSQL with pgvector started for the run (pip install "
                        "pgserver), as --store postgresql://... would name one")
    parser.add_argument("--hosts", type=int, default=1,
                        help="with --http: `editagent serve` processes on the one store (each client spreads its "
                        "requests over all of them); more than one needs a PostgreSQL store")
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
    if args.hosts > 1 and not (args.http and (args.pgserver or is_postgres_url(args.store))):
        parser.error("--hosts > 1: needs --http and a PostgreSQL store (--store postgresql://... or --pgserver)")
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
    stack = contextlib.ExitStack()
    store: str | Path = scratch / "store" if args.store is None else (
        args.store if is_postgres_url(args.store) else Path(args.store))
    if args.pgserver:
        import pgserver

        server_process = pgserver.get_server(scratch / "pg", cleanup_mode="stop")
        stack.callback(server_process.cleanup)
        store = server_process.get_uri()

    from editagent.models import load_embedder

    embedder = load_embedder()
    seeded = seed_edits(args.namespace_names, args.seed_edits)
    with EditMemory(store, embedder=embedder) as memory:
        memory.add(seeded, progress=False)
    logger.info("seeded %d edits in %s; starting %d workers", len(seeded), store, args.workers)

    with stack:
        with contextlib.ExitStack() as hosts:
            bases, key, logs = hosts.enter_context(http_server(args, store, scratch)) if args.http else ([], "", [])
            run_seconds = run_workers(args, store, scratch, bases, key)
        records, server, load_at_end, check = finish(args, store, scratch, embedder, seeded, key, logs, run_seconds)
    report_and_save(args, out, records, server, load_at_start, load_at_end, check, run_seconds, seeded, wall, store)
    shutil.rmtree(scratch, ignore_errors=True)  # worker logs and the temporary store; pass --store to keep a store
    return 0 if check["consistent"] and not any(r["errors"] for r in records) and (
        server is None or not (server["key_in_log"] or server["language_model_loaded"])) else 1


def finish(args: argparse.Namespace, store: str | Path, scratch: Path, embedder: Any, seeded: list[Edit], key: str,
           logs: list[Path], run_seconds: float) -> tuple[list[dict[str, Any]], Any, list[float], dict[str, Any]]:
    records = [json.loads((scratch / f"worker-{i}.json").read_text()) for i in range(args.workers)]
    server = None
    if logs:  # what the servers wrote: requests, never the key; the model loaded only if asked for
        text = "".join(log.read_text(errors="replace") for log in logs)
        server = {"command": f"editagent serve --store STORE --port PORT, {len(logs)} process(es) (uvicorn: "
                             "worker threads)",
                  "auth": "every request carries a write key (Authorization: Bearer)",
                  "key_in_log": key in text, "language_model_loaded": "loading the language model" in text}
    load_at_end = list(os.getloadavg())
    logger.info("workers done in %.1f s; checking the store", run_seconds)
    check = check_store(store, embedder, records, seeded, args.namespace_names)
    return records, server, load_at_end, check


def report_and_save(args: argparse.Namespace, out: Path, records: list[dict[str, Any]], server: Any,
                    load_at_start: list[float], load_at_end: list[float], check: dict[str, Any], run_seconds: float,
                    seeded: list[Edit], wall: float, store: str | Path) -> None:
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
        "command": host.command_line(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "backend": "PostgreSQL + pgvector" if is_postgres_url(store) else "embedded (SQLite + FAISS)",
        "hosts": args.hosts if args.http else None,
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
        "machine": host.machine(faiss=faiss.__version__, omp_num_threads=os.environ.get("OMP_NUM_THREADS"),
                                load_average_at_start=load_at_start, load_average_at_end=load_at_end),
        "wall_seconds": round(time.perf_counter() - wall, 1),
    }
    name = args.name or ("http_load" if args.http else "load_bench")
    (out / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / f"{name}.md").write_text(markdown(report))
    print(markdown(report))


def run_workers(args: argparse.Namespace, store: str | Path, scratch: Path, bases: list[str], key: str) -> float:
    """Start the worker processes, release them together, wait for them; the seconds from release to the end."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(args.workers + 1)
    workers = [context.Process(target=worker, args=(i, args, str(store), str(scratch), barrier, bases, key))
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
def http_server(args: argparse.Namespace, store: str | Path, scratch: Path) -> Iterator[tuple[list[str], str,
                                                                                            list[Path]]]:
    """``args.hosts`` ``editagent serve`` processes over the store on free ports of 127.0.0.1, with a fresh write
    key for every namespace; each warmed up (embedder loaded, each namespace asked once) before the run. Yields
    (base URLs, key, their logs)."""
    import httpx

    from editagent.keys import KeyRing

    with KeyRing(store) as ring:
        _, key = ring.create(args.namespace_names, label="load_bench")
    servers, bases, logs = [], [], []
    try:
        for host in range(args.hosts):
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
            bases.append(f"http://127.0.0.1:{port}")
            logs.append(scratch / f"server{host}.log")
            with logs[-1].open("wb") as output:
                servers.append(subprocess.Popen([sys.executable, "-m", "editagent.cli", "serve", "--store", str(store),
                                                 "--port", str(port)], stdout=output, stderr=subprocess.STDOUT))
        for server, base, log in zip(servers, bases, logs, strict=True):
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
                    client.get(f"/{namespace}/edits/search", params={"query": question}).raise_for_status()
                    client.post(f"/{namespace}/ask", json={"question": question}).raise_for_status()
            logger.info("editagent serve is up at %s", base)
        yield bases, key, logs
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=60)


if __name__ == "__main__":
    sys.exit(main())
