"""Quickstart: tell editagent two facts changed, then ask a two-hop question that depends on both.

Runs offline on the packaged defaults (SmolLM2-135M-Instruct, all-MiniLM-L6-v2) and writes only into a
temporary store, so ./memory is never touched:

    python examples/quickstart.py

Both hops of the question are covered by edits, so the answer comes from the store, not from the model's
guesswork: "United Kingdom".
"""

import tempfile

from editagent import EditAgent

with tempfile.TemporaryDirectory() as store, EditAgent(store=store) as agent:
    agent.edit("Marge Simpson", "creator", "Doug TenNapel")
    agent.edit("Doug TenNapel", "country of citizenship", "United Kingdom")
    answer = agent.ask("Which country is the creator of Marge Simpson a citizen of?")

    print(f"question: {answer.question}")
    print(f"answer:   {answer.text}   (route: {answer.route})")
    for number, hop in enumerate(answer.trace, 1):
        print(f"  hop {number} [{hop.source}] {hop.subquestion} -> {hop.answer}")
        if hop.retrieved_fact:
            print(f"        edit {hop.retrieved_edit_id}: {hop.retrieved_fact}")
