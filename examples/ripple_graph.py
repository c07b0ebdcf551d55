"""Ripple effects of one edit, listed as fact chains and drawn as a PNG of the edit graph.

A few stored facts form chains (Marge Simpson -> her creator -> his country -> its capital). One new edit,
"Doug TenNapel is now a citizen of the United Kingdom" (previously the United States), changes the answer
of every multi-hop question whose chain passes through it; ``EditGraph.ripple`` lists those chains before
the edit is stored, then the graph is drawn (superseded facts dashed grey). Runs offline, in a temporary store:

    python examples/ripple_graph.py [OUTPUT.png]      # default: a temporary folder; the path is printed
"""

import sys
import tempfile
from pathlib import Path

from editagent import EditAgent
from editagent.schema import Edit

BACKGROUND = [
    ("Marge Simpson", "creator", "Doug TenNapel"),
    ("Earthworm Jim", "creator", "Doug TenNapel"),
    ("Doug TenNapel", "country of citizenship", "United States of America"),
    ("United States of America", "capital", "Washington, D.C."),
    ("United Kingdom", "capital", "London"),
    ("United Kingdom", "head of state", "Charles III"),
]

output = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp()) / "ripple.png"

with tempfile.TemporaryDirectory() as store, EditAgent(store=store) as agent:
    for subject, relation, obj in BACKGROUND:
        agent.edit(subject, relation, obj)

    new = Edit(subject="Doug TenNapel", relation="country of citizenship", object="United Kingdom",
               previous_object="United States of America")
    chains = agent.graph().ripple(new, max_hops=3)  # a proposed edit can be checked before it is stored
    print(f"edit: {new.subject} / {new.relation}: {new.previous_object} -> {new.object}")
    print(f"{len(chains)} chains change:")
    for chain in chains:
        facts = "; ".join(f"{e.subject} --{e.relation}--> {e.object}" for e in chain.edges)
        print(f"  {chain.reason:<11} {facts}")

    agent.edit(new)  # supersedes the stored citizenship, which stays in the graph as a dashed edge
    graph = agent.graph()
    print(f"graph: {graph.nx.number_of_nodes()} entities, {graph.nx.number_of_edges()} edges")
    print(f"png: {graph.draw(output)}")
