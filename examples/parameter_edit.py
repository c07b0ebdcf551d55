"""A parameter edit and its undo: one fact written into SmolLM2's weights with ROME, then taken out again.

Prints the model's greedy continuation of the edit prompt (and of an unrelated prompt, which should not
move) before the edit, after it and after ``undo``, and checks that undo put every weight back bit for bit
against a snapshot of the whole state dict. Runs offline on the packaged SmolLM2-135M-Instruct:

    python examples/parameter_edit.py

The only thing written is the key statistics ROME needs, cached under $EDITAGENT_CACHE/stats/ (default:
the user cache dir) like any use of the editors: about a minute the first time on a small CPU, then seconds.
"""

import torch

from editagent.editors import ROME, RomeConfig, WeightEdit
from editagent.models import load_causal_lm

PROMPT = "The Eiffel Tower is located in the city of"
UNRELATED = "The Brandenburg Gate is located in the city of"
EDIT = WeightEdit(prompt=PROMPT, subject="The Eiffel Tower", target="Rome")


def continuation(model, tokenizer, prompt: str) -> str:
    """The greedy continuation, up to its first full stop."""
    inputs = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    text = tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    return text.split(".")[0].strip()


def show(stage: str) -> None:
    print(f"{stage:<12} {continuation(model, tokenizer, PROMPT):<22} {continuation(model, tokenizer, UNRELATED)}")


model, tokenizer = load_causal_lm()  # the packaged default, SmolLM2-135M-Instruct
snapshot = {name: tensor.clone() for name, tensor in model.state_dict().items()}

# ROME needs C = E[k kᵀ], the second moment of the edited layer's inputs, computed once per model and cached.
# The default (30 000 tokens the model samples itself) takes ~4 minutes on a small CPU; 4 000 tokens take
# under a minute and are enough for one edit, which keeps this example quick.
rome = ROME(model, tokenizer, RomeConfig(stats_tokens=4000), progress=False)

print(f"edit: {EDIT.prompt!r} -> {EDIT.target!r}")
print(f"{'':<12} {'edit prompt':<22} unrelated: {UNRELATED!r}")
show("before edit")
handle = rome.apply([EDIT])
show("after edit")
report = handle.reports[0]
print(f"{'':<12} ({', '.join(handle.deltas)} changed; p(target) {report.prob_before:.3f} -> "
      f"{report.prob_after:.3f} in {report.steps} steps)")
handle.undo()
show("after undo")

restored = all(torch.equal(tensor, snapshot[name]) for name, tensor in model.state_dict().items())
print(f"weights restored bit for bit: {restored}")
assert restored, "undo did not restore the original weights"
