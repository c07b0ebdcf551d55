"""Typed settings of the weight editors, one config class per method; importing this module does not load torch.

    from editagent.editors.config import MemitConfig, editor_config
    MemitConfig(layers=[4, 5, 6])
    editor_config("rome", layer=6)          # the same by method name, e.g. from a command line
    editor_config("ft-m", steps=10)         # any registered name: editagent.editors.registry.editor_methods()

Each config registers its editor right after its definition (``register_editor``, by "module:Class", so torch
loads only when an editor is built); ``editagent.editors.registry.make_editor(model, tokenizer, config)`` builds
it. Why the defaults are what they are, with the runs that measured them: ``docs/decisions.md``.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from editagent.editors.registry import CONFIGS, config_type_of, register_editor
from editagent.schema import EditError

# Fixed, neutral sentence prefixes (ROME samples its own from the model; fixed ones are deterministic and free).
CONTEXT_PREFIXES = ("The following is true.", "Here is a fact.", "I read about this today.",
                    "This is from a textbook.", "Let me tell you something.", "Remember this.", "Good question.",
                    "Listen carefully.", "Facts matter.", "As noted before.")
# 30k tokens: about 20 per dimension of a 1536-wide key, enough for a stable C, and minutes to sample on a CPU.
DEFAULT_STATS_TOKENS = 30_000


def _layer_list(value: list[int] | None) -> list[int] | None:
    if value is not None and (not value or any(layer < 0 for layer in value)):
        raise ValueError("layers: give at least one non-negative layer index, e.g. [4, 5, 6], or None")
    return sorted(set(value)) if value is not None else None


# Blocks, given in any order and deduplicated; None: the editor's default.
LayerList = Annotated[list[int] | None, AfterValidator(_layer_list)]


class EditorConfig(BaseModel):
    """Base of every editor's settings: frozen, unknown fields refused; ``method`` names the editor (its registry
    key); ``long_targets``: the editor is made for long targets (paragraphs), not short objects."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: ClassVar[str] = ""
    long_targets: ClassVar[bool] = False


class ValueConfig(EditorConfig):
    """Settings of the value optimisation every editor shares: a vector δ, added to one module's output v at one
    token, is fitted so that the model continues each prompt with the target.

    As in ROME, except that steps and the decay term are scale-free (in units of v, whose scale differs by orders
    of magnitude between models), steps are normalised gradient steps rather than Adam's (which spread δ over
    every direction, and so over unrelated prompts), and the loop stops once greedy decoding says the whole target
    on every prompt by ``stop_margin`` logits, which is what reliability asks.
    """

    step_rule: Literal["adam", "gradient"] = Field(
        "gradient", description="'gradient': each step moves δ by lr·‖v‖ along the loss gradient; 'adam': Adam, "
                                "lr per coordinate in units of rms(v) (ROME's choice)")
    lr: float = Field(0.1, gt=0, description="step length of δ in units of ‖v‖ (for 'adam': per coordinate, "
                                             "in units of rms(v))")
    steps: int = Field(60, ge=0, description="most optimisation steps; fewer once the stop test is met")
    stop_margin: float = Field(2.0, ge=0, description="stop once every target token of every prompt is the greedy "
                                                      "choice by this many logits")
    kl_factor: float = Field(0.0625, ge=0, description="weight of KL(edited || original) on '{} is a'")
    weight_decay: float = Field(0.1, ge=0, description="weight of ‖δ‖ / ‖v‖ in the loss")
    clamp_norm_factor: float = Field(10.0, gt=0, description="‖δ‖ is clamped to this times ‖v‖")
    n_context_templates: int = Field(4, ge=0, le=len(CONTEXT_PREFIXES),
                                     description="prefixed copies of the prompt, besides the bare prompt")
    stats_tokens: int = Field(DEFAULT_STATS_TOKENS, ge=1, description="tokens behind the key statistics C")


