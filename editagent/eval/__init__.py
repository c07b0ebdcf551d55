"""Benchmarks and their data: MQuAKE cases and the answer matching used to score them."""

from editagent.eval.mquake import (
    DatasetUnavailable,
    MQuAKECase,
    MQuAKEFormatError,
    answer_matches,
    load_conflicted_case_ids,
    load_mquake,
    normalise_answer,
)

__all__ = [
    "DatasetUnavailable",
    "MQuAKECase",
    "MQuAKEFormatError",
    "answer_matches",
    "load_conflicted_case_ids",
    "load_mquake",
    "normalise_answer",
]
