"""Benchmarks and their data: where data is found (``data_file``), MQuAKE cases and the answer matching used to score
them."""

from editagent.eval.data import CONFLICTED, MQUAKE_DEV, SCOPE_PAIRS, DataUnavailable, data_file
from editagent.eval.mquake import (
    DatasetUnavailable,
    MQuAKECase,
    MQuAKEFormatError,
    answer_matches,
    conflicted_case_ids,
    load_conflicted_case_ids,
    load_mquake,
    normalise_answer,
)

__all__ = [
    "CONFLICTED",
    "MQUAKE_DEV",
    "SCOPE_PAIRS",
    "DataUnavailable",
    "DatasetUnavailable",
    "MQuAKECase",
    "MQuAKEFormatError",
    "answer_matches",
    "conflicted_case_ids",
    "data_file",
    "load_conflicted_case_ids",
    "load_mquake",
    "normalise_answer",
]