class RomeConfig(ValueConfig):
    """ROME settings; ``layer`` None takes the architecture's default (an early-middle layer)."""

    method: ClassVar[str] = "rome"

    layer: int | None = Field(None, ge=0, description="block whose down projection is edited")
    # C from 30k tokens is noisy in its small directions: a larger ridge generalises better at the same locality.
    mom2_ridge: float = Field(1e-2, ge=0, description="C + ridge·mean(diag C)·I before inverting")
    key_ridge: float = Field(1e-3, ge=0, description="KᵀC⁻¹K + ridge·mean(diag)·I: template keys can be near "
                                                     "collinear")


register_editor(RomeConfig, "editagent.editors.rome:ROME")


class MemitConfig(ValueConfig):
    """MEMIT settings; ``layers`` None takes the architecture's default range of early-middle layers."""

    method: ClassVar[str] = "memit"

    layers: LayerList = Field(None, description="blocks whose down projections are edited, low to high")
    clamp_norm_factor: float = Field(0.75, gt=0, description="‖δ‖ ≤ this · ‖z‖, z the value site's output "
                                                              "(MEMIT.value_site); MEMIT's 0.75")
    mom2_update_weight: float | None = Field(None, gt=0, description="λ, the weight of C against the edited keys; "
                                                                     "None: 1.3 · key_dim")
    passes: int = Field(1, ge=1, le=10, description="times the layer range is written, each pass aiming at "
                                                    "what the earlier ones left of the goals")
    # 1 rather than ROME's 2: each extra logit of δ is also written into every other key's output.
    stop_margin: float = Field(1.0, ge=0, description="stop once every target token of every prompt is the greedy "
                                                      "choice by this many logits")
    # Kept for GPUs, where a batch should pay; on the CPUs we measure on it ran slower (docs/decisions.md).
    value_batch: int = Field(1, ge=1, description="edits whose values are fitted together in one batch, each with "
                                                  "its own δ and stop test")
    refits: int = Field(1, ge=0, le=5, description="rounds of: check every edit on the written model, find δ "
                                                   "again for those short of the stop test, write again")


register_editor(MemitConfig, "editagent.editors.memit:MEMIT")


class AnyEditConfig(MemitConfig):
    """AnyEdit settings: MEMIT's (layers, λ, value optimisation) plus the windows a long target is cut into.

    A window's δ carries up to ``window_tokens`` tokens, far from the small δ of one short object: hence Adam steps
    of 1·rms(v), a larger clamp, the bare prompt only, and two passes over the layer range (the second closes part
    of what λC kept the first from writing).
    """

    method: ClassVar[str] = "anyedit"
    long_targets: ClassVar[bool] = True

    window_tokens: int = Field(16, ge=1, le=512, description="most target tokens per window (one key/value each)")
    window_slack: int = Field(6, ge=0, le=511, description="a window may end up to this many tokens early, where the "
                                                          "next window's key is the most distinctive; 0: fixed windows")
    step_rule: Literal["adam", "gradient"] = Field("adam", description="'adam': Adam, lr per coordinate in units of "
                                                                       "rms(v); 'gradient': δ moves lr·‖v‖ a step")
    lr: float = Field(1.0, gt=0, description="Adam's per-coordinate step in units of rms(v) (for 'gradient': δ's "
                                             "step in units of ‖v‖)")
    steps: int = Field(60, ge=0, description="most optimisation steps per window")
    stop_margin: float = Field(1.0, ge=0, description="stop once every token of the window is the greedy choice by "
                                                      "this many logits")
    passes: int = Field(2, ge=1, le=10, description="times the layer range is written, each pass aiming at what the "
                                                    "earlier ones left of the goals")
    refits: int = Field(0, ge=0, le=5, description="rounds of: check every window on the written model, find δ again "
                                                   "for those short of the stop test, write again")
    clamp_norm_factor: float = Field(2.0, gt=0, description="‖δ‖ ≤ this · ‖z‖ per window")
    n_context_templates: int = Field(0, ge=0, le=len(CONTEXT_PREFIXES),
                                     description="prefixed copies of the prompt, besides the bare one")
    # Without them the write disturbs the tokens between window sites, which the fits assumed unchanged.
    hold_other_positions: bool = Field(True, description="keep the top-layer output at every other prompt/target "
                                                         "position as it was (extra zero-change keys)")


