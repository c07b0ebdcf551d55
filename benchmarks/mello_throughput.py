"""Throughput of the batched, prefix-cached MeLLo against a sequential reference loop, in one process.

Issue: "Throughput: questions per minute of the batched, prefix-cached MeLLo versus the sequential reference loop
on the same model, cases and CPU, measured in one run: at least 5x (aim for 10x), with identical answers on the
compared cases."

The two sides answer the same questions with the same model object, the same edit memory and the same retriever:

* **sequential** (the reference, kept here only for comparison): the MQuAKE notebook's cost model. One question at a
  time; at every step the full prompt string (few-shot prompt + question + everything so far) is tokenised and handed
  to Hugging Face ``model.generate(do_sample=False, max_new_tokens=...)`` stopped at MeLLo's ``STOP`` strings by
  ``StopStringCriteria``, so the ~820-token few-shot prompt is recomputed on every call and nothing is cached
  across calls.
* **batched**: ``MeLLo(TransformersLLM(model, tokenizer, batch_size=B), memory.top1, guided=False)
  .answer_many(all questions, their namespaces)``: every question advances together, one batched generation per
  round, over the few-shot prefix's KV cache computed once and held once per batch, and each question's keys and
  values from the previous round reused, so a round computes only the line the loop appended (MeLLo's default).

How the sequential loop is written, and why: it must differ from the batched one in cost only, never in parsing.
So ``sequential_mello`` drives the same ``editagent.decompose.MeLLo`` in its ``guided=False`` mode (the paper's
loop: free-text verdicts, no scoring) with ``NotebookLLM``, an adapter defined here whose ``generate`` takes the
prompts one at a time, ignores ``prefix`` and calls ``model.generate`` on each full prompt; ``answer_many`` is
called with ONE question, so there is no batching across questions either. The prompt building, the cut at the
first stop string, the parsing of "Subquestion:" / "Generated answer:" / verdict / "Final answer:" lines, the
retrieval (``retrieve([subquestion], [namespace])``) and the appended ``"Retrieved fact: ...\\n"`` line are then
MeLLo's own, character for character. ``same_answers`` compares every question's final text and its whole raw
transcript (``Answer.raw``) between the two sides.

Data: MQuAKE-CF-3k dev cases, ``--cases`` of them chosen by ``select_cases`` (balanced over 2/3/4 hops), the first
phrasing of each, k=1 (each case's edits alone in its own namespace of one ``EditMemory`` in a temporary folder).

Run from the repository root::

    python benchmarks/mello_throughput.py --batch-size 24 --sweep 8,16   # the recorded run: ~10 minutes, 2 cores
    python benchmarks/mello_throughput.py --cases 3                      # smoke test

``--batch-size`` is the LLM's batch size on the batched side (24 = every question of a round in one batch);
``--sweep`` times the batched side again at other batch sizes against the same sequential run.

Writes ``<out>/mello_throughput.json`` and ``<out>/mello_throughput.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch
import transformers
from tqdm.auto import tqdm

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from editagent.decompose import MeLLo, Retriever, mello_prompt  # noqa: E402
from editagent.decompose.mello import STOP  # noqa: E402
from editagent.eval import MQUAKE_DEV, data_file, host  # noqa: E402
from editagent.eval.mquake import load_mquake  # noqa: E402
from editagent.eval.runner import select_cases  # noqa: E402
from editagent.llm import TransformersLLM, cut_at_stop  # noqa: E402
from editagent.memory import EditMemory  # noqa: E402
from editagent.models import load_causal_lm, load_embedder  # noqa: E402
from editagent.schema import Answer  # noqa: E402

logger = logging.getLogger("mello_throughput")

TARGET_SPEEDUP = 5.0
AIM_SPEEDUP = 10.0


# -- the sequential reference ---------------------------------------------------------------------


class NotebookLLM:
    """The notebook's cost model behind MeLLo's ``LLM`` interface: one full prompt per ``model.generate`` call.

    ``prefix`` is ignored and nothing is kept between calls: every call tokenises and recomputes the whole prompt.
    Greedy decoding stopped by Hugging Face's own ``StopStringCriteria``; the output is cut before the first stop
    string, as every backend's is. Only ``generate`` exists: MeLLo's ``guided=False`` loop never scores.

    The criteria object is built once per set of stop strings and passed as ``stopping_criteria``: it is exactly
    what ``generate(stop_strings=..., tokenizer=...)`` builds, but that path rebuilds it on every call (~0.6 s of
    vocabulary processing here), a cost of the library rather than of the loop, kept out of the reference.
    """

    def __init__(self, model: Any, tokenizer: Any, name: str = "custom") -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.calls = 0
        self.call_seconds: list[float] = []
        self._criteria: dict[tuple[str, ...], Any] = {}
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token

    def stopping(self, stop: Sequence[str]) -> Any:
        """``StoppingCriteriaList([StopStringCriteria(tokenizer, stop)])``, built once per ``stop`` (None: none)."""
        key = tuple(s for s in stop if s)
        if not key:
            return None
        if key not in self._criteria:
            self._criteria[key] = transformers.StoppingCriteriaList(
                [transformers.StopStringCriteria(self.tokenizer, list(key))])
        return self._criteria[key]

    @torch.inference_mode()
    def generate(self, prompts: Sequence[str], *, stop: Sequence[str] = (), max_new_tokens: int = 64,
                 prefix: str | None = None) -> list[str]:
        del prefix  # the notebook recomputes the whole prompt every time
        return [self._generate_one(prompt, stop, max_new_tokens) for prompt in prompts]

    def _generate_one(self, prompt: str, stop: Sequence[str], max_new_tokens: int) -> str:
        started = time.perf_counter()
        self.calls += 1
        device = next(self.model.parameters()).device
        encoded = self.tokenizer(prompt, return_tensors="pt").to(device)
        output = self.model.generate(**encoded, do_sample=False, max_new_tokens=max_new_tokens,
                                     stopping_criteria=self.stopping(stop), pad_token_id=self.tokenizer.pad_token_id)
        new_tokens = output[0, encoded["input_ids"].shape[1]:]
        text, _ = cut_at_stop(self.tokenizer.decode(new_tokens, skip_special_tokens=True), stop)
        self.call_seconds.append(time.perf_counter() - started)
        return text

    def score(self, prompt: str, continuations: Sequence[str], *, prefix: str | None = None) -> list[float]:
        raise NotImplementedError("the paper's MeLLo loop (guided=False) never scores")

    def score_many(self, pairs: Sequence[tuple[str, str]], *, prefix: str | None = None) -> list[float]:
        raise NotImplementedError("the paper's MeLLo loop (guided=False) never scores")


def sequential_mello(model: Any, tokenizer: Any, retrieve: Retriever, question: str, namespace: str,
                     prompt: str | None = None, max_hops: int = 4, max_new_tokens: int = 96,
                     llm: NotebookLLM | None = None) -> Answer:
    """The paper notebook's loop for ONE question: a full-prompt ``model.generate`` per step, no KV reuse.

    Each step MeLLo builds ``few-shot prompt + "Question: ..." + everything so far``; ``NotebookLLM`` tokenises it
    and runs ``model.generate`` on it from scratch; the output is cut at the first stop string and parsed by MeLLo
    (``guided=False``), which retrieves ``retrieve([subquestion], [namespace])`` and appends
    ``"Retrieved fact: ...\\n"``. Pass ``llm`` to collect call timings across questions.
    """
    llm = llm or NotebookLLM(model, tokenizer)
    reasoner = MeLLo(llm, retrieve, max_hops=max_hops, max_new_tokens=max_new_tokens,
                     prompt=prompt if prompt is not None else mello_prompt(), guided=False)
    return reasoner.answer_many([question], [namespace])[0]


# -- the batched side -----------------------------------------------------------------------------


class TimedTransformersLLM(TransformersLLM):
    """``TransformersLLM`` unchanged, recording the size and wall time of every ``generate`` round."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rounds: list[dict[str, Any]] = []

    def generate(self, prompts: Sequence[str], **kwargs: Any) -> list[str]:
        started = time.perf_counter()
        out = super().generate(prompts, **kwargs)
        self.rounds.append({"prompts": len(prompts), "seconds": round(time.perf_counter() - started, 3)})
        return out


