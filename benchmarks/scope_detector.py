"""Scope detectors on held-out PokeMQA edits: the trained one (trained once, cached) next to the embedding one.

    OMP_NUM_THREADS=2 python benchmarks/scope_detector.py    # writes benchmarks/results/scope_detector.{json,md}

Rows (``benchmarks/results/scope_detector.json``): ``detector``, ``recall``, ``block_rate``, ``n`` (held-out
questions, each judged twice: with its edits in memory for recall, without them for block rate; see
``editagent.eval.scope``), ``top1``, ``n_edits``, ``threshold``, ``seconds_train``, ``seconds_eval``,
``command``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from editagent.eval.host import command_line
from editagent.eval.scope import evaluate
from editagent.eval.scope_data import resolve_data_path
from editagent.scope.embedding import CALIBRATION, DEFAULT_SCOPE_THRESHOLD, EmbeddingScopeDetector
from editagent.scope.trained import INFO_FILE, scope_cache_root
from editagent.train.scope import TrainConfig, fingerprint, fit_calibration, load_or_train, training_split

logger = logging.getLogger(__name__)


def train_and_evaluate(data: str | Path | None = None, *, cache: str | Path | None = None, retrain: bool = False,
                       config: TrainConfig | None = None, embedding: bool = True,
                       max_test_edits: int | None = None) -> dict[str, Any]:
    """Train or load the trained detector, evaluate it (and the embedding detector) on the held-out edits."""
    config = config or TrainConfig()
    data_path = resolve_data_path(data)
    folder = Path(cache or scope_cache_root()) / fingerprint(data_path, config)
    cached = not retrain and (folder / INFO_FILE).is_file()
    clock = time.perf_counter()
    trained = load_or_train(data_path, config, cache=cache, retrain=retrain, device="cpu")
    seconds_load = round(time.perf_counter() - clock, 1)
    info = trained.info or {}
    seconds_train = info.get("seconds", {}).get("total")
    _, test = training_split(data_path, config)
    test_sha = hashlib.sha256("\n".join(sorted(e.sentence for e in test)).encode()).hexdigest()
    if info.get("test_sha256") not in (None, test_sha):
        raise RuntimeError(f"the cached detector in {folder} was trained with another held-out split; use --retrain")
    if max_test_edits is not None:
        test = test[:max_test_edits]
    rows = []
    if embedding:
        from editagent.models import load_embedder

        embedder = load_embedder(device="cpu")
        for label, threshold in ((f"embedding (calibrated, cosine >= {CALIBRATION.threshold:.3f})", None),
                                 (f"embedding (DEFAULT_SCOPE_THRESHOLD = {DEFAULT_SCOPE_THRESHOLD})",
                                  DEFAULT_SCOPE_THRESHOLD)):
            detector = EmbeddingScopeDetector(embedder, threshold=threshold)
            metrics = evaluate(detector, test, label=label)
            rows.append({**metrics.as_row(), "threshold": round(detector.threshold, 4), "seconds_train": 0.0})
            logger.info("%s: recall %.3f, block rate %.3f (n %d)", label, metrics.recall, metrics.block_rate,
                        metrics.n)
    label = f"trained (bi-encoder top-{trained.top_k} + cross-encoder, p >= {trained.threshold})"
    metrics = evaluate(trained, test, label=label)
    rows.append({**metrics.as_row(), "threshold": trained.threshold, "pre_threshold": trained.pre_threshold,
                 "seconds_train": seconds_train})
    logger.info("%s: recall %.3f, block rate %.3f (n %d)", label, metrics.recall, metrics.block_rate, metrics.n)
    command = command_line()
    for row in rows:
        row["command"] = command
    return {"rows": rows, "cache": str(folder), "loaded_from_cache": cached, "seconds_load": seconds_load,
            "training": info, "data": str(data_path)}


def _markdown(result: dict[str, Any], environment: dict[str, Any]) -> str:
    info = result["training"]
    seconds = info.get("seconds", {})
    how = "loaded the cached detector" if result["loaded_from_cache"] else "trained it"
    lines = [
        "# Scope detectors: embedding vs trained (PokeMQA style), held-out edits",
        "",
        f"Data: `{Path(result['data']).name}` (PokeMQA, {info.get('n_train_edits')} training / "
        f"{info.get('n_test_edits')} held-out edits after merging duplicate sentences; 80/20 split by edit group, "
        f"seed {info.get('config', {}).get('seed')}). Memory = all held-out edits. Recall: the detector returns an "
        "edit in scope of the question, past its threshold. Block rate: the question's edits removed from the memory, "
        "the detector returns nothing. `top1`: the best candidate is in scope, threshold ignored (the paper's "
        "training-script recall).",
        "",
        "| detector | recall | block rate | n | top1 | seconds train | seconds eval |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        lines.append(f"| {row['detector']} | {row['recall']:.3f} | {row['block_rate']:.3f} | {row['n']} | "
                     f"{row['top1']:.3f} | {row['seconds_train'] or 0:.0f} | {row['seconds_eval']:.0f} |")
    lines += [
        "",
        f"Training ({info.get('device')}, {environment['cpus']} CPUs, torch threads {environment['torch_threads']}): "
        f"{seconds.get('total')} s in all; pre-detector {seconds.get('pre_detector')} s on "
        f"{info.get('n_pre_detector_pairs')} pairs, mining {seconds.get('mining')} s, disambiguator "
        f"{seconds.get('disambiguator')} s on {info.get('n_disambiguator_pairs')} pairs; pre-detector threshold "
        f"{info.get('pre_threshold')}. This run {how} ({result['seconds_load']} s). Load average at the end "
        f"{environment['loadavg']} (other jobs share the CPU).",
        "",
        f"Config: `{json.dumps(info.get('config', {}), sort_keys=True)}`",
        "",
        "Command:",
        "",
        "```",
        result["rows"][0]["command"],
        "```",
        "",
    ]
    return "\n".join(lines)


def _environment() -> dict[str, Any]:
    import torch

    return {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "machine": platform.processor() or
            platform.machine(), "loadavg": [round(x, 2) for x in os.getloadavg()],
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds")}


def write_results(result: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    environment = _environment()
    (out / "scope_detector.json").write_text(json.dumps(result["rows"], indent=2) + "\n")
    (out / "scope_detector.md").write_text(_markdown(result, environment))
    details = {k: v for k, v in result.items() if k != "rows"} | {"environment": environment}
    (out / "scope_detector_details.json").write_text(json.dumps(details, indent=2) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="MQuAKE data folder (holding pokemqa/cls-filtered.json) or the file itself; "
                                       "default: found by editagent.eval.data_file ($EDITAGENT_DATA, the cache)")
    parser.add_argument("--cache", help="cache root for trained detectors (default ~/.cache/editagent/scope)")
    parser.add_argument("--retrain", action="store_true", help="train even if a cached detector exists")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--max-test-edits", type=int, help="evaluate on fewer held-out edits (smoke runs)")
    parser.add_argument("--calibrate", action="store_true",
                        help="refit the embedding calibration on the training split and print it, then exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.calibrate:
        from editagent.models import load_embedder

        train, _ = training_split(args.data, TrainConfig())
        calibration = fit_calibration(load_embedder(device="cpu"), train)
        sys.stdout.write(f"{calibration} threshold {calibration.threshold:.3f}\n")
        return 0
    result = train_and_evaluate(args.data, cache=args.cache, retrain=args.retrain, max_test_edits=args.max_test_edits)
    write_results(result, args.out)
    for row in result["rows"]:
        sys.stdout.write(f"{row['detector']}: recall {row['recall']:.3f}  block rate {row['block_rate']:.3f}  "
                         f"n {row['n']}\n")
    sys.stdout.write(f"wrote {args.out / 'scope_detector.json'} and {args.out / 'scope_detector.md'}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