register_editor(AnyEditConfig, "editagent.editors.anyedit:AnyEdit")


class GradientConfig(EditorConfig):
    """Settings of the editors that train a weight change by gradient steps on the edit prompts (FT-L, FT-M, KNE)."""

    optimizer: Literal["adam", "sgd"] = Field("adam", description="Adam (ROME's and EasyEdit's choice) or plain SGD")
    lr: float = Field(5e-4, gt=0, description="learning rate, in the weight's own units")
    steps: int = Field(25, ge=0, description="most optimisation steps; fewer once the stop test is met")
    norm_constraint: float | None = Field(None, gt=0, description="L∞ bound: after each step every weight's change "
                                                                  "is clamped to ±this; None: unconstrained")
    stop_margin: float = Field(1.0, ge=0, description="stop once every target token of every prompt is the greedy "
                                                      "choice by this many logits")
    n_context_templates: int = Field(0, ge=0, le=len(CONTEXT_PREFIXES),
                                     description="prefixed copies of the prompt trained on, besides the bare prompt")


class FineTuneConfig(GradientConfig):
    """Settings shared by FT-L and FT-M: gradient steps on one down projection's weight (``FtlConfig``,
    ``FtmConfig`` pick the loss and the constraint); ``layer`` None takes the architecture's ROME layer."""

    layer: int | None = Field(None, ge=0, description="block whose down projection weight is fine-tuned")
    loss: Literal["prompt_last", "target"] = Field(
        "target", description="'prompt_last': every target token scored at the prompt's last position (ROME's "
                              "FT-L); 'target': teacher-forced cross-entropy over the target tokens only (FT-M)")


class FtlConfig(FineTuneConfig):
    """FT-L (Zhu et al. 2020, as ROME's baseline): ROME's loss and L∞ bound, with its GPT-2 XL settings (Adam,
    25 steps, lr = ε = 5e-4). The stop test asks for the whole target, which ROME's loss, read at one position,
    reaches only for single-token targets: others run every step."""

    method: ClassVar[str] = "ft-l"

    loss: Literal["prompt_last", "target"] = Field(
        "prompt_last", description="'prompt_last': every target token scored at the prompt's last position (ROME's "
                                   "FT-L); 'target': teacher-forced cross-entropy over the target tokens only")
    norm_constraint: float | None = Field(5e-4, gt=0, description="L∞ bound: after each step every weight's change "
                                                                  "is clamped to ±this; None: unconstrained")


register_editor(FtlConfig, "editagent.editors.finetune:FTL")


class FtmConfig(FineTuneConfig):
    """FT-M (EasyEdit): cross-entropy over the target tokens only, no L∞ bound by default."""

    method: ClassVar[str] = "ft-m"


register_editor(FtmConfig, "editagent.editors.finetune:FTM")


class GraceConfig(EditorConfig):
    """GRACE settings: a codebook on one down projection (keys: its input, values: replacements for its output).

    ``layer`` None takes a late layer (GRACE's GPT-2 XL layer 35 of 48, about 3/4 deep). The radius is
    scale-free: in units of the key's norm (GRACE's absolute ε = 1.0 was set for one model's activations).
    """

    method: ClassVar[str] = "grace"

    layer: int | None = Field(None, ge=0, description="block whose down projection gets the codebook")
    epsilon: float = Field(0.1, gt=0, description="initial deferral radius of each key, in units of ‖key‖")
    lr: float = Field(0.5, gt=0, description="Adam's per-coordinate step on a value, in units of rms of the "
                                             "output it replaces")
    steps: int = Field(100, ge=0, description="most optimisation steps (GRACE's n_iter); fewer once the stop test "
                                              "is met")
    stop_margin: float = Field(1.0, ge=0, description="stop once every target token of every prompt is the greedy "
                                                      "choice by this many logits")
    n_context_templates: int = Field(0, ge=0, le=len(CONTEXT_PREFIXES),
                                     description="prefixed copies of the prompt, each with its own keys, besides "
                                                 "the bare prompt")


