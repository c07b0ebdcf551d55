"""MQuAKE multi-hop evaluation; see `editagent.eval.runner`. Example:

    python benchmarks/mquake.py --method mello --k all --cases 120 --seed 0
"""

from editagent.eval.bench_mquake import main

if __name__ == "__main__":
    raise SystemExit(main())
