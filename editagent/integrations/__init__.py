"""editagent's tools inside agent frameworks. Each module imports its framework, so ``import editagent`` never does:

* ``editagent.integrations.langchain``: ``editagent_tools(agent)`` -> LangChain ``StructuredTool``s
  (``pip install 'editagent[langchain]'``).

The OpenAI (Chat Completions and Responses) and Anthropic tool definitions need no framework: they are in
``editagent.tools`` (``TOOLS``, ``RESPONSES_TOOLS``, ``ANTHROPIC_TOOLS``), and so is the dispatcher for their calls.
"""
