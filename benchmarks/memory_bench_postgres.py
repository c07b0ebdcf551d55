"""``memory_bench.py --backend postgresql``: the PostgreSQL + pgvector store beside the embedded one, same data.

At each size the same seeded random unit vectors and noisy queries as ``memory_bench.py`` (query cosine 0.7 to its
source) are stored twice: in the embedded store's index (``VectorIndex`` of the kind ``resolve_kind("auto", size)``
picks) and in a fresh PostgreSQL database through ``PostgresEdits.insert`` (the store's write path: one transaction
per batch, advisory locks, the HNSW index kept up to date as rows arrive). Searches go one query at a time with k=1
through each store's search call (``VectorIndex.search``; ``PostgresEdits.search``, rows and all), as the agent
retrieves. Recall@1 is against exact search (FAISS ``IndexFlatIP``). PostgreSQL is timed in every mode: an exact
scan, and the HNSW index at each ``--pg-ef-search``; the row marked ``store's choice`` is what the store does at
that size (an exact scan up to ``EXACT_SCAN_ROWS`` live edits per namespace, HNSW above).

Writes ``<out>/memory_bench_postgres.json`` (with the command) and ``<out>/memory_bench_postgres.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from tqdm.auto import tqdm

from editagent.memory import postgres as pg_module
from editagent.memory.index import VectorIndex, resolve_kind
from editagent.schema import Edit

logger = logging.getLogger("memory_bench.postgres")

INSERT_BATCH = 1000
TARGET_SIZE, TARGET_P50_MS, TARGET_RECALL = 100_000, 10.0, 0.99


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", help="--backend postgresql: a postgresql:// URL whose database may be written "
                        "(each size gets a fresh database made beside it); default: a throwaway pgserver")
    parser.add_argument("--pg-ef-search", type=int, nargs="+", default=[40, 100, 200, 400],
                        help="--backend postgresql: hnsw.ef_search values timed")
    parser.add_argument("--pg-dir", type=Path, help="--backend postgresql: keep the throwaway server's data here "
                        "and search databases an earlier run filled again instead of refilling them (add "
                        "throughput is then not re-measured)")
    parser.add_argument("--pg-data", nargs="+", choices=["random", "sentences"], default=["random", "sentences"],
                        help="--backend postgresql: random unit vectors (memory_bench.py's data), and/or generated "
                        "facts embedded with the packaged MiniLM, searched with their questions")
    parser.add_argument("--pg-m", type=int, default=pg_module.HNSW_M, help="--backend postgresql: HNSW m")
    parser.add_argument("--pg-ef-construction", type=int, default=pg_module.HNSW_EF_CONSTRUCTION,
                        help="--backend postgresql: HNSW ef_construction")


SYLLABLES = ["ka", "lo", "mi", "ra", "ve", "no", "ta", "shi", "do", "ren", "bel", "an", "gu", "si", "mar", "tey",
             "pol", "ia", "zu", "en", "fa", "kor", "li", "ud", "ba", "ne", "sol", "vi", "ho", "ra", "cen", "dra"]
RELATIONS = ["country of citizenship", "employer", "place of birth", "occupation", "spouse", "educated at",
             "native language", "member of sports team", "religion", "place of death"]


def _name(rng: np.random.Generator) -> str:
    return "".join(rng.choice(SYLLABLES, size=int(rng.integers(2, 4)))).capitalize()


def sentence_data(size: int, n_queries: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(stored, queries, sources): ``size`` generated facts ("Kalomi Rentey's employer is Solvi.") embedded with the
    packaged MiniLM, and questions about ``n_queries`` of them ("Who is the employer of Kalomi Rentey?"). Each
    person has up to ten facts with distinct relations, so the nearest other facts share a subject or a relation.
    Embeddings are cached under the editagent cache (embedding 100k sentences takes minutes on a CPU)."""
    from editagent.models import cache_dir, load_embedder
    from editagent.relations import fact_question

    cached = cache_dir() / "bench" / f"pg_sentences_{size}_{n_queries}_{seed}.npz"
    if cached.is_file():
        data = np.load(cached)
        return data["stored"], data["queries"], data["sources"]
    rng = np.random.default_rng([seed, size, 2])
    people = sorted({f"{_name(rng)} {_name(rng)}" for _ in range(size // 5)})
    objects = [_name(rng) for _ in range(500)]
    facts = [(person, relation, objects[int(rng.integers(len(objects)))])
             for person in people for relation in RELATIONS][:size]
    if len(facts) < size:
        raise ValueError(f"--pg-data sentences: only {len(facts)} distinct facts for {size}")
    sources = rng.choice(size, size=n_queries, replace=False).astype(np.int64)
    embedder = load_embedder()
    sentences = [Edit(subject=s, relation=r, object=o).sentence for s, r, o in facts]
    stored = np.concatenate([embedder.encode(sentences[i:i + 2048]) for i in
                             tqdm(range(0, size, 2048), desc=f"embedding {size} facts", mininterval=5)])
    queries = embedder.encode([fact_question(facts[i][0], facts[i][1]) for i in sources])
    cached.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cached, stored=stored.astype(np.float32), queries=queries.astype(np.float32), sources=sources)
    return stored.astype(np.float32), queries.astype(np.float32), sources


def _database(base: str, name: str, size: int, reuse: bool) -> tuple[str, bool]:
    """The URL of database ``name`` beside ``base``, made afresh, or kept when ``reuse`` and it already holds
    ``size`` edits of this benchmark; and whether it was kept."""
    import psycopg

    head, _, tail = base.partition("?")
    url = f"{head.rsplit('/', 1)[0]}/{name}" + (f"?{tail}" if tail else "")
    with psycopg.connect(base, autocommit=True) as connection:
        exists = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    if reuse and exists:
        with psycopg.connect(url) as connection:
            try:
                if connection.execute("SELECT count(*) FROM editagent_edits").fetchone()[0] == size:
                    return url, True
            except psycopg.errors.UndefinedTable:
                pass
    with psycopg.connect(base, autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {name}")
        connection.execute(f"CREATE DATABASE {name}")
    return url, False


def _timed(search: Any, queries: np.ndarray, label: str) -> tuple[np.ndarray, np.ndarray]:
    """(latencies ms, top-1 ids) of one-query searches; a few untimed warm-up queries first."""
    for query in queries[:10]:
        search(query[None, :])
    latencies, top = np.empty(len(queries)), np.empty(len(queries), dtype=np.int64)
    for i in tqdm(range(len(queries)), desc=label, unit="q", mininterval=5):
        start = time.perf_counter_ns()
        top[i] = search(queries[i:i + 1])
        latencies[i] = (time.perf_counter_ns() - start) / 1e6
    return latencies, top


def _row(backend: str, mode: str, latencies: np.ndarray, top: np.ndarray, exact: np.ndarray,
         **extra: Any) -> dict[str, Any]:
    return {"backend": backend, "mode": mode, "p50_ms": round(float(np.percentile(latencies, 50)), 3),
            "p99_ms": round(float(np.percentile(latencies, 99)), 3), "recall_at_1": float(np.mean(top == exact)),
            "n_queries": len(latencies), **extra}


def bench_size(size: int, kind_of_data: str, args: argparse.Namespace, base_url: str, data: Any) -> dict[str, Any]:
    from editagent.memory.postgres import PostgresEdits

    n_queries = min(args.queries, size)
    if kind_of_data == "random":
        random_unit_vectors, noisy_queries, query_cosine = data
        rng = np.random.default_rng([args.seed, size])  # the same data memory_bench.py draws at this size
        vectors = random_unit_vectors(rng, size, args.dim)
        sources = rng.choice(size, size=n_queries, replace=False).astype(np.int64)
        queries = noisy_queries(rng, vectors[sources], query_cosine)
    else:
        vectors, queries, sources = sentence_data(size, n_queries, args.seed)
    flat = faiss.IndexFlatIP(args.dim)
    flat.add(vectors)
    exact = flat.search(queries, 1)[1][:, 0]
    rows = []

    kind = resolve_kind("auto", size)
    index = VectorIndex(args.dim, kind)
    started = time.perf_counter()
    index.add(np.arange(size, dtype=np.int64), vectors)
    build = time.perf_counter() - started
    latencies, top = _timed(lambda q: index.search(q, 1)[1][0, 0], queries, f"embedded {kind} {size}")
    rows.append(_row("embedded", f"{kind} (store's choice)", latencies, top, exact,
                     add_vectors_per_second=round(size / build)))

    name = f"memory_bench_{kind_of_data}_{size}_m{args.pg_m}_efc{args.pg_ef_construction}"
    url, kept = _database(base_url, name, size, reuse=args.pg_dir is not None)
    pg_module.HNSW_M, pg_module.HNSW_EF_CONSTRUCTION = args.pg_m, args.pg_ef_construction
    store = PostgresEdits(url)
    store.set_meta_once("embedding_dim", str(args.dim))
    store.open_edits(args.dim, "auto")
    insert_seconds = None
    if kept:
        logger.info("%s already holds the %d edits (--pg-dir): searching it again, add throughput not re-measured",
                    name, size)
    else:
        edits = [Edit(subject=f"Subject {i}", relation="benchmark relation", object=f"Object {i}", id=f"v{i}")
                 for i in range(size)]
        started = time.perf_counter()
        for begin in tqdm(range(0, size, INSERT_BATCH), desc=f"postgres insert {size}", unit="batch",
                          mininterval=5):
            store.insert(edits[begin:begin + INSERT_BATCH], vectors[begin:begin + INSERT_BATCH])
        insert_seconds = time.perf_counter() - started
        del edits

    def search(query: np.ndarray) -> int:
        found = store.search(query, "default", 1)[0]
        return int(found[0][1].id[1:]) if found else -1

    chosen = "exact scan" if size <= pg_module.EXACT_SCAN_ROWS else f"hnsw ef_search={pg_module.HNSW_EF_SEARCH}"
    store.exact_rows = 2**62
    latencies, top = _timed(search, queries[: min(n_queries, args.exact_queries)], f"postgres exact {size}")
    rows.append(_row("postgresql", "exact scan" + (" (store's choice)" if chosen == "exact scan" else ""),
                     latencies, top, exact[: len(top)]))
    store.exact_rows = -1
    for ef in args.pg_ef_search:
        store.ef_search = ef
        latencies, top = _timed(search, queries, f"postgres hnsw ef={ef} {size}")
        mode = f"hnsw ef_search={ef}"
        rows.append(_row("postgresql", mode + (" (store's choice)" if mode == chosen else ""), latencies, top, exact))
    store.close()
    for r in rows:
        logger.info("%d %s %s: p50 %.2f ms p99 %.2f ms recall@1 %.4f", size, r["backend"], r["mode"], r["p50_ms"],
                    r["p99_ms"], r["recall_at_1"])
    return {"size": size, "data": kind_of_data, "n_queries": n_queries,
            "exact_top1_is_source": float(np.mean(exact == sources)),
            "postgres_insert_seconds": round(insert_seconds, 1) if insert_seconds else None,
            "postgres_add_edits_per_second": round(size / insert_seconds, 1) if insert_seconds else None,
            "hnsw": {"m": args.pg_m, "ef_construction": args.pg_ef_construction}, "rows": rows}


def markdown(report: dict[str, Any]) -> str:
    lines = ["# Edit store search: PostgreSQL + pgvector beside the embedded store", "",
             f"`{report['command']}` on {report['date']}. Data: "
             + "; ".join(f"**{k}**: {v}" for k, v in report["data"].items())
             + ". One query at a time, k=1, through each store's search call; recall@1 against exact search. Machine: "
             f"{report['machine']['cpu_count']} CPUs, load average {report['machine']['load_average_at_start']:.1f} "
             f"at the start (shared with other work). PostgreSQL {report['postgres']}; HNSW m={report['hnsw']['m']}, "
             f"ef_construction={report['hnsw']['ef_construction']}.", ""]
    for entry in report["sizes"]:
        lines += [f"## {entry['size']:,} stored vectors, {entry['data']} data", "",
                  f"Exact search's top hit is the query's own fact for {entry['exact_top1_is_source']:.3f} of queries.",
                  "",
                  (f"PostgreSQL add (`PostgresEdits.insert`, batches of {INSERT_BATCH}, HNSW kept up to date): "
                   f"{entry['postgres_add_edits_per_second']:,} edits/s ({entry['postgres_insert_seconds']} s)."
                   if entry["postgres_add_edits_per_second"] else "PostgreSQL add: not re-measured (the database "
                   "an earlier run filled was searched again)."), "",
                  "| store | search | p50 ms | p99 ms | recall@1 | queries |",
                  "| --- | --- | ---: | ---: | ---: | ---: |"]
        lines += [f"| {r['backend']} | {r['mode']} | {r['p50_ms']} | {r['p99_ms']} | {r['recall_at_1']:.4f} | "
                  f"{r['n_queries']} |" for r in entry["rows"]]
        lines.append("")
    lines += ["## Targets at 100k", "", report["verdict"], ""]
    return "\n".join(lines)


def verdict(report: dict[str, Any]) -> str:
    return " ".join(_verdict(entry) for entry in report["sizes"] if entry["size"] == TARGET_SIZE) or (
        "100k was not measured in this run.")


def _verdict(entry: dict[str, Any]) -> str:
    meeting = [r for r in entry["rows"] if r["backend"] == "postgresql" and r["recall_at_1"] >= TARGET_RECALL
               and r["p50_ms"] < TARGET_P50_MS]
    chosen = next(r for r in entry["rows"] if r["backend"] == "postgresql" and "store's choice" in r["mode"])
    met = chosen in meeting
    return (f"{entry['data'].capitalize()} data: target recall@1 >= {TARGET_RECALL} and p50 < {TARGET_P50_MS} ms. "
            f"The store's choice at 100k "
            f"({chosen['mode']}): recall@1 {chosen['recall_at_1']:.4f}, p50 {chosen['p50_ms']} ms: "
            f"{'met' if met else 'NOT met'}. Settings that meet it here: "
            + (", ".join(r["mode"] for r in meeting) if meeting else "none of those timed") + ".")


def run(args: argparse.Namespace, command: str, data: Any) -> int:
    out = args.out if args.out.is_absolute() else Path.cwd() / args.out
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    server = None
    base = args.store
    if base is None:
        import tempfile

        import pgserver

        folder = args.pg_dir or Path(tempfile.mkdtemp(prefix="memory_bench_pg-"))
        folder.mkdir(parents=True, exist_ok=True)
        server = pgserver.get_server(folder, cleanup_mode="stop")
        base = server.get_uri()
    import psycopg

    with psycopg.connect(base) as connection:
        version = connection.execute("SHOW server_version").fetchone()[0]
        vector = connection.execute("SELECT default_version FROM pg_available_extensions WHERE name = 'vector'"
                                    ).fetchone()
    report: dict[str, Any] = {
        "command": command, "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "postgres": f"{version}, pgvector {vector[0] if vector else '?'}" + (" (pgserver)" if server else ""),
        "data": {"random": (f"seeded random unit vectors (dim {args.dim}); each query a stored vector mixed with "
                            f"noise to cosine {data[2]} (the data of memory_bench.py)"),
                 "sentences": ("generated facts (made-up people, ten relations each) embedded with the packaged "
                               "all-MiniLM-L6-v2; each query the embedded question about one stored fact")},
        "hnsw": {"m": args.pg_m, "ef_construction": args.pg_ef_construction},
        "exact_scan_rows": pg_module.EXACT_SCAN_ROWS, "store_ef_search": pg_module.HNSW_EF_SEARCH,
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "load_average_at_start": os.getloadavg()[0]},
        "sizes": [],
    }
    try:
        for kind_of_data in args.pg_data:
            for size in args.sizes:
                report["sizes"].append(bench_size(size, kind_of_data, args, base, data))
            report["verdict"] = verdict(report)
            (out / "memory_bench_postgres.json").write_text(json.dumps(report, indent=2) + "\n")
    finally:
        if server is not None:
            server.cleanup()
    report["wall_seconds"] = round(time.perf_counter() - started, 1)
    report["machine"]["load_average_at_end"] = os.getloadavg()[0]
    (out / "memory_bench_postgres.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "memory_bench_postgres.md").write_text(markdown(report))
    print(markdown(report))
    return 0
