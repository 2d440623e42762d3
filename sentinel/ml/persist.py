"""Model files: skops, never pickle; refused unless every check passes.

A model file is a skops archive of plain data:

``{"format", "format_version", "metadata", "baseline", "report", "scorers", "integrity"}``

``scorers`` is itself a skops archive (bytes) of the fitted ``WindowScorer``s; ``integrity``
is a SHA-256 of the canonical JSON of everything else plus those bytes, or an HMAC-SHA256 when
a key is given (``SENTINEL_ML_KEY``, or ``key=``).

Loading refuses, with one clear message each:

- a file that is not a skops archive, or whose outer object holds anything but plain data;
- another format or format version;
- a digest that does not match (a modified or truncated file); a keyed model without the
  key, or an unkeyed model when a key is set (a swapped file);
- a feature schema other than the code's (``sentinel.ml.features.SCHEMA``);
- a scikit-learn major.minor version other than the installed one (scikit-learn does not
  promise that fitted models survive across versions);
- any type in the scorers beyond plain scikit-learn/numpy types and the three Sentinel allows
  (``WindowScorer``, ``WindowFeatures`` and ``sklearn.tree._tree.Tree``); trees are trusted
  only after ``scorer.validate_forest`` checked every node index (skops flags them because
  scikit-learn reads node arrays without bounds checks).

The digest is an integrity check against corruption and careless edits; it is not a
signature unless a key is used, since anyone who can write the file can recompute a plain
SHA-256. Protect model files like configuration.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import platform
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from sentinel import __version__
from sentinel.errors import Location, SentinelError
from sentinel.ml.model import FORMAT, FORMAT_VERSION, Model

KEY_ENV = "SENTINEL_ML_KEY"
ALLOWED_TYPES = frozenset(
    {
        "sentinel.ml.scorer.WindowScorer",
        "sentinel.ml.features.WindowFeatures",
        "sklearn.tree._tree.Tree",
    }
)


def library_versions() -> dict[str, str]:
    import numpy
    import scipy
    import sklearn
    import skops

    return {
        "sentinel": __version__,
        "python": platform.python_version(),
        "scikit-learn": sklearn.__version__,
        "skops": skops.__version__,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
    }


def _key(key: bytes | str | None) -> bytes | None:
    if key is None:
        env = os.environ.get(KEY_ENV)
        key = env if env else None
    if key is None:
        return None
    return key.encode() if isinstance(key, str) else key


def _canonical(content: dict[str, Any]) -> bytes:
    head = {k: content[k] for k in ("format", "format_version", "metadata", "baseline", "report")}
    return json.dumps(head, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def _digest(content: dict[str, Any], blob: bytes, key: bytes | None) -> dict[str, str]:
    data = _canonical(content) + b"\0" + blob
    if key is not None:
        return {"algorithm": "hmac-sha256", "digest": hmac.new(key, data, "sha256").hexdigest()}
    return {"algorithm": "sha256", "digest": hashlib.sha256(data).hexdigest()}


def dumps_model(model: Model, key: bytes | str | None = None) -> bytes:
    import skops.io as sio

    blob = sio.dumps(model.scorers)
    content: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "metadata": model.metadata,
        "baseline": model.baseline,
        "report": model.report,
    }
    try:
        content["integrity"] = _digest(content, blob, _key(key))
    except ValueError as exc:  # NaN or infinity in the baseline: a bug, not user input
        raise ValueError(f"model content is not plain JSON data: {exc}") from None
    content["scorers"] = blob
    return bytes(sio.dumps(content))


def save_model(model: Model, path: str | os.PathLike[str], key: bytes | str | None = None) -> None:
    """Write ``model`` to ``path`` atomically (a temporary file renamed into place)."""
    data = dumps_model(model, key)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".model-", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_model(path: str | os.PathLike[str], key: bytes | str | None = None) -> Model:
    """Read and check a model file (see the module docstring); errors name the file."""
    name = os.fspath(path)
    try:
        data = Path(name).read_bytes()
    except OSError as exc:
        raise SentinelError(f"cannot read model: {exc.strerror}", Location(name)) from None
    return loads_model(data, key, name)


def loads_model(data: bytes, key: bytes | str | None = None, name: str = "<model>") -> Model:
    import skops.io as sio

    where = Location(name)

    def refuse(message: str) -> SentinelError:
        return SentinelError(f"model refused: {message}", where)

    if not zipfile.is_zipfile(_BytesFile(data)):
        raise refuse("not a Sentinel model file (not a skops archive)")
    try:
        untrusted = sio.get_untrusted_types(data=data)
    except Exception as exc:  # any malformed archive
        raise refuse(f"unreadable skops archive ({type(exc).__name__}: {exc})") from None
    if untrusted:
        raise refuse(f"the file holds types that are not plain data: {', '.join(untrusted)}")
    try:
        content = sio.loads(data)
    except Exception as exc:
        raise refuse(f"unreadable skops archive ({type(exc).__name__}: {exc})") from None
    if not isinstance(content, dict) or content.get("format") != FORMAT:
        raise refuse("not a Sentinel model file")
    if content.get("format_version") != FORMAT_VERSION:
        raise refuse(
            f"format version {content.get('format_version')!r}; this Sentinel reads version "
            f"{FORMAT_VERSION} (retrain with `sentinel model train`)"
        )
    for field in ("metadata", "baseline", "report", "integrity", "scorers"):
        if field not in content:
            raise refuse(f"missing {field}")
    blob = content["scorers"]
    integrity = content["integrity"]
    if not isinstance(blob, bytes) or not isinstance(integrity, dict):
        raise refuse("malformed scorers or integrity")
    k = _key(key)
    algorithm = integrity.get("algorithm")
    if algorithm == "hmac-sha256" and k is None:
        raise refuse(f"the model is keyed (HMAC); set {KEY_ENV} to load it")
    if algorithm == "sha256" and k is not None:
        raise refuse(f"{KEY_ENV} is set but the model is not keyed: expected an HMAC")
    if algorithm not in ("sha256", "hmac-sha256"):
        raise refuse(f"unknown integrity algorithm {algorithm!r}")
    try:
        expected = _digest(content, blob, k)["digest"]
    except (ValueError, TypeError) as exc:
        raise refuse(f"malformed content ({exc})") from None
    if not hmac.compare_digest(expected, str(integrity.get("digest", ""))):
        raise refuse("integrity check failed: the file was modified or damaged")
    metadata = content["metadata"]
    _check_schema(metadata, refuse)
    _check_versions(metadata, refuse)
    scorers = _load_scorers(blob, metadata, refuse)
    model = Model(metadata, content["baseline"], scorers, content["report"])
    try:
        model.settings  # noqa: B018 - validates the stored training settings
    except Exception as exc:
        raise refuse(f"invalid training settings ({exc})") from None
    return model


class _BytesFile:
    """``zipfile.is_zipfile`` wants a file object."""

    def __init__(self, data: bytes) -> None:
        import io

        self._io = io.BytesIO(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._io, name)


def _check_schema(metadata: dict[str, Any], refuse: Any) -> None:
    from sentinel.ml.features import SCHEMA

    schema = metadata.get("feature_schema")
    if schema == SCHEMA:
        return
    if not isinstance(schema, dict):
        raise refuse(f"no feature schema (found {schema!r}); retrain the model")
    diff = [
        f"{part} {schema.get(part)!r} here {SCHEMA[part]!r}"
        for part in ("version", "raw", "features")
        if schema.get(part) != SCHEMA[part]
    ]
    raise refuse(
        "its feature schema differs from this Sentinel's (model "
        + "; ".join(diff)
        + "); retrain the model"
    )


def _check_versions(metadata: dict[str, Any], refuse: Any) -> None:
    import sklearn

    trained = str(metadata.get("versions", {}).get("scikit-learn", "?"))
    if trained.split(".")[:2] != sklearn.__version__.split(".")[:2]:
        raise refuse(
            f"trained with scikit-learn {trained}, but {sklearn.__version__} is installed "
            "(fitted models are not portable across scikit-learn versions); retrain the model"
        )


def _load_scorers(blob: bytes, metadata: dict[str, Any], refuse: Any) -> dict[str, Any]:
    import numpy as np
    import skops.io as sio
    from sklearn.ensemble import IsolationForest

    from sentinel.ml.features import NFEAT, WindowFeatures
    from sentinel.ml.scorer import WindowScorer, validate_forest
    from sentinel.ml.window import NRAW

    try:
        untrusted = sio.get_untrusted_types(data=blob)
    except Exception as exc:
        raise refuse(f"unreadable scorers ({type(exc).__name__}: {exc})") from None
    unknown = sorted(set(untrusted) - ALLOWED_TYPES)
    if unknown:
        raise refuse(f"the scorers hold types Sentinel does not load: {', '.join(unknown)}")
    try:
        scorers = sio.loads(blob, trusted=sorted(untrusted))
    except Exception as exc:
        raise refuse(f"unreadable scorers ({type(exc).__name__}: {exc})") from None
    if not isinstance(scorers, dict):
        raise refuse("scorers are not a mapping")
    estimator = metadata.get("settings", {}).get("estimator", "isolation_forest")
    for key, scorer in scorers.items():
        what = f"scorer {key!r}"
        if not isinstance(key, str) or key.count("|") != 2:
            raise refuse(f"{what}: bad channel key")
        if not isinstance(scorer, WindowScorer) or scorer.estimator != estimator:
            raise refuse(f"{what}: not a {estimator} WindowScorer")
        try:
            feats = scorer.features_
            arrays = (
                scorer.low_,
                scorer.high_,
                scorer.median_,
                scorer.q_lo_,
                scorer.q_hi_,
                scorer.scaler_.center_,
                scorer.scaler_.scale_,
                feats.fill_,
            )
            if not isinstance(feats, WindowFeatures) or scorer.n_features_in_ != NRAW:
                raise ValueError("feature transformer")
            for a in arrays:
                if np.asarray(a).shape != (NFEAT,) or not np.all(np.isfinite(a)):
                    raise ValueError("feature arrays")
            if not (np.isfinite(scorer.threshold_) and feats.ref_ia_ > 0 and feats.ref_lat_ > 0):
                raise ValueError("threshold or references")
            est = scorer.estimator_
            if getattr(est, "n_features_in_", None) != NFEAT:
                raise ValueError("estimator input size")
            if isinstance(est, IsolationForest):
                validate_forest(est)
            elif estimator == "isolation_forest":
                raise ValueError("estimator type")
        except (AttributeError, ValueError, TypeError) as exc:
            raise refuse(f"{what}: invalid ({exc})") from None
    return scorers
