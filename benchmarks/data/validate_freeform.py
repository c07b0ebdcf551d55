"""Validate the free-form probe sets (freeform.jsonl, freeform_untuned.jsonl).

Checks: valid JSON per line, required keys, unique ids, one object per
(subject, relation) across BOTH files, tag sanity (no-cue, lowercase, alias),
and the minimum counts.  Usage: python3 validate_freeform.py
"""
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
FILES = [("freeform.jsonl", "ff-"), ("freeform_untuned.jsonl", "fu-")]
KEYS = {"id", "scope", "kind", "hops", "edits", "question", "answer", "aliases", "tags"}
KINDS = {"custom", "wikidata", "multihop", "entity", "out"}
WIKIDATA = {
    "country of citizenship", "capital", "head of government", "head of state",
    "chief executive officer", "place of birth", "spouse", "employer",
    "member of sports team", "headquarters location", "author", "creator",
    "manufacturer", "official language", "located in country", "head coach",
    "home venue",
}
STOP = {"of", "in", "to", "the", "a", "an", "for", "on", "at", "by"}
FLOORS = {"in": 105, "custom": 42, "no-cue": 42, "multihop": 25, "lowercase": 12,
          "demonym": 10, "alias": 10, "out": 52}

errors = []


def err(msg):
    errors.append(msg)


def words(s):
    return re.findall(r"[a-z0-9]+", s.lower())


def cue_words(question, relation):
    """Relation words that (nearly) occur in the question: exact, or sharing a 5-letter prefix."""
    qw = words(question)
    hits = []
    for w in words(relation):
        if w in STOP:
            continue
        for q in qw:
            if q == w or (len(q) >= 5 and len(w) >= 5 and q[:5] == w[:5]):
                hits.append(w)
                break
    return hits