register_editor(GraceConfig, "editagent.editors.grace:GRACE")


class KnConfig(EditorConfig):
    """KN settings (Dai et al. 2022, and the knowledge-neurons code EasyEdit uses): integrated gradients in 20 steps,
    neurons above 0.2 of the largest attribution, value slots moved by 2·(e_target − e_answer)."""

    method: ClassVar[str] = "kn"

    layers: LayerList = Field(None, description="blocks whose MLP neurons are searched; None: all")
    ig_steps: int = Field(20, ge=2, le=200, description="Riemann steps of the integrated gradients")
    threshold: float = Field(0.2, gt=0, le=1, description="keep neurons whose attribution exceeds this fraction of "
                                                          "the prompt's largest")
    prompt_share: float = Field(0.5, ge=0, lt=1, description="with several prompts, keep neurons found in more than "
                                                             "this share of them")
    scale: float = Field(2.0, gt=0, description="λ: each value slot moves by λ·(e_target − e_answer)")
    n_context_templates: int = Field(0, ge=0, le=len(CONTEXT_PREFIXES),
                                     description="prefixed copies of the prompt attributed too, besides the bare one")


register_editor(KnConfig, "editagent.editors.kn:KN")


class KneConfig(GradientConfig):
    """KNE settings (Li et al. 2024): per layer, the MLP neurons with the largest gradient attribution to the target
    loss form the ensemble, and only their value slots are trained, with FT-M's loss (cross-entropy over the target
    tokens)."""

    method: ClassVar[str] = "kne"

    layers: LayerList = Field(None, description="blocks whose MLP neurons may join the ensemble; None: all")
    neuron_share: float = Field(0.01, gt=0, le=1, description="share of each layer's MLP neurons in the ensemble, "
                                                              "those with the largest attribution")
    specific: bool = Field(True, description="divide each neuron's attribution by its typical (rms) activation on "
                                             "neutral sentences, so the ensemble leaves out neurons busy everywhere")
    lr: float = Field(5e-4, gt=0, description="learning rate, in the weight's own units")
    steps: int = Field(40, ge=0, description="most optimisation steps; fewer once the stop test is met")


register_editor(KneConfig, "editagent.editors.kne:KNE")


class MendConfig(EditorConfig):
    """MEND settings (Mitchell et al. 2022): a hypernetwork, trained for one model, maps the edit's fine-tuning
    gradient of each edited down projection to its update. ``layers`` None: the last three blocks (the paper's last
    MLP layers). ``layers`` and ``rank`` must be those the network was trained with."""

    method: ClassVar[str] = "mend"

    layers: LayerList = Field(None, description="blocks whose down projections are edited; None: the last three")
    rank: int = Field(1920, ge=1, description="rank of the hypernetwork's low-rank layers (the paper's 1920), capped "
                                              "at its width")
    edit_lr: float = Field(1e-2, gt=0, description="initial step α of each layer in a new network (then learned): "
                                                   "an untrained network takes one gradient step of this size")
    checkpoint: str | None = Field(None, description="the trained network's file; None: the cache, keyed by the "
                                                     "model's fingerprint, layers and rank")
    n_context_templates: int = Field(0, ge=0, le=len(CONTEXT_PREFIXES),
                                     description="prefixed copies of the prompt in the edit's gradient, besides the "
                                                 "bare prompt")


