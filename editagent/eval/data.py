"""Where benchmark and test data comes from: one resolver for every file.

``data_file(name)`` looks in ``$EDITAGENT_DATA`` first, then in the cache (``<EDITAGENT_CACHE>/data``), and
when neither has the file, fetches it there once: an upstream file by download (checked against its known
digest; MQuAKE releases through ``load_mquake``'s own cache), a derived one (the 600 dev cases, their conflicts
at k=all) computed from the upstream file it comes from. Offline and without the file, it raises
``DataUnavailable`` naming the variable to set.

Layout of a data folder (as the cache keeps it, and as ``$EDITAGENT_DATA`` should hold it):

    MQuAKE-CF-3k-dev600.json           the dev cases: every case of MQuAKE-CF-3k whose case_id is a multiple of 5
    dev600_conflicted_case_ids.json    dev cases another dev case's edit contradicts when all share one memory
    pokemqa/cls-filtered.json          PokeMQA's scope-detector pairs (Hengrui-Gu/PokeMQA, MIT)
    MQuAKE-CF-3k.json, ...             any upstream MQuAKE release by its name
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from editagent.paths import cache_dir

logger = logging.getLogger(__name__)

DATA_ENV = "EDITAGENT_DATA"
MQUAKE_DEV = "MQuAKE-CF-3k-dev600.json"
CONFLICTED = "dev600_conflicted_case_ids.json"
SCOPE_PAIRS = "pokemqa/cls-filtered.json"
POKEMQA_URL = ("https://raw.githubusercontent.com/Hengrui-Gu/PokeMQA/3cc3a59ceb674337f9db63443833ab7d1485641e/"
               "datasets/cls-filtered.json")
POKEMQA_SHA256 = "16437ffd1893c210f965512e5793192c746fd2669d00432965a1faca2966e0b9"
DEV_EVERY = 5  # the dev split: case_ids divisible by this


class DataUnavailable(RuntimeError):
    """A data file is neither in ``$EDITAGENT_DATA`` nor in the cache, and could not be fetched."""


def data_file(name: str) -> Path:
    """The local path of data file ``name`` (see the module doc): found, or fetched into the cache once."""
    configured = os.environ.get(DATA_ENV)
    places = [Path(configured).expanduser()] if configured else []
    places.append(cache_dir() / "data")
    for place in places:
        if (place / name).is_file():
            return place / name
    where = " nor in ".join(str(p) for p in places)
    if _is_mquake_release(name):  # the loader's own cache and download, with their checks
        return _upstream_mquake(name, where)
    fetch = _FETCHERS.get(name)
    if fetch is None:
        raise DataUnavailable(f"data: {name} is neither in {where}; set {DATA_ENV} to a folder that holds it")
    target = cache_dir() / "data" / name
    try:
        payload = fetch(name)
    except DataUnavailable as error:  # a derived file whose source is missing too
        raise DataUnavailable(f"data: {name} is neither in {where}, and it is derived from a file that is not at "
                              f"hand either ({error})") from None
    except (ConnectionError, OSError) as error:
        raise DataUnavailable(f"data: {name} is neither in {where}, and fetching it failed ({error}); set "
                              f"{DATA_ENV} to a folder that holds it, or go online once") from None
    write_atomically(target, payload)
    logger.info("data: fetched %s into %s", name, target)
    return target


def _is_mquake_release(name: str) -> bool:
    from editagent.eval.mquake import KNOWN_DATASETS  # noqa: PLC0415 - mquake imports this module

    return name.removesuffix(".json") in KNOWN_DATASETS


def _upstream_mquake(name: str, where: str) -> Path:
    from editagent.eval.mquake import DatasetUnavailable, resolve_source  # noqa: PLC0415

    try:
        return resolve_source(name.removesuffix(".json"))
    except DatasetUnavailable as error:
        raise DataUnavailable(f"data: {name} is neither in {where}: {error}; or set {DATA_ENV} to a folder that "
                              "holds it") from None


def dev_cases_json(full: list[dict[str, object]]) -> bytes:
    """The dev split of a full MQuAKE-CF-3k list, as the shipped ``MQuAKE-CF-3k-dev600.json`` is written."""
    dev = [case for case in full if int(case["case_id"]) % DEV_EVERY == 0]  # type: ignore[call-overload]
    return json.dumps(sorted(dev, key=lambda case: int(case["case_id"])), indent=2).encode()  # type: ignore[call-overload]


def _dev_cases(_: str) -> bytes:
    full = json.loads(data_file("MQuAKE-CF-3k.json").read_text(encoding="utf-8"))
    return dev_cases_json(full)


def _conflicted(_: str) -> bytes:
    from editagent.eval.mquake import conflicted_case_ids, load_mquake  # noqa: PLC0415

    return json.dumps(sorted(conflicted_case_ids(load_mquake(data_file(MQUAKE_DEV))))).encode()


def _scope_pairs(_: str) -> bytes:
    from editagent.eval.mquake import _fetch  # noqa: PLC0415 - the one HTTP helper of the loaders

    payload = _fetch(POKEMQA_URL)
    digest = hashlib.sha256(payload).hexdigest()
    if digest != POKEMQA_SHA256:
        raise ConnectionError(f"{POKEMQA_URL} returned a file with sha256 {digest}, not the known {POKEMQA_SHA256}")
    return payload


_FETCHERS: dict[str, Callable[[str], bytes]] = {MQUAKE_DEV: _dev_cases, CONFLICTED: _conflicted,
                                                 SCOPE_PAIRS: _scope_pairs}


def write_atomically(target: Path, payload: bytes) -> None:
    """Write ``payload`` to ``target`` through a temporary file renamed over it: a reader never sees half a file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(payload)
        os.replace(partial, target)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
