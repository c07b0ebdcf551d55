"""The one table of verbs behind every face: what each verb takes, does, returns, and whether it writes.

A verb is a pydantic model of its arguments, a function of an ``EditAgent`` and a model of its result. The tool
definitions (``editagent.tools``), the MCP server, the HTTP routes (``editagent.server``) and the CLI commands
(``editagent.cli``) are all read off ``VERBS``: the same names, argument names, limits, effects and result shapes
on every face. A new verb is one row here plus its function. Importing this module loads no model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from editagent.schema import (
    MAX_ALIASES,
    MAX_HTTP_BATCH,
    MAX_SEARCH_HITS,
    Answer,
    EditError,
    EditId,
    EntityText,
    OptionalEntityText,
    QuestionText,
    RelationText,
    SearchHit,
    SentenceText,
    SourceText,
    StoredEdit,
)

if TYPE_CHECKING:
    from editagent.agent import EditAgent

MAX_LISTED = 1_000  # edits per list_edits call
MAX_GRAPH_RADIUS = 3
Effect = Literal["read", "write", "destructive"]
Name = Annotated[EntityText, Field(min_length=1)]  # the schema says what the validator enforces


class ToolError(EditError):
    """A refused call: unknown verb, arguments that are not a JSON object, a bad or missing argument, or an
    operation the store refuses (e.g. forgetting an id this namespace does not have)."""


class NotFound(ToolError):
    """A call naming an edit or an entity this namespace does not have (HTTP answers 404)."""


class Conflict(ToolError):
    """A call on an edit that is no longer live (HTTP answers 409)."""


# -- arguments: one pydantic model per verb, which also writes its JSON schema ------------------------------


class Arguments(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EditArguments(Arguments):
    subject: Name = Field(description="The entity whose fact changed, e.g. 'Doug TenNapel'.")
    relation: RelationText = Field(description="The relation: a label ('country of citizenship'), an alias, a "
                                               "Wikidata id ('P27') or your own wording ('manager').")
    object: Name = Field(description="The new value, e.g. 'United Kingdom'.")
    sentence: SentenceText = Field("", description="Optional: the fact as one sentence (default: written from "
                                                   "the relation).")
    previous_object: OptionalEntityText = Field(None, description="Optional: the value this edit replaces "
                                                                  "(default: the object of the edit it supersedes).")
    aliases: list[Name] = Field([], max_length=MAX_ALIASES,
                                description="Optional: other names of the subject, e.g. ['UK', 'Britain'].")
    source: SourceText | None = Field(None, description="Optional: where the fact came from (default: the face that "
                                               "stored it: 'tool', 'http' or 'cli').")


class AskArguments(Arguments):
    question: QuestionText = Field(description="The question, on one line.")


class EditIdArguments(Arguments):
    edit_id: EditId = Field(description="The edit's id, as edit, search_edits or list_edits returned it.")


class SearchArguments(Arguments):
    query: QuestionText = Field(description="What to look for, e.g. a question or a name.")
    limit: int = Field(5, ge=1, le=MAX_SEARCH_HITS, strict=True, description="How many edits to return at most.")


class EditManyArguments(Arguments):
    edits: list[EditArguments] = Field(min_length=1, max_length=MAX_HTTP_BATCH,
                                       description="The facts that changed; all are stored, or none.")


class ListArguments(Arguments):
    include_history: bool = Field(False, strict=True, description="Also list superseded and deleted edits.")
    limit: int = Field(100, ge=1, le=MAX_LISTED, strict=True, description="How many edits to return at most.")
    offset: int = Field(0, ge=0, strict=True, description="How many edits to skip first, oldest first.")


class GraphArguments(Arguments):
    entity: Name | None = Field(None, description="The entity at the centre, e.g. 'Doug TenNapel' (default: "
                                                  "the whole graph).")
    radius: int = Field(1, ge=1, le=MAX_GRAPH_RADIUS, strict=True,
                        description="How many facts away from the entity to reach, in either direction.")


ForgetArguments = EditIdArguments


# -- results: what every face returns ---------------------------------------------------------------------


class HitRow(BaseModel):
    """One search hit."""

    id: str = Field(description="The edit's id.")
    memory: str = Field(description="The edit's sentence.")
    score: float = Field(description="Cosine similarity to the query, at most 1.")
    status: str = Field(description="'live', 'superseded' or 'deleted'.")
    subject: str
    relation: str
    object: str


class OneEdit(BaseModel):
    edit: StoredEdit


class EditList(BaseModel):
    edits: list[StoredEdit]


class Listed(EditList):
    total: int = Field(description="How many edits there are in all, before limit and offset.")


class Hits(BaseModel):
    hits: list[HitRow]


Reply: type[BaseModel] = create_model(  # Answer without "raw" (the prompt's whole continuation): callers need
    "Reply", __doc__="The answer and every hop that led to it.",  # the answer and the hops, on every face
    **{name: (field.annotation, field) for name, field in Answer.model_fields.items() if name != "raw"})


class GraphNode(BaseModel):
    id: str = Field(description="The entity's key: its name case-folded.")
    label: str = Field(description="The entity's name as first written.")
    namespaces: list[str]


class GraphEdge(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    from_: str = Field(alias="from", description="The subject's node id.")
    to: str = Field(description="The object's node id.")
    source: str = Field(description="Where the edit came from (its ``source``).")
    key: str = Field(description="The edit's id (with ':previous' for the value it replaced).")
    kind: Literal["edit", "previous"]
    edit_id: str
    subject: str
    relation: str
    object: str
    sentence: str
    namespace: str
    status: str
    superseded: bool
    superseded_by: str | None
    created_at: str
    ended_at: str | None


class Graph(BaseModel):
    """node-link data (networkx), as ``EditGraph.to_json`` writes it."""

    directed: bool
    multigraph: bool
    graph: dict[str, Any]
    nodes: list[GraphNode]
    edges: list[GraphEdge]


# -- what each verb does ------------------------------------------------------------------------------------


def hit_row(hit: SearchHit) -> HitRow:
    return HitRow(id=hit.id, memory=hit.memory, score=hit.score, status=hit.status, subject=hit.edit.subject,
                  relation=hit.edit.relation, object=hit.edit.object)


def edit_fields(args: EditArguments, source: str = "tool") -> dict[str, Any]:
    return {**args.model_dump(exclude={"source"}), "source": args.source or source}


def own_edit(agent: EditAgent, edit_id: str, field: str = "edit_id") -> StoredEdit:
    """The namespace's edit with this id; ``NotFound`` naming ``field`` otherwise."""
    stored = agent.get(edit_id)
    if stored is None:
        raise NotFound(f"{field}: no edit {edit_id!r} in namespace {agent.namespace!r}")
    return stored


