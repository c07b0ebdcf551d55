"""Scope detectors: the split, the embedding detector on the real MiniLM, a tiny trained detector and its cache,
and both as the ``ScopeDetector`` callable over a real ``EditMemory``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from editagent.eval.scope_data import ScopeEdit, in_scope_sets, load_scope_edits, parse_edit, split_by_edit
from editagent.memory import EditMemory
from editagent.schema import Edit, EditError, SearchHit
from editagent.scope import CALIBRATION, EmbeddingScopeDetector, TrainedScopeDetector, scope_model, threshold_scope
from editagent.scope.trained import load_trained, pointer_path
from editagent.train import scope as trained_module
from editagent.train.scope import TrainConfig, fingerprint, load_or_train

SAGAN = "Carl Sagan is employed by British Broadcasting Corporation"
UNRELATED = "What is the boiling point of water at sea level?"
# Small enough to train in seconds on a busy 2-core CPU; it proves the plumbing, not the quality.
TINY = TrainConfig(max_train_edits=10, bi_batch_size=8, cross_edits=4, max_seq_length=32)


@pytest.fixture(scope="module")
def data_file(mquake_dir: Path) -> Path:
    path = mquake_dir / "pokemqa" / "cls-filtered.json"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


@pytest.fixture(scope="module")
def tiny_detector(data_file: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainedScopeDetector, Path]:
    cache = tmp_path_factory.mktemp("scope-cache")
    return load_or_train(data_file, TINY, cache=cache, device="cpu"), cache


def test_parse_edit_reads_subject_and_relation_including_mquake_spellings() -> None:
    assert parse_edit(SAGAN) == ("Carl Sagan", "{s} is employed by {o}")
    assert parse_edit("Denmark is located in the continent of South America") == (
        "Denmark", "{s} is located in the continent of {o}")  # the specific template wins over "is located in"
    assert parse_edit("The univeristy where Pete Seeger was educated is Jesus College")[0] == "Pete Seeger"
    assert parse_edit("no template fits this") is None


def test_split_is_by_edit_group_seeded_and_80_20(data_file: Path) -> None:
    edits = load_scope_edits(data_file)
    assert len({e.sentence for e in edits}) == len(edits) == 4934  # 6,688 entries merged by sentence
    split = split_by_edit(edits, 0.2, seed=0)
    train_sentences, test_sentences = {e.sentence for e in split.train}, {e.sentence for e in split.test}
    assert not train_sentences & test_sentences
    assert len(train_sentences) + len(test_sentences) == len(edits)
    assert abs(len(split.test) / len(edits) - 0.2) < 0.01
    # nothing that makes an edit in scope of a question crosses the split
    assert not {q for e in split.train for q in e.questions} & {q for e in split.test for q in e.questions}
    assert not {e.key for e in split.train if e.key} & {e.key for e in split.test if e.key}
    assert [e.sentence for e in split_by_edit(edits, 0.2, seed=0).test] == [e.sentence for e in split.test]
    assert {e.sentence for e in split_by_edit(edits, 0.2, seed=1).test} != test_sentences


def test_in_scope_sets_count_other_edits_on_the_same_subject_and_relation() -> None:
    edits = [ScopeEdit(SAGAN, ("Who employs Carl Sagan?",), "Carl Sagan", "{s} is employed by {o}"),
             ScopeEdit("Carl Sagan is employed by NASA", ("Where does Carl Sagan work?",), "Carl Sagan",
                       "{s} is employed by {o}"),
             ScopeEdit("Carl Sagan is a citizen of Peru", ("Who employs Carl Sagan?",), "Carl Sagan",
                       "{s} is a citizen of {o}")]
    questions, gold, owners = in_scope_sets(edits)
    assert questions == ["Who employs Carl Sagan?", "Where does Carl Sagan work?", "Who employs Carl Sagan?"]
    assert gold[0] == {0, 1, 2} and gold[1] == {0, 1} and owners == [0, 1, 2]


def test_embedding_detector_accepts_a_match_and_blocks_an_unrelated_question(embedder: Any) -> None:
    detector = EmbeddingScopeDetector(embedder)
    assert detector.threshold == pytest.approx(CALIBRATION.threshold)
    sentences = [SAGAN, "The capital of France is Lyon", "The author of Paradiso is Jean Giraudoux"]
    match, other, _ = detector.in_scope("Who is the employer of Carl Sagan?", sentences)
    assert match >= 0.5 > other
    verdicts = detector.judge(["Which organization employs Carl Sagan?", UNRELATED], sentences)
    assert verdicts[0].index == 0
    assert verdicts[1].index is None and verdicts[1].best is not None and verdicts[1].probability < 0.5
    # the same question with its edit excluded: nothing applies
    assert detector.judge(["Which organization employs Carl Sagan?"], sentences, exclude=[frozenset({0})])[0].index \
        is None


def test_embedding_detector_over_a_real_edit_memory(tmp_path: Path, embedder: Any) -> None:
    with EditMemory(tmp_path / "store", embedder=embedder) as memory:
        memory.add([Edit(subject="Carl Sagan", relation="employer", object="British Broadcasting Corporation"),
                    Edit(subject="Paradiso", relation="author", object="Jean Giraudoux")])
        scope = EmbeddingScopeDetector(embedder).over(memory)
        hits = scope(["Who is the employer of Carl Sagan?", UNRELATED, "Who wrote Paradiso?"],
                     ["default", "default", "empty"])
        assert isinstance(hits[0], SearchHit) and hits[0].edit.subject == "Carl Sagan"
        assert hits[1] is None  # unrelated: blocked
        assert hits[2] is None  # an empty namespace has nothing in scope
        # the plain callable PokeMQA has always taken agrees at the same threshold
        plain = threshold_scope(memory.top1, CALIBRATION.threshold)(["Who is the employer of Carl Sagan?"],
                                                                    ["default"])
        assert plain[0] is not None and plain[0].id == hits[0].id


def test_trained_detector_is_cached_and_loads_without_training(
        tiny_detector: tuple[TrainedScopeDetector, Path], data_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    detector, cache = tiny_detector
    folder = cache / fingerprint(data_file, TINY)
    assert (folder / "detector.json").is_file() and (folder / "bi-encoder").is_dir()
    assert (folder / "cross-encoder").is_dir() and not list(cache.glob("*.partial"))
    info = detector.info or {}
    assert info["n_train_edits"] == 10 and info["n_test_edits"] == 987 and info["n_disambiguator_pairs"] > 0
    assert fingerprint(data_file, TINY.model_copy(update={"seed": 1})) != folder.name

    def refuse(*_: Any, **__: Any) -> None:
        raise AssertionError("a cached detector must not be trained again")

    monkeypatch.setattr(trained_module, "train_detector", refuse)
    again = load_or_train(data_file, TINY, cache=cache, device="cpu")
    pair = [("Who is the employer of Carl Sagan?", SAGAN)]
    assert again.pre_threshold == detector.pre_threshold
    assert again.probabilities(pair) == pytest.approx(detector.probabilities(pair), abs=1e-5)


def test_the_runtime_finds_the_trained_detector_by_its_pointer_without_the_data(
        tiny_detector: tuple[TrainedScopeDetector, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    detector, cache = tiny_detector
    assert pointer_path(TINY.base_model, cache).is_file()

    def refuse(*_: Any, **__: Any) -> None:
        raise AssertionError("the runtime must not read or hash the training data")

    monkeypatch.setattr(trained_module, "resolve_data_path", refuse)
    monkeypatch.setattr(trained_module, "fingerprint", refuse)
    found = load_trained(TINY.base_model, cache=cache, device="cpu")
    assert found is not None and found.info == detector.info
    pair = [("Who is the employer of Carl Sagan?", SAGAN)]
    assert found.probabilities(pair) == pytest.approx(detector.probabilities(pair), abs=1e-5)
    assert load_trained(TINY.base_model, cache=tmp_path / "empty") is None
    monkeypatch.setenv("EDITAGENT_CACHE", str(tmp_path / "empty"))
    with pytest.raises(EditError, match="train it once with `editagent scope train`"):
        scope_model("trained")


def test_trained_detector_scores_pairs_and_works_over_a_real_edit_memory(
        tiny_detector: tuple[TrainedScopeDetector, Path], tmp_path: Path, embedder: Any) -> None:
    detector, _ = tiny_detector
    probabilities = detector.in_scope("Who is the employer of Carl Sagan?", [SAGAN, "The capital of France is Lyon"])
    assert len(probabilities) == 2 and 0.0 <= probabilities[0] <= 1.0
    assert probabilities[1] == 0.0  # the pre-detector filters an unrelated edit before the disambiguator
    with EditMemory(tmp_path / "store", embedder=embedder) as memory:
        memory.add(Edit(subject="Carl Sagan", relation="employer", object="British Broadcasting Corporation"))
        scope = detector.over(memory)
        hits = scope(["Who is the employer of Carl Sagan?", UNRELATED], ["default", "default"])
        assert len(hits) == 2 and hits[1] is None
        expected = detector.judge(["Who is the employer of Carl Sagan?"], [memory.edits()[0].sentence])[0]
        assert (hits[0] is not None) == (expected.index is not None)
        if hits[0] is not None:
            assert hits[0].score == pytest.approx(expected.probability)
        # a new edit is encoded and judged on the next call, like the rest
        memory.add(Edit(subject="Paradiso", relation="author", object="Jean Giraudoux"))
        live = memory.edits()
        expected = detector.judge(["Who wrote Paradiso?"], [edit.sentence for edit in live])[0]
        hit = scope(["Who wrote Paradiso?"], ["default"])[0]
        assert (hit.id if hit else None) == (live[expected.index].id if expected.index is not None else None)
