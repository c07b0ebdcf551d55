"""A personal assistant for two users whose facts differ: one store, one namespace per user.

Alice and Bob each tell the assistant about their own life. The same question gets each user's own
answer, and a search in Bob's namespace never returns Alice's edits (nor the other way round).
Runs offline on the packaged defaults, in a temporary store:

    python examples/personal_assistant.py
"""

import tempfile

from editagent import EditAgent
from editagent.models import load_embedder

FACTS = {
    "alice": [("Sam Carter", "employer", "Acme Robotics"), ("Acme Robotics", "headquarters location", "Berlin")],
    "bob": [("Sam Carter", "employer", "Globex Shipping"), ("Globex Shipping", "headquarters location", "Lisbon")],
}
QUESTIONS = ["Who is the employer of Sam Carter?", "Where are the headquarters of Sam Carter's employer?"]

with tempfile.TemporaryDirectory() as store:
    embedder = load_embedder()  # loaded once, shared by both users' agents
    for user, facts in FACTS.items():
        with EditAgent(namespace=user, store=store, embedder=embedder) as agent:
            for subject, relation, obj in facts:
                agent.edit(subject, relation, obj)

    for user in FACTS:
        with EditAgent(namespace=user, store=store, embedder=embedder) as agent:
            print(f"== {user}")
            for question in QUESTIONS:
                answer = agent.ask(question)
                hops = " -> ".join(f"{hop.answer} [{hop.source}]" for hop in answer.trace)
                print(f"ask    {question} => {answer.text}   ({hops})")
            for hit in agent.search("Where does Sam Carter work?", limit=5):
                print(f"search {hit.memory}   (namespace {hit.edit.namespace}, score {hit.score:.2f})")