# -- measuring ------------------------------------------------------------------------------------


def warm_up(model: Any, tokenizer: Any) -> None:
    """One short call through each path, untimed: first-call costs (kernels, stop-string tables) are not the loop's."""
    prompt = "Question: What is the capital of France?\nAnswer:"
    NotebookLLM(model, tokenizer).generate([prompt], stop=STOP, max_new_tokens=4)
    TransformersLLM(model, tokenizer, batch_size=2).generate([prompt, prompt + " Paris"], stop=STOP,
                                                             max_new_tokens=4)


@torch.inference_mode()
def stop_strings_overhead(model: Any, tokenizer: Any, notebook: NotebookLLM, calls: int = 3) -> float:
    """Seconds per call that ``generate(stop_strings=STOP)`` adds over a criteria object built once (1-token calls)."""
    encoded = tokenizer("Question: hi\n", return_tensors="pt").to(next(model.parameters()).device)
    common = {"do_sample": False, "max_new_tokens": 1, "pad_token_id": tokenizer.pad_token_id}

    def timed(**kwargs: Any) -> float:
        started = time.perf_counter()
        for _ in range(calls):
            model.generate(**encoded, **common, **kwargs)
        return (time.perf_counter() - started) / calls

    return timed(stop_strings=list(STOP), tokenizer=tokenizer) - timed(stopping_criteria=notebook.stopping(STOP))


