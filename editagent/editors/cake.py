"""CaKE: teach the model to *use* a new fact inside reasoning chains, not only recite it (Yao et al., 2025, "CaKE:
Circuit-aware Editing Enables Generalizable Knowledge Learners", arXiv 2503.16356).

The paper finds that a two-hop question is answered by a circuit: early layers resolve the first hop, the bridge
entity is carried to the last token, and middle-to-late layers resolve the second hop there. Editors that write one
fact into a few layers (ROME, MEMIT) make the model recite it, but the circuit does not pick it up. CaKE fine-tunes
with LoRA on data that makes the model use the new fact at different positions of a chain.

Training data, per edit (``CAKE.examples``; never from a benchmark's answers):

1. ``fact``: the edit prompt, ``n_context_templates`` prefixed copies of it, and the relation's own sentence when the
   relation is known and words it differently, each followed by the target.
2. ``first hop``: the new fact as the first hop of a chain. For each relation r2 of ``hop_relations`` the unedited
   model is asked about the *new object* ("The capital of Italy is"); the ``n_hops`` relations it answers most
   confidently are kept, and its own greedy answer becomes the answer of the chain: "The capital of the country of
   citizenship of Alice is" -> " Rome". ``first hop, written out``: the same chain with the new fact stated first
   ("Alice is a citizen of Italy. The capital of Italy is" -> " Rome"); used with ``reasoning``, and always where
   the relation is unknown (then no nested question can be written).
3. ``later hop``: the new fact as the second hop, when the request is a ``CakeEdit`` with ``bridges``: (entity,
   relation) pairs meaning "the relation of entity is the subject": "The spouse of Bob is a citizen of" -> " Italy"
   (the edit's relation asked about the bridge's noun phrase), and written out: "Bob is married to Alice. Alice is a
   citizen of" -> " Italy".

With ``questions``, each of ``fact``, ``first hop`` and ``later hop`` whose relations read as nouns is also asked as a
question, in the one-line "Q: ... A:" form of the agent's prompts (``fact, asked``: "Q: What is the country of
citizenship of Alice? A:" -> " Italy"; ``first hop, asked``: "Q: What is the capital of the country of citizenship of
Alice? A:" -> " Rome"): on a small model what is trained only as a sentence to complete is not used when the same
thing is asked.

The relation r of the edit is ``CakeEdit.relation`` when given, else the known relation (``editagent.relations``)
whose sentence template the prompt is ("{} is a citizen of" -> country of citizenship), else unknown.

Training: LoRA adapters (``peft``) on the MLP down projections of ``layers``, all edits of a call in one full batch,
Adam, the teacher-forced cross-entropy over the answer tokens only, plus ``kl_factor`` times KL(unedited || edited)
over the next-token distributions of fixed neutral sentences (``NEUTRAL_TEXTS``), until greedy decoding gives every
target of the ``fact`` examples by ``stop_margin`` logits or ``steps`` run out. Each adapter's product (B·A·alpha/r)
is then written into its weight through the ``WeightWriter`` and peft is removed without merging, so ``compute``
leaves the model exactly as it was, with no adapter modules or hooks left, and ``apply``/``undo``/saved edits work as
for every editor. The adapters are seeded (``seed``): the same edit on the same model gives the same deltas.

Where this differs from the paper (and its code, zjunlp/CaKE):

- The paper's data comes from GPT-4o per MQuAKE case (and the case's own rephrasings); here it is written from fixed
  templates and the model's own answers, so an edit needs nothing but itself (and optional bridges). Questions are
  worded from the relations' labels ("What is the capital of ..."), never from MQuAKE's question templates, which
  its evaluation asks.
- The paper puts LoRA on every linear module (attention and MLP) of every layer; here only the MLP down projections
  move, the weights the model fingerprint leaves out, so saved edits stack and are checked like every other editor's.
- Layers: by default the architecture's MEMIT range (early-middle blocks), not every block. On SmolLM2-135M, adapters
  on all 30 blocks flipped every target but changed most unrelated answers (locality 0.25-0.45 on 4 MQuAKE edits,
  with the KL term at 0, 1 or 5, rank 8 or 64, lr 1e-3 or 3e-4); the MEMIT range kept 0.43 without the KL term and
  0.70 with it at 5 (0.70 again on 10 edits, and 0.81 at 20 with 60 steps, the defaults). The chain examples then
  train the early-middle blocks to write the new fact so that later blocks use it in a chain.
- The KL term is ours (as ROME's and MEND's locality terms); the paper has none.
- The paper trains 40 epochs at lr 1e-4 (batch 4, bf16) on the whole sequence's tokens; here full-batch Adam on
  the answer tokens only, with FT-M's early stop, and a larger step because far fewer parameters move.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Self, cast

import torch
from pydantic import field_validator, model_validator
from torch import nn

from editagent.editors.base import Deltas, EditReport, WeightEdit, WeightWriter, as_edits, fill, frozen
from editagent.editors.config import CakeConfig
from editagent.editors.editor import Editor
from editagent.editors.finetune import edit_loss, greedy_margins, mean_probs, target_logprobs, target_rows
from editagent.editors.prompts import device_of, left_pad
from editagent.names import text_key
from editagent.relations import fact_sentence, find_relation, known_relations
from editagent.schema import MAX_ENTITY_CHARS, MAX_RELATION_CHARS, EditError, clean_text
from editagent.words import PREPOSITIONS, RELATION_VERBS

logger = logging.getLogger(__name__)

FACT, FIRST_HOP, FIRST_HOP_CHAIN = "fact", "first hop", "first hop, written out"
LATER_HOP, LATER_HOP_CHAIN = "later hop", "later hop, written out"
FACT_ASKED, FIRST_HOP_ASKED, LATER_HOP_ASKED = "fact, asked", "first hop, asked", "later hop, asked"
KINDS = (FACT, FACT_ASKED, FIRST_HOP, FIRST_HOP_ASKED, FIRST_HOP_CHAIN, LATER_HOP, LATER_HOP_ASKED, LATER_HOP_CHAIN)
_ADAPTER = "default"
_OBJECT = "\x00"  # where the object goes in a relation's sentence (no real text holds it)
# Sentences whose next-token distributions the edit must leave alone (the KL term; see ``CakeConfig.kl_factor``):
# common facts of the kinds edits change, and plain prose. Ones naming an edit's subject or target are left out.
NEUTRAL_TEXTS = ("The capital of France is Paris.", "Albert Einstein was born in the city of Ulm.",
                 "The Eiffel Tower is located in the country of France.", "Microsoft was founded by Bill Gates.",
                 "The official language of Brazil is Portuguese.", "Roger Federer plays the sport of tennis.",
                 "Toyota was created in the country of Japan.", "Harry Potter was written by J. K. Rowling.",
                 "Canada is located in the continent of North America.",
                 "The Dalai Lama is affiliated with the religion of Buddhism.",
                 "She opened the window and looked at the garden.", "Once upon a time, there was a little girl.")
_ANSWER_END = re.compile(r"[\n.,;:!?()\[\]\"]")  # the model's answer is what it says before any of these


class CakeEdit(WeightEdit):
    """A ``WeightEdit`` with what CaKE's chains need besides the prompt: ``relation``, a readable phrase for the
    prompt's relation ("country of citizenship"; None: found from the prompt where it is a known relation's
    sentence), and ``bridges``, (entity, relation) pairs meaning "the relation of entity is the subject", from which
    the new fact is trained as a later hop. A plain ``WeightEdit`` is accepted where a ``CakeEdit`` is asked for."""

    relation: str | None = None
    bridges: tuple[tuple[str, str], ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _from_weight_edit(cls, value: Any) -> Any:
        if isinstance(value, WeightEdit) and not isinstance(value, cls):
            return value.model_dump()
        return value

    @field_validator("relation", mode="before")
    @classmethod
    def _relation(cls, value: Any) -> str | None:
        return None if value is None else clean_text("relation", value, MAX_RELATION_CHARS)

    @field_validator("bridges", mode="before")
    @classmethod
    def _bridges(cls, value: Any) -> tuple[tuple[str, str], ...]:
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise EditError("bridges: expected a list of (entity, relation) pairs")
        pairs = []
        for pair in value:
            if isinstance(pair, str) or not isinstance(pair, Sequence) or len(pair) != 2:
                raise EditError(f"bridges: {pair!r} is not an (entity, relation) pair, e.g. ('Bob', 'spouse') "
                                "for 'the spouse of Bob is <subject>'")
            pairs.append((clean_text("bridges entity", pair[0], MAX_ENTITY_CHARS),
                          clean_text("bridges relation", pair[1], MAX_RELATION_CHARS)))
        return tuple(pairs)

    @model_validator(mode="after")
    def _plain_relation(self) -> Self:
        if self.relation is not None and ("{" in self.relation or "}" in self.relation):
            raise EditError(f"relation: {self.relation!r} must be a plain phrase, without braces")
        return self


@dataclass(frozen=True)
class Example:
    """One training example: ``prompt`` continues with ``target`` (a leading space, as a new word); ``kind`` says
    where the new fact sits in it, ``edit`` whose edit it trains (an index into the call's edits)."""

    kind: str
    edit: int
    prompt: str
    target: str

    # ``target_rows`` reads an edit's template, subject and target: an example is its prompt behind the bare one.
    template = "{}"

    @property
    def subject(self) -> str:
        return self.prompt


def relation_of(edit: WeightEdit) -> str | None:
    """The edit's relation phrase: ``CakeEdit.relation``, else the known relation whose sentence template the prompt
    is (up to case and spacing), else None."""
    if isinstance(edit, CakeEdit) and edit.relation is not None:
        return edit.relation
    template = text_key(edit.template.replace("{}", "{s}", 1))
    for relation in known_relations():
        head, found, tail = relation.sentence.partition("{o}")
        if found and tail.strip() in ("", ".") and text_key(head) == template:
            return relation.label
    return None


def noun_phrase(relation: str, subject: str) -> str | None:
    """"the capital of Italy": the relation's label, or its first alias, that reads as a noun ("founded by" has
    "founder"); None where none does ("located in the administrative territorial entity")."""
    found = find_relation(relation)
    for name in [found.label, *found.aliases] if found else [" ".join(relation.split())]:
        words = name.casefold().split()
        if words and "/" not in name and not {"or", ","} & set(words) and words[-1] not in PREPOSITIONS and not {
                words[0], words[-1]} & RELATION_VERBS and not any(words[i].endswith("ed") for i in (0, -1)):
            return f"the {name} of {subject}"
    return None


def as_question(phrase: str) -> str:
    """A noun phrase asked in the one-line form of the agent's question prompts ("Q: What is the capital of Italy?
    A:"); the answer follows as a new word."""
    return f"Q: What is {phrase}? A:"


def cloze(relation: str, subject: str) -> str | None:
    """The relation's sentence about ``subject`` cut where its object starts ("The capital of Italy is"); None where
    the object does not end the sentence."""
    head, found, tail = fact_sentence(subject, relation, _OBJECT).partition(_OBJECT)
    head = head.rstrip()
    if not found or not head or tail.strip(" ."):
        return None
    return "The" + head[3:] if head.startswith("the ") else head


@dataclass
class Answer:
    """The model's greedy answer to one prompt, cut before its first punctuation, and its mean token log-prob."""

    text: str
    confidence: float


@torch.no_grad()
def greedy_answers(model: nn.Module, tokenizer: Any, prompts: Sequence[str], n_tokens: int) -> list[Answer]:
    """Each prompt's greedy continuation of at most ``n_tokens`` tokens, cut before the first newline or punctuation
    mark (``text`` empty, confidence -inf, where nothing comes before one)."""
    if not prompts:
        return []
    device = device_of(model)
    heads = [list(tokenizer(prompt, add_special_tokens=True)["input_ids"]) for prompt in prompts]
    tails: list[list[int]] = [[] for _ in prompts]
    logprobs: list[list[float]] = [[] for _ in prompts]
    for _ in range(n_tokens):
        rows = [head + tail for head, tail in zip(heads, tails, strict=True)]
        logits = model(**left_pad(tokenizer, rows, device), use_cache=False).logits[:, -1].float()
        chosen = torch.log_softmax(logits, dim=-1).max(dim=-1)
        for i in range(len(rows)):
            tails[i].append(int(chosen.indices[i]))
            logprobs[i].append(float(chosen.values[i]))
    answers = []
    for tail, values in zip(tails, logprobs, strict=True):
        keep = 0
        for count in range(1, len(tail) + 1):
            if tail[count - 1] == tokenizer.eos_token_id or _ANSWER_END.search(tokenizer.decode(tail[:count])):
                break
            keep = count
        text = tokenizer.decode(tail[:keep]).strip() if keep else ""
        confidence = sum(values[:keep]) / keep if keep and text else float("-inf")
        answers.append(Answer(text if confidence > float("-inf") else "", confidence))
    return answers


def _peft() -> tuple[Any, Any]:
    try:
        from peft import LoraConfig  # noqa: PLC0415
        from peft.tuners.lora import LoraModel  # noqa: PLC0415
    except ImportError as error:
        raise EditError(f"CaKE trains LoRA adapters with peft, which could not be imported ({error}); install it "
                        "with: pip install 'editagent[cake]'") from error
    return LoraConfig, LoraModel


class CAKE(Editor):
    """Circuit-aware knowledge editing (see the module doc); ``compute``/``apply`` as every ``Editor``, on
    ``CakeEdit`` requests (or plain ``WeightEdit``). All edits of one call are trained together."""

    method = "cake"
    config_type = CakeConfig
    request_type = CakeEdit
    config: CakeConfig

    def __init__(self, model: nn.Module, tokenizer: Any, config: CakeConfig | dict[str, Any] | None = None,
                 **options: Any) -> None:
        super().__init__(model, tokenizer, config, **options)
        self.layers = self.arch.check_layers(self.config.layers, self.arch.memit_layers)

    def compute(self, edits: Any) -> Deltas:
        """As ``Editor.compute``; the deltas record each edit as a plain ``WeightEdit`` (what saved edits hold)."""
        deltas = super().compute(edits)
        plain = [WeightEdit(prompt=edit.prompt, subject=edit.subject, target=edit.target) for edit in deltas.edits]
        return dataclasses.replace(deltas, edits=plain)

    # -- training data ------------------------------------------------------------------------------------------

    def examples(self, edits: Any) -> list[Example]:
        """The training examples of ``edits`` (see the module doc), in the order: every edit's facts, then every
        edit's first hops, then its later hops. Asks the model, as it is now, about each new object."""
        items = as_edits(edits, CakeEdit)
        relations = [relation_of(edit) for edit in items]
        found: list[Example] = []
        for index, (edit, relation) in enumerate(zip(items, relations, strict=True)):
            prompts = [fill(template, edit.text) for template in self.templates]
            own = cloze(relation, edit.subject) if relation is not None else None
            if own is not None and text_key(own) not in {text_key(prompt) for prompt in prompts}:
                prompts.append(own)
            found += [Example(FACT, index, prompt, edit.target) for prompt in prompts]
            asked = noun_phrase(relation, edit.subject) if relation is not None else None
            if self.config.questions and asked is not None:
                found.append(Example(FACT_ASKED, index, as_question(asked), edit.target))
        found += self._first_hops(items, relations)
        for index, (edit, relation) in enumerate(zip(items, relations, strict=True)):
            for entity, bridge in edit.bridges:
                phrase = noun_phrase(bridge, entity)
                nested = cloze(relation, phrase) if relation is not None and phrase is not None else None
                if nested is not None:
                    found.append(Example(LATER_HOP, index, nested, edit.target))
                asked = noun_phrase(relation, phrase) if relation is not None and phrase is not None else None
                if self.config.questions and asked is not None:
                    found.append(Example(LATER_HOP_ASKED, index, as_question(asked), edit.target))
                if self.config.reasoning or nested is None:
                    found.append(Example(LATER_HOP_CHAIN, index, f"{fact_sentence(entity, bridge, edit.subject)} "
                                                                 f"{edit.text}", edit.target))
        return found

    def _first_hops(self, items: Sequence[CakeEdit], relations: Sequence[str | None]) -> list[Example]:
        """Each edit's second relations asked about its new object; the ``n_hops`` answered most confidently."""
        if not self.config.n_hops:
            return []
        asked = [(index, second, question) for index, edit in enumerate(items)
                 for second in self.config.hop_relations
                 if (question := cloze(second, edit.target.strip())) is not None]
        answers = greedy_answers(self.model, self.tokenizer, [question for *_, question in asked],
                                 self.config.answer_tokens)
        found = []
        for index, (edit, relation) in enumerate(zip(items, relations, strict=True)):
            mine = [(answer, second, question) for (owner, second, question), answer in zip(asked, answers, strict=True)
                    if owner == index and answer.text and text_key(answer.text) != text_key(edit.target)]
            mine.sort(key=lambda item: -item[0].confidence)  # stable: ties keep the order of hop_relations
            for answer, second, question in mine[: self.config.n_hops]:
                phrase = noun_phrase(relation, edit.subject) if relation is not None else None
                nested = cloze(second, phrase) if phrase is not None else None
                if nested is not None:
                    found.append(Example(FIRST_HOP, index, nested, " " + answer.text))
                chain = noun_phrase(second, phrase) if phrase is not None else None
                if self.config.questions and chain is not None:
                    found.append(Example(FIRST_HOP_ASKED, index, as_question(chain), " " + answer.text))
                if self.config.reasoning or nested is None:
                    found.append(Example(FIRST_HOP_CHAIN, index, f"{edit.text}{edit.target}. {question}",
                                         " " + answer.text))
        return found

    # -- training ------------------------------------------------------------------------------------------------

    def _write(self, items: list[CakeEdit], writer: WeightWriter) -> list[EditReport]:
        start = time.perf_counter()
        config = self.config
        examples = self.examples(items)
        rows = target_rows(self.tokenizer, cast(Any, examples), ["{}"], device_of(self.model))
        direct = [i for i, example in enumerate(examples) if example.kind == FACT]
        owners = [examples[i].edit for i in direct]
        neutral = self._neutral(items)
        with torch.no_grad():
            reference = _logprobs(self.model, neutral) if neutral is not None else None
        steps, before = 0, None
        with frozen(self.model), self._adapters() as adapters, torch.enable_grad():
            optimiser = torch.optim.Adam([p for module in adapters.values() for p in _adapter_parameters(module)],
                                         lr=config.lr)
            for step in range(config.steps + 1):
                logits = rows.logits(self.model)
                logprobs = target_logprobs(logits, rows.targets)
                if before is None:
                    before = mean_probs([logprobs[i] for i in direct], owners, len(items))
                steps = step
                margins = greedy_margins([logits[i] for i in direct], [rows.targets[i] for i in direct])
                if step == config.steps or bool((margins >= config.stop_margin).all()):
                    break
                loss = edit_loss(logits, rows, logprobs, "target")
                if neutral is not None and reference is not None and config.kl_factor:
                    loss = loss + config.kl_factor * _kl(reference, _logprobs(self.model, neutral), neutral)
                loss.backward()
                optimiser.step()
                optimiser.zero_grad()
            products = {layer: _product(module) for layer, module in adapters.items()}
        for layer, product in products.items():
            writer.add(self.arch.weight_name(layer), self.arch.to_param_layout(product))
        with torch.no_grad():  # read back from the written weights, which is what apply gives
            logits = rows.logits(self.model)
        after = mean_probs([target_logprobs(logits, rows.targets)[i] for i in direct], owners, len(items))
        seconds = (time.perf_counter() - start) / len(items)
        kinds = {kind: sum(example.kind == kind for example in examples) for kind in KINDS}
        logger.info("CaKE: %d edits, %s, LoRA r=%d on %d layers, %d steps, %.1f s/edit, target p %.2f -> %.2f",
                    len(items), ", ".join(f"{n} {kind}" for kind, n in kinds.items() if n), config.rank,
                    len(self.layers), steps, seconds, sum(before or [0.0]) / len(items), sum(after) / len(items))
        return [EditReport(subject=edit.subject, target=edit.target, steps=steps, prob_before=(before or after)[i],
                           prob_after=after[i], seconds=seconds) for i, edit in enumerate(items)]

    def _neutral(self, items: Sequence[CakeEdit]) -> dict[str, torch.Tensor] | None:
        """The ``NEUTRAL_TEXTS`` that name no edit's subject or target, as one left-padded batch (None: none)."""
        names = [text_key(name) for edit in items for name in (edit.subject, edit.target)]
        texts = [text for text in NEUTRAL_TEXTS if not any(name in text_key(text) for name in names)]
        if not texts or not self.config.kl_factor:
            return None
        rows = [self.tokenizer(text, add_special_tokens=True)["input_ids"] for text in texts]
        return left_pad(self.tokenizer, rows, device_of(self.model))

    @contextmanager
    def _adapters(self) -> Iterator[dict[int, nn.Module]]:
        """LoRA adapters (float32, seeded) on the down projections of ``layers``, removed again without merging:
        every module, parameter and attribute of the model is as before afterwards."""
        lora_config, lora_model = _peft()
        arch, config = self.arch, self.config
        originals = {layer: arch.mlp_out(layer) for layer in self.layers}
        had_config = hasattr(self.model, "peft_config")
        settings = lora_config(r=config.rank, lora_alpha=config.alpha, lora_dropout=0.0, bias="none",
                               target_modules=[f"{arch.spec.blocks}.{layer}.{arch.spec.mlp_out}"
                                               for layer in self.layers],
                               fan_in_fan_out=arch.spec.conv1d)
        device = arch.weight(self.layers[0]).device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(config.seed)
            tuner = lora_model(self.model, settings, _ADAPTER)
        try:
            adapters = {layer: arch.mlp_out(layer) for layer in self.layers}
            for module in adapters.values():
                for parameter in _adapter_parameters(module):
                    parameter.data = parameter.data.float()
            yield adapters
        finally:
            tuner.unload()
            if not had_config and hasattr(self.model, "peft_config"):
                del self.model.peft_config
            moved = [layer for layer, module in originals.items() if arch.mlp_out(layer) is not module]
            if moved:
                raise EditError(f"layers {moved}: peft did not give back the original down projections")


def _adapter_parameters(module: nn.Module) -> list[nn.Parameter]:
    return [module.lora_A[_ADAPTER].weight, module.lora_B[_ADAPTER].weight]  # type: ignore[index]


@torch.no_grad()
def _product(module: nn.Module) -> torch.Tensor:
    """The adapter's change of the weight, B·A·alpha/r, in float64 and the ``nn.Linear`` layout [out, in]."""
    down, up = (parameter.double() for parameter in _adapter_parameters(module))
    return (up @ down) * float(module.scaling[_ADAPTER])  # type: ignore[index]


def _logprobs(model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.log_softmax(model(**inputs, use_cache=False).logits.float(), dim=-1)


def _kl(reference: torch.Tensor, current: torch.Tensor, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """KL(reference || current) of the next-token distributions, averaged over the real (unpadded) positions."""
    per_position = (reference.exp() * (reference - current)).sum(dim=-1)
    mask = inputs["attention_mask"].to(per_position.dtype)
    return (per_position * mask).sum() / mask.sum()
