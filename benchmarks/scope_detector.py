"""Scope detectors on held-out PokeMQA edits: the trained one (trained once, cached) next to the embedding one.
See `editagent.scope.bench`. Example:

    OMP_NUM_THREADS=2 python benchmarks/scope_detector.py    # writes benchmarks/results/scope_detector.{json,md}
"""

from editagent.scope.bench import main

if __name__ == "__main__":
    raise SystemExit(main())
