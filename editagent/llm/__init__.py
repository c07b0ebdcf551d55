"""LLM backends behind one small interface.

Lazy: importing the package (or ``editagent.llm.base``) does not import torch; ``TransformersLLM`` loads it when it is
first used, ``OpenAICompatibleLLM`` never does.
"""

from typing import TYPE_CHECKING

from editagent.llm.base import LLM, cut_at_stop

if TYPE_CHECKING:
    from editagent.llm.openai_compatible import OpenAICompatibleLLM
    from editagent.llm.transformers_llm import TransformersLLM

__all__ = ["LLM", "OpenAICompatibleLLM", "TransformersLLM", "cut_at_stop"]


def __getattr__(name: str) -> object:
    if name == "TransformersLLM":
        from editagent.llm.transformers_llm import TransformersLLM

        return TransformersLLM
    if name == "OpenAICompatibleLLM":
        from editagent.llm.openai_compatible import OpenAICompatibleLLM

        return OpenAICompatibleLLM
    raise AttributeError(f"module 'editagent.llm' has no attribute {name!r}")
