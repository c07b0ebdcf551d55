"""LLM backends behind one small interface."""

from editagent.llm.base import LLM, cut_at_stop
from editagent.llm.openai_compatible import OpenAICompatibleLLM
from editagent.llm.transformers_llm import TransformersLLM

__all__ = ["LLM", "OpenAICompatibleLLM", "TransformersLLM", "cut_at_stop"]
