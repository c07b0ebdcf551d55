"""Countries, cities and regions with the other names and demonyms people use for them (package data).

``places.json`` maps each place's canonical (Wikidata-style) name to its aliases ("UK", "Holland", "the Big
Apple") and demonyms or adjectives ("British", "Dutch", "Parisian"); forms that could mean two places
("Congolese", "Korean") are left out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib.resources import files


@dataclass(frozen=True)
class Place:
    name: str
    kind: str
    aliases: tuple[str, ...]
    demonyms: tuple[str, ...]

    @property
    def names(self) -> tuple[str, ...]:
        """Every surface form that names the place itself (not its demonyms)."""
        return (self.name, *self.aliases)


@cache
def places() -> tuple[Place, ...]:
    raw = json.loads(files("editagent.linking").joinpath("places.json").read_text(encoding="utf-8"))
    return tuple(Place(item["name"], item["kind"], tuple(item["aliases"]), tuple(item["demonyms"]))
                 for item in raw["places"])
