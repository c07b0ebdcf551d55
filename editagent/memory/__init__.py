"""The edit memory: SQLite as the source of truth, FAISS for search."""

from editagent.memory.edit_memory import EditMemory, memory_root, resolve_store_path
from editagent.memory.index import VectorIndex

__all__ = ["EditMemory", "VectorIndex", "memory_root", "resolve_store_path"]