def live_edit(agent: EditAgent, edit_id: str, field: str = "edit_id") -> StoredEdit:
    """The namespace's live edit with this id; ``NotFound`` or ``Conflict`` naming ``field`` otherwise."""
    stored = own_edit(agent, edit_id, field)
    if stored.status != "live":
        by = f" (by {stored.superseded_by!r})" if stored.superseded_by else ""
        raise Conflict(f"{field}: edit {stored.id!r} is already {stored.status}{by}")
    return stored


def graph_json(agent: EditAgent, entity: str | None = None, radius: int = 1) -> dict[str, Any]:
    """The namespace's edit graph as node-link JSON: all of it, or ``entity``'s neighbourhood; ``NotFound`` for an
    entity the graph does not hold."""
    graph = agent.graph()
    if entity is not None:
        if entity not in graph:
            raise NotFound(f"entity: {entity!r} is in no edit of namespace {agent.namespace!r}")
        graph = graph.neighbourhood(entity, radius)
    return graph.to_json()


def _edit(agent: EditAgent, args: EditArguments) -> OneEdit:
    fields = edit_fields(args)
    return OneEdit(edit=agent.edit(fields.pop("subject"), fields.pop("relation"), fields.pop("object"), **fields))


def _edit_many(agent: EditAgent, args: EditManyArguments) -> EditList:
    return EditList(edits=agent.edit_many([edit_fields(edit) for edit in args.edits]))


def _list(agent: EditAgent, args: ListArguments) -> Listed:
    rows = agent.edits(include_history=args.include_history)
    return Listed(edits=rows[args.offset: args.offset + args.limit], total=len(rows))


def _get(agent: EditAgent, args: EditIdArguments) -> OneEdit:
    return OneEdit(edit=own_edit(agent, args.edit_id))


def _history(agent: EditAgent, args: EditIdArguments) -> EditList:
    own_edit(agent, args.edit_id)
    return EditList(edits=agent.history(args.edit_id))


def _graph(agent: EditAgent, args: GraphArguments) -> dict[str, Any]:
    return graph_json(agent, args.entity, args.radius)


def _ask(agent: EditAgent, args: AskArguments) -> dict[str, Any]:
    return agent.ask(args.question).model_dump(mode="json", exclude={"raw"})


