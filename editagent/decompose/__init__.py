"""Multi-hop reasoning loops over an edit memory."""

from editagent.decompose.mello import MeLLo, Retriever, mello_prompt

__all__ = ["MeLLo", "Retriever", "mello_prompt"]
