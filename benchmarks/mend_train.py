"""Train MEND's hypernetwork for one model on MQuAKE edits outside the evaluation split, then save it to the cache
where ``MEND`` looks for it (``<cache>/mend/<fingerprint>-layers<...>-rank<r>.pt``). Example:

    OMP_NUM_THREADS=1 python benchmarks/mend_train.py --model smollm2-135m-instruct --steps 300

Split: the evaluations use the first 150 MQuAKE dev cases (``benchmarks/editors.py`` the first 50 and locality
prompts from the next ones, ``benchmarks/mquake.py`` 120 or 150), so training edits come only from dev cases
``--train-from`` (200) on, and any rewrite whose subject is also edited in the cases before that is left out. The
last ``--validation`` training edits are held out of training and scored before and after it. The KL term's
unrelated prompts are the training cases' single-hop clozes (with their answers) and neutral sentences.

The training state is saved next to the network every ``--checkpoint-every`` steps: a stopped run, started again
with the same arguments, resumes there (more ``--steps`` extend a finished run; ``--restart`` starts afresh). Writes
``<out>/mend_training.json`` (command, wall time, steps, split, final losses, the per-step history) and
``mend_training.png`` (loss curves).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from editagent.editors import ModelArch, model_fingerprint
from editagent.editors.config import MendConfig
from editagent.editors.mend import MendNetwork, checkpoint_path, default_layers, save_network
from editagent.eval.data import MQUAKE_DEV, data_file
from editagent.eval.editing import load_cloze_templates
from editagent.eval.host import command_line
from editagent.eval.mquake import load_mquake
from editagent.models import load_causal_lm
from editagent.train.mend import (
    TrainingSettings,
    evaluate_network,
    mquake_locality_texts,
    mquake_training_items,
    train,
)

logger = logging.getLogger("benchmarks.mend_train")

VALIDATION_LOCALITY = 4  # unrelated prompts of the validation's KL (fixed, not trained on)
SMOOTH = 20  # steps in the moving averages of the plot and the final losses


def known(value: Any) -> bool:
    """A reading that was taken (a step whose edit has no paraphrase has none: null, or nan in older states)."""
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def moving_average(values: Sequence[float | None], width: int = SMOOTH) -> list[float]:
    """The mean of the known readings among the last ``width`` (nan where there are none)."""
    out = []
    for end in range(1, len(values) + 1):
        window = [v for v in values[max(0, end - width): end] if known(v)]
        out.append(sum(window) / len(window) if window else math.nan)  # type: ignore[arg-type]
    return out


def final_losses(history: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    """Each reading's mean over the last ``SMOOTH`` steps."""
    tail = history[-SMOOTH:]
    keys = ("loss", "edit_loss_before", "edit_loss_after", "paraphrase_loss_after", "prob_after", "locality_kl")
    means = {key: moving_average([h.get(key) for h in tail], len(tail))[-1] for key in keys} if tail else {}
    return {key: value if known(value) else None for key, value in means.items()}


