"""API keys: made, checked, revoked; only their hashes stored; the store's schema upgraded in place (2 -> 3)."""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
from pathlib import Path

import pytest
from _servers import editagent

from editagent.keys import KeyRing
from editagent.memory import EditMemory
from editagent.memory.sqlite_store import SCHEMA_VERSION
from editagent.models import Embedder
from editagent.schema import Edit, EditError


def test_keys_grant_namespaces_and_scopes(store_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG), KeyRing(store_path) as ring:
        writer, write_secret = ring.create(["alice", "bob", "alice"], label="alice's agent")
        reader, read_secret = ring.create(["alice"], read_only=True)
        assert write_secret.startswith(f"ea_{writer.id}_") and len(write_secret) == 3 + 13 + 43
        assert (writer.namespaces, writer.scope, writer.label) == (["alice", "bob"], "write", "alice's agent")
        assert ring.authenticate(write_secret) == writer and ring.authenticate(read_secret) == reader
        assert writer.refusal("bob", write=True) is None and reader.refusal("alice", write=False) is None
        assert reader.refusal("alice", write=True) == ("authorization: this key is read-only; writing needs a key "
                                                       "made without --read-only")
        assert writer.refusal("carol", write=False) == "namespace: this key does not hold 'carol'"
        assert reader.allows("alice", write=False) and not reader.allows("alice", write=True)

        for wrong in (write_secret[:-1] + ("A" if write_secret[-1] != "A" else "B"),  # right id, wrong secret
                      f"ea_{reader.id}_{write_secret.split('_', 2)[2]}",  # another key's secret
                      write_secret + "x", write_secret.upper(), "", "Bearer " + write_secret, None, 42):
            assert ring.authenticate(wrong) is None

        revoked = ring.revoke(reader.id)
        assert revoked.revoked and ring.authenticate(read_secret) is None
        assert not revoked.allows("alice", write=False)
        with pytest.raises(EditError, match="already revoked"):
            ring.revoke(reader.id)
        with pytest.raises(EditError, match="id: no API key 'ffffffffffff'"):
            ring.revoke("ffffffffffff")
        with pytest.raises(EditError, match="id: no API key"):
            ring.revoke("../etc")
        assert [key.id for key in ring.list()] == [writer.id, reader.id]
    assert write_secret not in caplog.text and read_secret not in caplog.text
    assert writer.id in caplog.text  # the public id is what the log names


@pytest.mark.parametrize(("namespaces", "message"), [
    ([], "namespace: name at least one"),
    (["../x"], "namespace: '../x' is not allowed"),
    (["ok", "bad name"], "namespace: 'bad name' is not allowed"),
    ("alice", "namespace: name at least one"),
])
def test_bad_key_requests_are_refused(store_path: Path, namespaces: list[str], message: str) -> None:
    with KeyRing(store_path) as ring:
        with pytest.raises(EditError, match=message):
            ring.create(namespaces)
        assert ring.list() == []


def test_only_the_hash_is_stored(store_path: Path) -> None:
    with KeyRing(store_path) as ring:
        key, secret = ring.create(["alice"])
    stored = b"".join(path.read_bytes() for path in store_path.iterdir() if path.name.startswith("edits.sqlite3"))
    assert secret.encode() not in stored and secret.split("_", 2)[2].encode() not in stored
    with sqlite3.connect(store_path / "edits.sqlite3") as db:
        row = db.execute("SELECT key_hash, namespaces, scope FROM api_keys WHERE id = ?", (key.id,)).fetchone()
    assert row == (hashlib.sha256(secret.encode()).hexdigest(), '["alice"]', "write")


def test_a_version_2_store_is_upgraded_in_place(store_path: Path, embedder: Embedder) -> None:
    with EditMemory(store_path, embedder=embedder) as memory:
        stored = memory.add(Edit(subject="Doug TenNapel", relation="P27", object="United Kingdom"))[0]
    with sqlite3.connect(store_path / "edits.sqlite3") as db:  # what editagent with schema 2 left
        db.execute("DROP TABLE api_keys")
        db.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    with KeyRing(store_path) as ring:
        _, secret = ring.create(["default"])
        assert ring.authenticate(secret) is not None
    with sqlite3.connect(store_path / "edits.sqlite3") as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (SCHEMA_VERSION,)
    assert SCHEMA_VERSION == "4"
    with EditMemory(store_path, embedder=embedder) as memory:
        assert [row.id for row in memory.edits()] == [stored.id]
    with sqlite3.connect(store_path / "edits.sqlite3") as db:
        db.execute("UPDATE meta SET value = '5' WHERE key = 'schema_version'")
    with pytest.raises(EditError, match="schema version 5 is newer"):
        KeyRing(store_path)


def test_keys_command(tmp_path: Path) -> None:
    store = tmp_path / "team"
    made = json.loads(editagent(["keys", "create", "--store", str(store), "--namespace", "alice", "--namespace", "bob",
                                 "--read-only", "--label", "bot", "--json"]).stdout)
    assert (made["namespaces"], made["scope"], made["label"]) == (["alice", "bob"], "read", "bot")
    assert made["key"].startswith(f"ea_{made['id']}_")
    plain = editagent(["keys", "create", "--store", str(store), "--namespace", "carol"])
    secret = plain.stdout.strip()
    assert secret.startswith("ea_") and "shown only now" in plain.stderr and secret not in plain.stderr

    listed = editagent(["keys", "list", "--store", str(store), "--json"]).stdout
    assert [row["scope"] for row in json.loads(listed)] == ["read", "write"]
    assert made["key"] not in listed and secret not in listed and "key_hash" not in listed
    assert "2 key(s)" in editagent(["keys", "list", "--store", str(store)]).stdout

    assert "revoked" in editagent(["keys", "revoke", made["id"], "--store", str(store)]).stdout
    again = editagent(["keys", "revoke", made["id"], "--store", str(store)], check=False)
    assert again.returncode == 2 and "already revoked" in again.stderr and "Traceback" not in again.stderr
    assert json.loads(editagent(["keys", "list", "--store", str(store), "--json"]).stdout)[0]["revoked_at"]

    missing = editagent(["keys", "list", "--store", str(tmp_path / "typo")], check=False)
    assert missing.returncode == 2 and "store: no edit store at" in missing.stderr
    bad = editagent(["keys", "create", "--store", str(tmp_path / "new"), "--namespace", "../x"], check=False)
    assert bad.returncode == 2 and "namespace: '../x' is not allowed" in bad.stderr
    assert not (tmp_path / "new").exists()  # refused before the store was touched
