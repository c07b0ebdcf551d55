"""Multi-hop reasoning loops over an edit memory."""

from editagent.decompose.chain import ChainReasoner
from editagent.decompose.direct import answer_directly, multihop_prompt
from editagent.decompose.mello import MeLLo, Retriever, mello_prompt
from editagent.decompose.pokemqa import (
    DEFAULT_SCOPE_THRESHOLD,
    EntityOfQuestion,
    PokeMQA,
    ScopeDetector,
    entity_lookup_from_kgprompt,
    pokemqa_prompt,
    threshold_scope,
)

__all__ = [
    "DEFAULT_SCOPE_THRESHOLD",
    "ChainReasoner",
    "EntityOfQuestion",
    "MeLLo",
    "PokeMQA",
    "Retriever",
    "ScopeDetector",
    "answer_directly",
    "entity_lookup_from_kgprompt",
    "mello_prompt",
    "multihop_prompt",
    "pokemqa_prompt",
    "threshold_scope",
]