register_editor(MendConfig, "editagent.editors.mend:MEND")


def _relation_names(value: tuple[str, ...]) -> tuple[str, ...]:
    cleaned = tuple(" ".join(name.split()) for name in value)
    if any(not name or len(name) > 100 or "{" in name or "}" in name for name in cleaned):
        raise ValueError("hop_relations: give relation phrases of 1-100 characters without braces, e.g. "
                         "['capital', 'official language']")
    return tuple(dict.fromkeys(cleaned))


class CakeConfig(EditorConfig):
    """CaKE settings (Yao et al. 2025): LoRA on the MLP down projections, trained on generated examples that use the
    new fact inside two-hop chains (``editagent.editors.cake``). ``layers`` None: the architecture's MEMIT range."""

    method: ClassVar[str] = "cake"

    layers: LayerList = Field(None, description="blocks whose down projections get a LoRA adapter; None: the "
                                                "architecture's early-middle range (MEMIT's)")
    rank: int = Field(8, ge=1, description="LoRA rank r (the paper's 8)")
    alpha: float = Field(32.0, gt=0, description="LoRA alpha: the adapter's product is scaled by alpha / rank")
    lr: float = Field(1e-3, gt=0, description="Adam's learning rate on the adapter matrices")
    steps: int = Field(60, ge=0, description="most optimisation steps (full batch); fewer once the stop test is met")
    stop_margin: float = Field(1.0, ge=0, description="stop once every target token of every direct prompt is the "
                                                      "greedy choice by this many logits")
    n_context_templates: int = Field(2, ge=0, le=len(CONTEXT_PREFIXES),
                                     description="prefixed copies of the edit prompt trained on, besides the bare one")
    hop_relations: Annotated[tuple[str, ...], AfterValidator(_relation_names)] = Field(
        ("country", "capital", "official language", "continent", "head of state"),
        description="second relations asked about the new object to build two-hop examples")
    n_hops: int = Field(2, ge=0, description="per edit, the second relations kept: those the unedited model answers "
                                             "about the new object most confidently")
    answer_tokens: int = Field(4, ge=1, le=32, description="most tokens of the model's own answer to a second "
                                                           "relation")
    questions: bool = Field(True, description="also train each fact and nested chain asked as a question "
                                              "(\"Q: What is the capital of the country of citizenship of Alice? "
                                              "A:\"), the form the agent's prompts ask the model in")
    reasoning: bool = Field(True, description="also train each chain written out, its first fact stated before the "
                                              "second hop is asked (always where no nested question can be written)")
    kl_factor: float = Field(20.0, ge=0, description="weight of KL(unedited || edited) over the next tokens of neutral "
                                                    "sentences, which keeps unrelated answers; 0: off")
    seed: int = Field(0, ge=0, description="seed of the adapters' initialisation: the same edit gives the same "
                                           "deltas")


register_editor(CakeConfig, "editagent.editors.cake:CAKE")


def editor_config(method: str, **fields: Any) -> EditorConfig:
    """The config of the editor registered as ``method`` with ``fields`` set; errors name the field."""
    kind = config_type_of(method)
    if kind is None:
        raise EditError(f"method: {method!r} is not a weight editor; use one of {', '.join(CONFIGS)}")
    try:
        return kind(**fields)
    except ValidationError as error:
        problems, unknown = [], False
        for item in error.errors():
            field = ".".join(str(part) for part in item["loc"]) or "config"
            if item["type"] == "extra_forbidden":
                unknown = True
                problems.append(f"{field}: not a setting of {method}")
            elif item["type"] == "value_error":  # this module's validators name their field
                problems.append(str(item["ctx"]["error"]))
            else:
                problems.append(f"{field}: {item['msg']}")
        known = f" (its settings: {', '.join(kind.model_fields)})" if unknown else ""
        raise EditError("; ".join(problems) + known) from None