def loadavg() -> list[float] | None:
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def compare(sequential: list[Answer], batched: list[Answer]) -> list[dict[str, Any]]:
    """One record per question that differs between the two sides (final text or raw transcript)."""
    differing = []
    for index, (seq, bat) in enumerate(zip(sequential, batched, strict=True)):
        if seq.text == bat.text and seq.raw == bat.raw:
            continue
        at = next((i for i, (a, b) in enumerate(zip(seq.raw, bat.raw, strict=False)) if a != b),
                  min(len(seq.raw), len(bat.raw)))
        differing.append({"index": index, "question": seq.question, "sequential": seq.text, "batched": bat.text,
                          "raw_first_difference_at": at, "sequential_raw_there": seq.raw[max(0, at - 40): at + 80],
                          "batched_raw_there": bat.raw[max(0, at - 40): at + 80]})
    return differing


def machine() -> dict[str, Any]:
    return host.machine(torch_threads=torch.get_num_threads(), torch=torch.__version__,
                        transformers=transformers.__version__, omp_wait_policy=os.environ.get("OMP_WAIT_POLICY"))


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.dataset is None:
        args.dataset = str(data_file(MQUAKE_DEV))
    cases = select_cases(load_mquake(args.dataset), args.cases, args.seed)
    questions = [case.questions[0] for case in cases]
    namespaces = [f"case{case.case_id}" for case in cases]
    hops = {str(h): sum(1 for c in cases if c.n_hops == h) for h in sorted({c.n_hops for c in cases})}
    logger.info("%d cases (hops %s), first phrasing each, k=1", len(cases), hops)

    model, tokenizer = load_causal_lm(args.model, device=args.device)
    embedder = load_embedder(device=args.device)
    prompt = mello_prompt()
    with tempfile.TemporaryDirectory(prefix="mello_throughput_") as folder:
        memory = EditMemory(Path(folder) / "store", embedder=embedder)
        memory.add([edit for case, ns in zip(cases, namespaces, strict=True) for edit in case.edits(ns)])
        warm_up(model, tokenizer)

        def batched_run(batch_size: int) -> tuple[list[Answer], float, TimedTransformersLLM]:
            """All questions together; a fresh LLM, so the few-shot prefix is computed inside the timed window."""
            llm = TimedTransformersLLM(model, tokenizer, name=args.model, batch_size=batch_size)
            started = time.perf_counter()
            answers = MeLLo(llm, memory.top1, max_hops=args.max_hops, max_new_tokens=args.max_new_tokens,
                            prompt=prompt, guided=False).answer_many(questions, namespaces)
            seconds = time.perf_counter() - started
            logger.info("batched (batch size %d): %d questions in %.1f s (%d generate rounds)", batch_size,
                        len(questions), seconds, len(llm.rounds))
            return answers, seconds, llm

        load_batched = loadavg()
        batched, seconds_batched, llm = batched_run(args.batch_size)
        sweep = []
        for size in args.sweep:
            answers, seconds, other = batched_run(size)
            sweep.append((size, answers, seconds, other, loadavg()))

        # sequential: one question at a time, full prompt recomputed by model.generate at every step
        notebook = NotebookLLM(model, tokenizer, name=args.model)
        load_sequential = loadavg()
        sequential: list[Answer] = []
        started = time.perf_counter()
        for question, namespace in tqdm(list(zip(questions, namespaces, strict=True)), desc="sequential",
                                        unit="question"):
            sequential.append(sequential_mello(model, tokenizer, memory.top1, question, namespace, prompt,
                                               max_hops=args.max_hops, max_new_tokens=args.max_new_tokens,
                                               llm=notebook))
        seconds_sequential = time.perf_counter() - started
        logger.info("sequential: %d questions in %.1f s (%d generate calls)", len(questions), seconds_sequential,
                    notebook.calls)
        overhead = stop_strings_overhead(model, tokenizer, notebook)
        logger.info("generate(stop_strings=...) would add %.2f s per call (%d calls: %.1f s), not counted",
                    overhead, notebook.calls, overhead * notebook.calls)
        memory.close()

    differing = compare(sequential, batched)
    n = len(questions)
    speedup = seconds_sequential / seconds_batched
    other_batch_sizes = [{"batch_size": size, "seconds_batched": round(seconds, 2),
                          "questions_per_minute_batched": round(60 * n / seconds, 3),
                          "speedup": round(seconds_sequential / seconds, 2),
                          "n_identical": n - len(compare(sequential, answers)),
                          "generate_rounds_batched": other.rounds, "load_average_after": load,
                          "prompt_tokens_reused_batched": other.reused_tokens}
                         for size, answers, seconds, other, load in sweep]
    return {
        "model": args.model,
        "n_questions": n,
        "seconds_sequential": round(seconds_sequential, 2),
        "seconds_batched": round(seconds_batched, 2),
        "questions_per_minute_sequential": round(60 * n / seconds_sequential, 3),
        "questions_per_minute_batched": round(60 * n / seconds_batched, 3),
        "speedup": round(speedup, 2),
        "meets_target": speedup >= TARGET_SPEEDUP and not differing,
        "target_speedup": TARGET_SPEEDUP,
        "aim_speedup": AIM_SPEEDUP,
        "same_answers": not differing,
        "n_identical": n - len(differing),
        "n_differing": len(differing),
        "differing": differing,
        "batch_size": args.batch_size,
        "other_batch_sizes": other_batch_sizes,
        "max_hops": args.max_hops,
        "max_new_tokens": args.max_new_tokens,
        "guided": False,
        "k": 1,
        "seed": args.seed,
        "dataset": str(args.dataset),
        "hops": hops,
        "generate_calls_sequential": notebook.calls,
        "generate_seconds_sequential": round(sum(notebook.call_seconds), 2),
        "hf_stop_strings_overhead_seconds_per_call": round(overhead, 3),
        "speedup_if_sequential_used_stop_strings_kwarg": round((seconds_sequential + overhead * notebook.calls)
                                                               / seconds_batched, 2),
        "generate_rounds_batched": llm.rounds,
        "prompt_tokens_reused_batched": llm.reused_tokens,
        "generate_seconds_batched": round(sum(r["seconds"] for r in llm.rounds), 2),
        "llm_calls_per_question": sum(a.llm_calls for a in batched) / max(n, 1),
        "failures": sum(1 for a in batched if a.failure),
        "load_average_before_batched": load_batched,
        "load_average_before_sequential": load_sequential,
        "load_average_at_end": loadavg(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "machine": machine(),
        "device": str(next(model.parameters()).device),
        "questions": [{"case_id": case.case_id, "hops": case.n_hops, "question": q, "answer": b.text,
                       "llm_calls": b.llm_calls, "failure": b.failure,
                       "identical": s.text == b.text and s.raw == b.raw}
                      for case, q, s, b in zip(cases, questions, sequential, batched, strict=True)],
        "method_note": ("sequential = editagent MeLLo(guided=False) driven one question at a time through an adapter "
                        "whose generate calls HF model.generate(do_sample=False) on the full prompt, stopped at "
                        "MeLLo's stop strings by a StopStringCriteria built once, one prompt per call, no KV reuse "
                        "(the MQuAKE notebook's cost model); batched = "
                        "MeLLo(TransformersLLM(batch_size), memory.top1, guided=False).answer_many(all questions) "
                        "with the few-shot prefix's KV cache computed once and held once per batch, rows continued "
                        "from the last round's KV; both timed in one process on the same "
                        "model object after an untimed warm-up call; edit-memory building is not timed"),
        "command": args.command,
    }


def markdown(report: dict[str, Any]) -> str:
    n = report["n_questions"]
    verdict = "yes" if report["same_answers"] else f"no ({report['n_identical']}/{n} identical)"
    lines = [
        "# MeLLo throughput: batched + prefix-cached vs the sequential reference loop",
        "",
        f"Model `{report['model']}` on {report['device']} ({report['machine']['cpu_model']}, "
        f"{report['cpu_count']} CPUs, {report['machine']['torch_threads']} torch threads); {n} MQuAKE-CF-3k dev "
        f"questions (first phrasing of {n} cases, hops {report['hops']}, seed {report['seed']}), k=1, "
        f"paper loop (`guided=False`), max_hops={report['max_hops']}, max_new_tokens={report['max_new_tokens']}; "
        f"both sides measured in one process, {report['date']}.",
        "",
        "| loop | generate calls | seconds | questions / minute |",
        "|---|---:|---:|---:|",
        f"| sequential reference (one full-prompt `model.generate` per step, one question at a time) | "
        f"{report['generate_calls_sequential']} | {report['seconds_sequential']:.1f} | "
        f"{report['questions_per_minute_sequential']:.2f} |",
        f"| batched MeLLo (batch size {report['batch_size']}, prefix KV computed and held once, rows continued "
        "across rounds) | "
        f"{len(report['generate_rounds_batched'])} batched rounds | {report['seconds_batched']:.1f} | "
        f"{report['questions_per_minute_batched']:.2f} |",
        "",
        f"**Speedup: {report['speedup']:.2f}x** (target >= {report['target_speedup']:g}x, aim "
        f"{report['aim_speedup']:g}x). **Identical answers and transcripts: {verdict}.**",
        "",
        f"Load average (1, 5, 15 min) before the batched side {report['load_average_before_batched']}, before the "
        f"sequential side {report['load_average_before_sequential']}, at the end {report['load_average_at_end']} "
        f"(other jobs share these {report['cpu_count']} cores). The sequential side builds Hugging Face's "
        f"`StopStringCriteria` once; passing `stop_strings=` to every `generate` call instead would add "
        f"{report['hf_stop_strings_overhead_seconds_per_call']:.2f} s per call (speedup "
        f"{report['speedup_if_sequential_used_stop_strings_kwarg']:.2f}x), a library cost kept out of the reference.",
        "",
    ]
    if report["other_batch_sizes"]:
        lines += ["Other batch sizes, same run, same sequential time:", "",
                  "| batch size | seconds | questions / minute | speedup | identical answers |",
                  "|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['batch_size']} | {r['seconds_batched']:.1f} | {r['questions_per_minute_batched']:.2f} | "
                  f"{r['speedup']:.2f}x | {r['n_identical']}/{n} |" for r in report["other_batch_sizes"]]
        lines.append("")
    if report["differing"]:
        lines += ["Questions whose answer or transcript differ:", ""]
        lines += [f"- {d['question']!r}: sequential {d['sequential']!r}, batched {d['batched']!r} "
                  f"(transcripts first differ at character {d['raw_first_difference_at']})"
                  for d in report["differing"]]
        lines.append("")
    note = report["method_note"]
    lines += [note[0].upper() + note[1:] + ".", "", "Command:", "", "```", report["command"], "```", ""]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", help="MQuAKE JSON path or dataset name (default: the dev cases)")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--cases", type=int, default=24, help="cases (one question each), balanced across hops")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=8, help="batch size of the batched side")
    parser.add_argument("--sweep", type=lambda text: [int(x) for x in text.split(",") if x], default=[],
                        help="also time the batched side at these batch sizes, e.g. 16,24 (the headline stays "
                             "--batch-size)")
    parser.add_argument("--max-hops", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.command = host.command_line()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    report = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "mello_throughput.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "mello_throughput.md").write_text(markdown(report))
    logger.info("speedup %.2fx (%.2f vs %.2f questions/minute), identical answers %d/%d; wrote %s",
                report["speedup"], report["questions_per_minute_batched"], report["questions_per_minute_sequential"],
                report["n_identical"], report["n_questions"], args.out / "mello_throughput.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
