"""Linking a question to what the store holds: which stored entity it names, which relation it asks for.

``entities``: names as users write them (any case, with or without "the", aliases, "British" for the United
Kingdom) matched to stored subjects, with no model (names compared by ``editagent.names``). ``relations``: a
relation phrase or a whole question matched by meaning to relations (built-in and user-defined), with the
embedder. Imports nothing above the schema.
"""

from editagent.linking.entities import EntityLinker, EntityMention
from editagent.linking.places import Place, places
from editagent.linking.relations import RelationLinker, RelationScores, relation_descriptions

__all__ = [
    "EntityLinker",
    "EntityMention",
    "Place",
    "RelationLinker",
    "RelationScores",
    "places",
    "relation_descriptions",
]
