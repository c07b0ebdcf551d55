"""Two `editagent serve` processes on one PostgreSQL database, standing for two service hosts.

An edit written through one host is read, searched, superseded and forgotten through the other; then four client
processes spread a mixed load over both hosts (adds on keys the clients share, so supersessions race across hosts;
searches that must find the client's own last write whichever host took it; lists; deletions) and the database must
hold every acknowledged write and exactly one live edit per (namespace, subject, relation).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from _postgres import new_database  # noqa: E402
from _servers import free_port, new_key, running  # noqa: E402


@dataclass
class Hosts:
    bases: list[str]
    key: str
    url: str

    def call(self, host: int, method: str, path: str, **kwargs: Any) -> Any:
        reply = httpx.request(method, self.bases[host] + path, headers={"Authorization": f"Bearer {self.key}"},
                              timeout=120, **kwargs)
        assert reply.status_code < 300, f"{method} {path} on host {host}: {reply.status_code} {reply.text}"
        return reply.json()


@pytest.fixture(scope="module")
def hosts(postgres_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hosts]:
    root = tmp_path_factory.mktemp("hosts")
    url = new_database(postgres_server)
    key = new_key(url, "team")  # made once, in the database: both hosts know it
    with ExitStack() as stack:
        bases = []
        for host in range(2):
            port = free_port()
            bases.append(f"http://127.0.0.1:{port}")
            stack.enter_context(running(["serve", "--store", url, "--port", str(port)], root / f"host{host}.log",
                                        f"{bases[-1]}/health"))
        yield Hosts(bases, key, url)


def test_an_edit_made_on_one_host_is_read_superseded_and_forgotten_on_the_other(hosts: Hosts) -> None:
    fact = {"subject": "Doug TenNapel", "relation": "country of citizenship", "object": "United Kingdom"}
    first = hosts.call(0, "POST", "/team/edits", json=fact)["edits"][0]
    assert hosts.call(1, "GET", f"/team/edits/{first['id']}")["edit"]["object"] == "United Kingdom"
    hits = hosts.call(1, "GET", "/team/edits/search", params={"query": "Which country is Doug TenNapel a citizen of?"})
    assert hits["hits"][0]["id"] == first["id"]

    newer = hosts.call(1, "POST", "/team/edits", json={**fact, "object": "Canada"})["edits"][0]
    history = hosts.call(0, "GET", f"/team/edits/{first['id']}/history")["edits"]
    assert [(row["id"], row["status"]) for row in history] == [(first["id"], "superseded"), (newer["id"], "live")]
    answer = hosts.call(0, "POST", "/team/ask", json={"question": "Which country is Doug TenNapel a citizen of?"})
    assert answer["text"] == "Canada"

    hosts.call(0, "DELETE", f"/team/edits/{newer['id']}")
    assert newer["id"] not in {row["id"] for row in hosts.call(1, "GET", "/team/edits")["edits"]}
    hits = hosts.call(1, "GET", "/team/edits/search", params={"query": "Doug TenNapel", "limit": 10})["hits"]
    assert all(hit["id"] not in {first["id"], newer["id"]} for hit in hits)


CLIENT = """
import json, sys, httpx
bases, key, worker, n = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
out = {"added": [], "shared": [], "deleted": [], "errors": [], "wrong": [], "ops": 0}
clients = [httpx.Client(base_url=base, headers={"Authorization": "Bearer " + key}, timeout=120) for base in bases]
mine = None
for i in range(n):
    client, kind = clients[(i + worker) % 2], i % 5  # consecutive operations go to different hosts
    if kind == 0:
        reply = client.post("/team/edits", json={"subject": f"Worker{worker} Person{i}", "relation": "employer",
                                                 "object": f"Firm{i}"})
        if reply.status_code == 201:
            mine = reply.json()["edits"][0]
            out["added"].append(mine["id"])
    elif kind == 1:  # a fact every client edits: supersessions race across the hosts
        reply = client.post("/team/edits", json={"subject": f"Shared Person{i % 3}", "relation": "employer",
                                                 "object": f"Firm{worker}x{i}"})
        if reply.status_code == 201:
            out["shared"].append(reply.json()["edits"][0]["id"])
    elif kind == 2:  # read your writes on the other host
        reply = client.get("/team/edits/search", params={"query": mine["sentence"], "limit": 3})
        if reply.status_code == 200 and reply.json()["hits"][0]["id"] != mine["id"]:
            out["wrong"].append(reply.text[:200])
    elif kind == 3:
        reply = client.get("/team/edits")
    else:
        reply = client.delete(f"/team/edits/{mine['id']}")
        if reply.status_code == 200:
            out["deleted"].append(mine["id"])
    out["ops"] += 1
    if reply.status_code >= 300:
        out["errors"].append(f"{reply.status_code} {reply.text[:200]}")
print(json.dumps(out))
"""


def every_edit(hosts: Any, host: int) -> list[dict[str, Any]]:
    """The namespace's edits, history included, page by page (the list_edits verb returns at most 1,000)."""
    found: list[dict[str, Any]] = []
    while True:
        page = hosts.call(host, "GET", "/team/edits", params={"include_history": "true", "limit": 1000,
                                                               "offset": len(found)})
        found += page["edits"]
        if not page["edits"] or len(found) >= page["total"]:
            return found


def test_four_clients_on_two_hosts_lose_nothing_and_keep_one_live_edit_per_fact(hosts: Hosts) -> None:
    workers, per_worker = 4, 130
    clients = [subprocess.Popen([sys.executable, "-c", CLIENT, json.dumps(hosts.bases), hosts.key, str(worker),
                                 str(per_worker)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for worker in range(workers)]
    results = []
    for client in clients:
        out, err = client.communicate(timeout=900)
        assert client.returncode == 0, err
        results.append(json.loads(out))
    assert [r["errors"] for r in results] == [[]] * workers and [r["wrong"] for r in results] == [[]] * workers
    assert sum(r["ops"] for r in results) == workers * per_worker >= 500

    rows = {row["id"]: row for host in (0, 1) for row in every_edit(hosts, host)}
    added = {i for r in results for i in r["added"]}
    shared = {i for r in results for i in r["shared"]}
    deleted = {i for r in results for i in r["deleted"]}
    assert added | shared <= set(rows), "an acknowledged write is missing"
    assert all(rows[i]["status"] == "deleted" for i in deleted)
    assert all(rows[i]["status"] == "live" for i in added - deleted)
    live = Counter((row["subject"].casefold(), row["relation"].casefold()) for row in rows.values()
                   if row["status"] == "live")
    assert live and max(live.values()) == 1, "a fact has more than one live edit"
    assert sum(1 for i in shared if rows[i]["status"] == "live") == 3  # one per shared fact, superseded chains
    both = [hosts.call(host, "GET", "/team/edits")["edits"] for host in (0, 1)]
    assert [row["id"] for row in both[0]] == [row["id"] for row in both[1]], "the hosts disagree"