def _forget(agent: EditAgent, args: EditIdArguments) -> OneEdit:
    live_edit(agent, args.edit_id)
    return OneEdit(edit=agent.forget(args.edit_id))


def _search(agent: EditAgent, args: SearchArguments) -> Hits:
    return Hits(hits=[hit_row(hit) for hit in agent.search(args.query, limit=args.limit)])


# -- the table ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verb:
    """One verb: its name on every face, its arguments' model, what it runs, its result's model and its effect
    (``read``; ``write``: needs a write key; ``destructive``: a write that removes a fact). ``http``: its route
    ("METHOD /path"), ``cli``: its command's words."""

    name: str
    description: str
    arguments: type[Arguments]
    run_model: Callable[[EditAgent, Any], BaseModel | dict[str, Any]]
    result: type[BaseModel]
    effect: Effect = "read"
    http: str = ""
    cli: tuple[str, ...] = ()

    @property
    def writes(self) -> bool:
        return self.effect != "read"

    @property
    def destructive(self) -> bool:
        return self.effect == "destructive"

    def run(self, agent: EditAgent, arguments: Any) -> dict[str, Any]:
        """The verb's result as plain JSON, the shape ``result`` declares."""
        found = self.run_model(agent, arguments)
        if isinstance(found, dict):
            return found
        return self.result.model_validate(found, from_attributes=True).model_dump(mode="json", by_alias=True)

    def schema(self) -> dict[str, Any]:
        """The arguments' JSON schema, self-contained (no ``$ref``) and without pydantic's titles."""
        return plain(self.arguments.model_json_schema())

    def output_schema(self) -> dict[str, Any]:
        """The result's JSON schema, in the same plain form."""
        return plain(self.result.model_json_schema(by_alias=True))


def plain(schema: Any, defs: Mapping[str, Any] | None = None) -> Any:
    """pydantic's schema with each ``$ref`` replaced by its definition (some APIs take no ``$defs``) and without
    its "title" keys, which only repeat the property names to the model."""
    if defs is None and isinstance(schema, dict):
        defs = schema.get("$defs", {})
    if isinstance(schema, dict):
        if "$ref" in schema:
            return plain(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
        return {key: plain(value, defs) for key, value in schema.items()
                if key != "$defs" and not (key == "title" and isinstance(value, str))}
    if isinstance(schema, list):
        return [plain(value, defs) for value in schema]
    return schema


VERBS: dict[str, Verb] = {verb.name: verb for verb in (
    Verb("edit", "Record that a fact changed: (subject, relation, new object). A newer edit on the same subject and "
         "relation replaces the older one. Returns the stored edit with its id.", EditArguments, _edit, OneEdit,
         "write", cli=("edit", "add")),
    Verb("ask", "Answer a question, multi-hop ones included, using the recorded edits. Returns the answer and "
         "every reasoning hop with the edit it used.", AskArguments, _ask, Reply, http="POST /{namespace}/ask",
         cli=("ask",)),
    Verb("forget", "Delete a recorded edit by its id (it stays in the history).", EditIdArguments, _forget, OneEdit,
         "destructive", http="DELETE /{namespace}/edits/{edit_id}", cli=("edit", "forget")),
    Verb("search_edits", "Find recorded edits similar to a text, best first, with their ids and scores.",
         SearchArguments, _search, Hits, http="GET /{namespace}/edits/search", cli=("edit", "search")),
    Verb("edit_many", "Record several changed facts at once: all of them are stored, or none. Returns the stored "
         "edits with their ids.", EditManyArguments, _edit_many, EditList, "write", http="POST /{namespace}/edits",
         cli=("edit", "import")),
    Verb("list_edits", "List the recorded edits, oldest first, with their ids; 'total' counts them all.",
         ListArguments, _list, Listed, http="GET /{namespace}/edits", cli=("edit", "list")),
    Verb("get_edit", "Read one recorded edit by its id.", EditIdArguments, _get, OneEdit,
         http="GET /{namespace}/edits/{edit_id}", cli=("edit", "get")),
    Verb("edit_history", "Every edit ever made on the same subject and relation as this one, oldest first: what "
         "the fact was before, and when it changed.", EditIdArguments, _history, EditList,
         http="GET /{namespace}/edits/{edit_id}/history", cli=("edit", "history")),
    Verb("graph", "The recorded facts around an entity as a graph: nodes (entities) and edges (edits), JSON "
         "node-link data.", GraphArguments, _graph, Graph, http="GET /{namespace}/graph"),
)}
"""Every verb by name."""
