"""Model files: skops round trips, and every kind of tampered or foreign file refused with a
clear message (never loaded, never a traceback)."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skops.io as sio

from sentinel.errors import SentinelError
from sentinel.ml import persist
from sentinel.ml.model import Model
from sentinel.ml.persist import KEY_ENV, dumps_model, load_model, loads_model, save_model

from .helpers import T0, Poller, baseline_model, engine, feed
from .test_features import typical


class Evil:
    """A type no model file may hold."""

    def __init__(self) -> None:
        self.payload = "os.system('reboot')"


@pytest.fixture(scope="module")
def model() -> Model:
    m, _ = baseline_model(seconds=3600, scorers=True)
    for scorer in m.scorers.values():
        scorer.calibrate(typical(100), 1 / 24, 360)
    return m


@pytest.fixture(autouse=True)
def no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)


def content(data: bytes) -> dict[str, Any]:
    return sio.loads(data)


def repack(c: dict[str, Any], key: bytes | None = None) -> bytes:
    """Re-dump modified content with a digest that matches it (a careful forger)."""
    c = dict(c)
    blob = c.pop("scorers")
    c.pop("integrity", None)
    c["integrity"] = persist._digest(c, blob, key)
    c["scorers"] = blob
    return bytes(sio.dumps(c))


def refused(data: bytes, match: str, key: bytes | None = None) -> None:
    with pytest.raises(SentinelError, match=match) as info:
        loads_model(data, key, "m.model")
    assert str(info.value).startswith("m.model: model refused: ")
    assert "\n" not in str(info.value)


def test_round_trip(model: Model, tmp_path: Path) -> None:
    path = tmp_path / "a" / "m.model"
    save_model(model, path)
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".model-")]
    back = load_model(path)
    assert back.metadata == model.metadata
    assert back.baseline == model.baseline and back.report == model.report
    assert back.settings == model.settings
    (key,) = model.scorers
    X = typical(50, seed=8)
    assert np.array_equal(back.scorers[key].score_samples(X), model.scorers[key].score_samples(X))
    assert back.scorers[key].threshold_ == model.scorers[key].threshold_
    # and it scores traffic the same way
    events = list(Poller().run(T0 + 9000, 300))
    a, b = feed(engine(model), events), feed(engine(back), events)
    assert [f.id for f in a] == [f.id for f in b]
    # the baseline is readable data in the archive, not an opaque blob
    with zipfile.ZipFile(path) as z:
        assert "schema.json" in z.namelist()


def test_not_a_model(tmp_path: Path) -> None:
    refused(b"name: not a model\n", "not a skops archive")
    refused(bytes(sio.dumps({"format": "something-else"})), "not a Sentinel model file")
    with pytest.raises(SentinelError, match="cannot read model"):
        load_model(tmp_path / "missing.model")


def test_modified_bytes_fail_the_integrity_check(model: Model) -> None:
    data = dumps_model(model)
    c = content(data)
    c["baseline"]["pairs"].append("198.51.100.66|192.0.2.20")  # let a rogue host in
    forged = bytes(sio.dumps(c))  # digest left as it was
    refused(forged, "integrity check failed")
    c = content(data)
    c["scorers"] = c["scorers"][:-200] + bytes(200)  # damaged scorers
    refused(bytes(sio.dumps(c)), "integrity check failed")
    cut = data[: len(data) // 2]
    with pytest.raises(SentinelError, match="model refused"):
        loads_model(cut, None, "m.model")


def test_foreign_types_are_refused(model: Model) -> None:
    data = dumps_model(model)
    c = content(data)
    c["metadata"]["extra"] = Evil()
    refused(bytes(sio.dumps(c)), r"not plain data: (tests\.)?ml\.test_persist\.Evil")
    c = content(data)
    scorers = sio.loads(c["scorers"], trusted=sio.get_untrusted_types(data=c["scorers"]))
    scorers["x|y|1"] = Evil()
    c["scorers"] = sio.dumps(scorers)
    refused(repack(c), r"types Sentinel does not load: (tests\.)?ml\.test_persist\.Evil")


def test_schema_and_versions_must_match(model: Model) -> None:
    c = content(dumps_model(model))
    c["metadata"]["feature_schema"] = {**c["metadata"]["feature_schema"], "version": 99}
    refused(repack(c), "feature schema differs .* retrain the model")
    c = content(dumps_model(model))
    c["metadata"]["versions"]["scikit-learn"] = "0.24.2"
    refused(repack(c), "trained with scikit-learn 0.24.2")
    c = content(dumps_model(model))
    c["format_version"] = 2
    refused(repack(c), "format version 2")


def test_trees_are_checked_before_use(model: Model) -> None:
    c = content(dumps_model(model))
    blob = c["scorers"]
    scorers = sio.loads(blob, trusted=sio.get_untrusted_types(data=blob))
    (scorer,) = scorers.values()
    tree = scorer.estimator_.estimators_[0].tree_
    state = tree.__getstate__()
    nodes = state["nodes"].copy()
    nodes["right_child"][np.flatnonzero(nodes["left_child"] != -1)[0]] = 123_456_789
    state["nodes"] = nodes
    tree.__setstate__(state)
    c["scorers"] = sio.dumps(scorers)
    refused(repack(c), "invalid .*child index")


def test_keyed_models(model: Model, monkeypatch: pytest.MonkeyPatch) -> None:
    data = dumps_model(model, key="s3cret")
    assert content(data)["integrity"]["algorithm"] == "hmac-sha256"
    refused(data, f"keyed .*set {KEY_ENV}")
    refused(data, "integrity check failed", key=b"wrong")
    assert loads_model(data, "s3cret").baseline == model.baseline
    monkeypatch.setenv(KEY_ENV, "s3cret")
    assert loads_model(data).baseline == model.baseline
    # with a key set, a plain (unkeyed) file is a swapped file
    refused(_plain(model), "expected an HMAC")
    # a forger without the key cannot produce a file that loads
    c = content(data)
    c["baseline"]["pairs"].append("198.51.100.66|192.0.2.20")
    refused(repack(c, key=b"guess"), "integrity check failed")


def _plain(model: Model) -> bytes:
    """An unkeyed file, written while no key is set."""
    import os

    saved = os.environ.pop(KEY_ENV, None)
    try:
        return dumps_model(model)
    finally:
        if saved is not None:
            os.environ[KEY_ENV] = saved
