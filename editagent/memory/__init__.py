"""The edit memory: an embedded store (SQLite + FAISS) by default, PostgreSQL + pgvector for several hosts."""

from editagent.memory.backend import is_postgres_url, memory_root, resolve_store_path
from editagent.memory.edit_memory import EditMemory, Written
from editagent.memory.index import VectorIndex

__all__ = ["EditMemory", "VectorIndex", "Written", "is_postgres_url", "memory_root", "resolve_store_path"]