def strict_json(value: Any) -> Any:
    """``value`` with nan readings as null (JSON has no nan)."""
    if isinstance(value, dict):
        return {key: strict_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [strict_json(item) for item in value]
    return None if isinstance(value, float) and math.isnan(value) else value


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    import matplotlib.pyplot as plt

    history = result["history"]
    steps = [h["step"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for key, label in (("edit_loss_before", "edit NLL before the update"), ("edit_loss_after", "edit NLL after"),
                       ("paraphrase_loss_after", "paraphrase NLL after"), ("loss", "training loss")):
        values = [h.get(key) for h in history]
        if any(known(v) for v in values):
            axes[0].plot(steps, moving_average(values), label=label)
    axes[0].set_title(f"losses (moving average over {SMOOTH} steps)")
    axes[0].set_xlabel("step")
    axes[0].legend(fontsize=7)
    axes[1].plot(steps, moving_average([h["locality_kl"] for h in history]), color="tab:red")
    axes[1].set_title("KL(original ‖ edited) on unrelated prompts")
    axes[1].set_xlabel("step")
    for index, layer in enumerate(result["layers"]):
        axes[2].plot(steps, [h["edit_lr"][index] for h in history], label=f"layer {layer}")
    axes[2].set_yscale("log")
    axes[2].set_title("learned step α per layer")
    axes[2].set_xlabel("step")
    axes[2].legend(fontsize=7)
    fig.suptitle(f"MEND training on {result['model']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    defaults, config = TrainingSettings(), MendConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--layers", type=int, nargs="+", default=None, help="edited blocks (default: the last 3)")
    parser.add_argument("--rank", type=int, default=config.rank)
    parser.add_argument("--edit-lr", type=float, default=config.edit_lr, help="initial step α of every layer")
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--edits-per-step", type=int, default=defaults.edits_per_step)
    parser.add_argument("--locality-per-step", type=int, default=defaults.locality_per_step)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--lr-lr", type=float, default=defaults.lr_lr)
    parser.add_argument("--c-loc", type=float, default=defaults.c_loc)
    parser.add_argument("--no-paraphrases", dest="paraphrases", action="store_false")
    parser.add_argument("--checkpoint-every", type=int, default=defaults.checkpoint_every)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--train-from", type=int, default=200, help="first MQuAKE dev case trained on")
    parser.add_argument("--validation", type=int, default=12, help="training-split edits held out and scored")
    parser.add_argument("--checkpoint", type=Path, default=None, help="where the network goes (default: the cache "
                                                                      "path MEND reads)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--name", default="mend_training", help="report file stem")
    parser.add_argument("--restart", action="store_true", help="discard a saved training state and start afresh")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    start = time.perf_counter()
    settings = TrainingSettings(steps=args.steps, edits_per_step=args.edits_per_step,
                                locality_per_step=args.locality_per_step, lr=args.lr, lr_lr=args.lr_lr,
                                c_loc=args.c_loc, paraphrases=args.paraphrases,
                                checkpoint_every=args.checkpoint_every, seed=args.seed)
    model, tok = load_causal_lm(args.model)
    arch = ModelArch(model)
    layers = args.layers if args.layers is not None else default_layers(arch)
    fingerprint = model_fingerprint(model, arch)
    target = args.checkpoint or checkpoint_path(fingerprint, layers, args.rank)
    state_path = target.with_name(target.name + ".train")
    if args.restart:
        state_path.unlink(missing_ok=True)

    cases = load_mquake(data_file(MQUAKE_DEV))
    clozes = load_cloze_templates(data_file("cloze_templates.json"))
    held_back = cases[: args.train_from]
    avoid = sorted({rewrite.subject for case in held_back for rewrite in case.requested_rewrite})
    items = mquake_training_items(cases[args.train_from:], clozes, avoid)
    if len(items) <= args.validation:
        raise SystemExit(f"only {len(items)} training edits; lower --validation or --train-from")
    training, validation = items[: -args.validation] if args.validation else items, items[len(items) - args.validation:]
    locality = mquake_locality_texts(cases[args.train_from:])
    validation_locality, locality = locality[-VALIDATION_LOCALITY:], locality[:-VALIDATION_LOCALITY]
    split = {"source": MQUAKE_DEV, "train_from_case_index": args.train_from,
             "training_cases": f"dev cases [{args.train_from}:{len(cases)}] (case_id {cases[args.train_from].case_id}"
                               f"..{cases[-1].case_id})",
             "held_back_cases": f"dev cases [0:{args.train_from}]: the evaluations use [0:150]",
             "subjects_left_out": len(avoid), "training_edits": len(training), "validation_edits": len(validation),
             "locality_texts": len(locality), "validation_locality_texts": len(validation_locality),
             "edit_loss_prompts": "the rewrite's prompt" + (" and its paraphrases (question, relation cloze)"
                                                             if settings.paraphrases else "")}
    logger.info("MEND training split: %s", split)

    torch.manual_seed(settings.seed)
    network = MendNetwork.for_model(arch, layers, args.rank, args.edit_lr)
    out_json = args.out / f"{args.name}.json"
    result: dict[str, Any] = {"model": args.model, "command": command_line(),
                              "fingerprint": fingerprint[:16], "checkpoint": str(target), "layers": layers,
                              "rank": network.rank, "edit_lr_init": args.edit_lr, "settings": settings.model_dump(),
                              "split": split, "torch_threads": torch.get_num_threads()}
    previous = json.loads(out_json.read_text()) if out_json.exists() else {}
    if previous.get("checkpoint") == str(target) and state_path.is_file() and "validation_before" in previous:
        result["validation_before"] = previous["validation_before"]  # a resumed run: scored before its first step
        result["earlier_wall_seconds"] = previous.get("wall_seconds", 0.0)
        result["earlier_commands"] = [*previous.get("earlier_commands", []), previous["command"]]
    else:
        logger.info("scoring %d held-out edits with the untrained network (one gradient step)", len(validation))
        result["validation_before"] = evaluate_network(model, tok, network, validation, validation_locality, settings)
    args.out.mkdir(parents=True, exist_ok=True)

    def write(history: list[dict[str, Any]], done: bool) -> None:
        result.update({"steps": len(history), "done": done, "final_losses": final_losses(history),
                       "wall_seconds": time.perf_counter() - start + result.get("earlier_wall_seconds", 0.0),
                       "history": history})
        out_json.write_text(json.dumps(strict_json(result), indent=1))

    history = train(model, tok, network, training, locality, settings, state_path=state_path,
                    on_checkpoint=lambda h: write(h, False))
    summary = {"steps": len(history), "settings": settings.model_dump(), "split": split,
               "final_losses": final_losses(history)}
    save_network(network, target, fingerprint, arch.model_type, training=summary)
    logger.info("MEND network saved to %s", target)
    result["validation_after"] = evaluate_network(model, tok, network, validation, validation_locality, settings)
    write(history, True)
    if history:
        plot(result, out_json.with_suffix(".png"))
    print(json.dumps({k: result[k] for k in ("steps", "wall_seconds", "final_losses", "validation_before",
                                             "validation_after")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