def load(name, prefix):
    recs = []
    with open(os.path.join(HERE, name), encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError as e:
                err(f"{name}:{n}: bad JSON ({e})")
                continue
            miss = KEYS - r.keys()
            if miss:
                err(f"{name}:{n}: missing keys {sorted(miss)}")
                continue
            if not r["id"].startswith(prefix):
                err(f"{name}:{n}: id {r['id']} lacks prefix {prefix}")
            recs.append(r)
    return recs


def check_probe(r):
    pid, q = r["id"], r["question"]
    if r["scope"] not in ("in", "out"):
        err(f"{pid}: bad scope")
    if r["kind"] not in KINDS:
        err(f"{pid}: bad kind {r['kind']}")
    if "\n" in q:
        err(f"{pid}: question spans lines")
    for e in r["edits"]:
        for k in ("subject", "relation", "object"):
            if not isinstance(e.get(k), str) or not e[k].strip():
                err(f"{pid}: edit lacks {k}")
        if len(e["object"].split()) > 5:
            err(f"{pid}: object longer than 5 words: {e['object']}")
    if r["scope"] == "in":
        if not r["edits"]:
            err(f"{pid}: in-scope probe without edits")
            return
        if r["hops"] != len(r["edits"]):
            err(f"{pid}: hops {r['hops']} != {len(r['edits'])} edits")
        if r["answer"] != r["edits"][-1]["object"]:
            err(f"{pid}: answer is not the last edit's object")
        for a, b in zip(r["edits"], r["edits"][1:], strict=False):
            if a["object"].casefold() != b["subject"].casefold():
                err(f"{pid}: chain broken between {a['object']!r} and {b['subject']!r}")
        if (r["kind"] == "multihop") != (r["hops"] > 1):
            err(f"{pid}: kind multihop iff hops > 1")
        tags = set(r["tags"])
        if "no-cue" in tags:
            for e in r["edits"]:
                hits = cue_words(q, e["relation"])
                if hits:
                    err(f"{pid}: tagged no-cue but uses {hits} from {e['relation']!r}")
        first = r["edits"][0]
        if "lowercase" in tags:
            names = [first["subject"], *first.get("aliases", [])]
            if not any(n.lower() in q for n in names) or any(
                    n in q for n in names if n != n.lower()):
                err(f"{pid}: tagged lowercase but subject not lower-cased in question")
        if "alias" in tags:
            al = first.get("aliases", [])
            if not any(re.search(r"\b" + re.escape(a) + r"\b", q) for a in al):
                err(f"{pid}: tagged alias but no listed alias in question")
            rest = q
            for a in sorted(al, key=len, reverse=True):
                rest = rest.replace(a, " ")
            if first["subject"] in rest:
                err(f"{pid}: tagged alias but canonical subject in question")
        custom = any(e["relation"] not in WIKIDATA for e in r["edits"])
        if custom != ("custom-relation" in tags):
            err(f"{pid}: custom-relation tag does not match relations")
    else:
        if r["answer"] is not None:
            err(f"{pid}: out-of-scope answer must be null")
        if r["kind"] != "out":
            err(f"{pid}: out-of-scope kind must be 'out'")
        if not ({"near-miss", "unrelated"} & set(r["tags"])):
            err(f"{pid}: out-of-scope probe needs near-miss or unrelated tag")


def main():
    sets = {name: load(name, prefix) for name, prefix in FILES}
    all_recs = [r for recs in sets.values() for r in recs]
    ids = [r["id"] for r in all_recs]
    for i in sorted({i for i in ids if ids.count(i) > 1}):
        err(f"duplicate id {i}")
    seen_q = {}
    for r in all_recs:
        key = r["question"].casefold()
        if key in seen_q:
            err(f"{r['id']}: same question as {seen_q[key]}")
        seen_q[key] = r["id"]
        check_probe(r)

    facts, subj_alias = {}, {}
    for r in all_recs:
        for e in r["edits"]:
            k = (e["subject"].casefold(), e["relation"].casefold())
            if k in facts and facts[k][0].casefold() != e["object"].casefold():
                err(f"{r['id']}: {k} -> {e['object']!r} conflicts with {facts[k][0]!r} ({facts[k][1]})")
            facts.setdefault(k, (e["object"], r["id"]))
            if "aliases" in e:
                s = e["subject"].casefold()
                if s in subj_alias and subj_alias[s] != e["aliases"]:
                    err(f"{r['id']}: aliases of {e['subject']} differ between probes")
                subj_alias.setdefault(s, e["aliases"])

    ff_subjects = {e["subject"].casefold() for r in sets["freeform.jsonl"] for e in r["edits"]}
    for r in sets["freeform_untuned.jsonl"]:
        if r["scope"] == "in" and all(e["subject"].casefold() in ff_subjects for e in r["edits"]):
            err(f"{r['id']}: untuned probe uses no new entity")

    for name, recs in sets.items():
        ins = [r for r in recs if r["scope"] == "in"]
        outs = [r for r in recs if r["scope"] == "out"]
        c = {
            "total": len(recs), "in": len(ins), "out": len(outs),
            "custom": sum("custom-relation" in r["tags"] for r in ins),
            "no-cue": sum("no-cue" in r["tags"] for r in ins),
            "multihop": sum(r["hops"] > 1 for r in ins),
            "3-hop": sum(r["hops"] == 3 for r in ins),
            "lowercase": sum("lowercase" in r["tags"] for r in ins),
            "demonym": sum("demonym" in r["tags"] for r in ins),
            "alias": sum("alias" in r["tags"] for r in ins),
            "near-miss": sum("near-miss" in r["tags"] for r in outs),
            "unrelated": sum("unrelated" in r["tags"] for r in outs),
        }
        kinds = {k: sum(r["kind"] == k for r in recs) for k in sorted(KINDS)}
        print(f"{name}: {c}\n  kinds: {kinds}")
        if name == "freeform.jsonl":
            if c["total"] < 155:
                err(f"{name}: only {c['total']} probes (< 155)")
            for k, floor in FLOORS.items():
                if c[k] < floor:
                    err(f"{name}: {k} = {c[k]} < {floor}")
        else:
            if c["total"] != 32:
                err(f"{name}: {c['total']} probes, expected 32")
    print(f"distinct (subject, relation) facts across both files: {len(facts)}")
    if errors:
        print(f"\n{len(errors)} problem(s):")
        for e in errors:
            print("  " + e)
        sys.exit(1)
    print("OK")


if __name__ == "__main__":
    main()
