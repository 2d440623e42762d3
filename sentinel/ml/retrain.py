"""Retraining from operator-approved windows: what the scheduler's ``model.retrain`` job runs.

``run_retrain(config, windows, options, dry_run=False)`` retrains the model from the packets
of ``options["captures"]`` (capture files, or directories of them) that fall inside the
approved ``windows`` (``[{"start", "end", "approved_by"}]``, ISO 8601 times or epoch
seconds), and only those: traffic nobody vouched for never becomes normal. A window is
approved when it names who approved it (``approved_by``, not blank) and has ended: nobody
can vouch for traffic not yet seen, so a window reaching into the future is refused rather
than let a scheduled retraining learn whatever comes. The new model is written to
``options["out"]`` (default: the config's ``detectors.ml.model``) atomically; a copy of the
model it replaces is kept beside it as ``<model>.previous``. With ``dry_run`` nothing is
trained or written: the report says what would be.

Returns a plain dict for the job's detail: the model path, the windows and who approved them,
captures and packets used, the training and calibration hours, channels and scorers, and the
training report's warnings.
"""

from __future__ import annotations

import os
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sentinel.errors import SentinelError

CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap", ".pcap.gz", ".pcapng.gz")


def _epoch(value: Any) -> float:
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise SentinelError(f"not a time: {text!r} (ISO 8601 or epoch seconds)") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _captures(spec: Any) -> list[str]:
    items = [spec] if isinstance(spec, str | os.PathLike) else list(spec or [])
    out: list[str] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            out += sorted(
                str(f) for f in p.iterdir() if f.is_file() and f.name.endswith(CAPTURE_SUFFIXES)
            )
        elif p.is_file():
            out.append(str(p))
        else:
            raise SentinelError(f"no such capture or directory: {item}")
    if not out:
        raise SentinelError("retraining needs options.captures: capture files or directories")
    return out


def approved_spans(windows: list[dict[str, Any]], now: float) -> list[tuple[float, float]]:
    """The windows as epoch-second spans; refuses one that is not approved (see the module
    docstring), empty, or not over at ``now``."""
    if not windows:
        raise SentinelError("retraining needs at least one approved window")
    spans = []
    for w in windows:
        if not str(w.get("approved_by") or "").strip():
            raise SentinelError(f"window not approved (no approved_by): {w}")
        start, end = _epoch(w["start"]), _epoch(w["end"])
        if end <= start:
            raise SentinelError(f"approved window ends before it starts: {w}")
        if end > now:
            raise SentinelError(
                f"approved window has not ended yet: {w} (nobody can vouch for traffic not "
                "yet seen)"
            )
        spans.append((start, end))
    return spans


def run_retrain(
    config: Any,
    windows: list[dict[str, Any]],
    options: dict[str, Any],
    dry_run: bool = False,
    now: float | None = None,
) -> dict[str, Any]:
    """Retrain from the approved windows (see the module docstring)."""
    from sentinel.ml.settings import ml_settings
    from sentinel.ml.train import capture_info, plan, train_model

    settings = ml_settings(config)
    spans = approved_spans(windows, time.time() if now is None else now)
    out = options.get("out") or settings.model
    if not out:
        raise SentinelError("retraining needs options.out or detectors.ml.model: where to write")
    captures = _captures(options.get("captures"))
    usable = []
    for path in captures:
        try:
            usable.append(capture_info(path, spans))
        except SentinelError:
            continue  # nothing of it inside the approved windows
    if not usable:
        raise SentinelError("no captured packet falls inside the approved windows")
    start, split, end = plan(usable, settings.train)
    report: dict[str, Any] = {
        "model": str(out),
        "windows": [
            {"start": a, "end": b, "approved_by": w.get("approved_by")}
            for (a, b), w in zip(spans, windows, strict=True)
        ],
        "captures": [os.path.basename(i.path) for i in usable],
        "packets": sum(i.packets for i in usable),
        "training_window": [start, split],
        "calibration_window": [split, end],
    }
    if dry_run:
        report["dry_run"] = True
        return report
    from sentinel.ml.persist import save_model

    model = train_model([i.path for i in usable], config, settings, windows=spans)
    target = Path(out)
    if target.exists():  # a copy: the current model stays in place until the new one is
        previous = target.with_name(target.name + ".previous")
        shutil.copy2(target, previous)
        report["previous"] = str(previous)
    save_model(model, target)  # atomic: a temporary file renamed over the current model
    report.update(
        training_hours=model.report["training_hours"],
        calibration_hours=model.report["calibration_hours"],
        channels=len(model.report["channels"]),
        scorers=len(model.scorers),
        warnings=model.report["warnings"][:20],
    )
    return report
