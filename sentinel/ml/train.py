"""``sentinel model train``: captures in, a calibrated model out.

1. The captures are put on one timeline (by their first packet; captures that overlap in time
   are refused: a baseline needs one history). The last ``calibration_fraction`` of the time
   (at least ``min_calibration_minutes``) is the *calibration window*; everything before it
   is the *training window*. Time-ordered, never shuffled: calibration data is later than
   training data, as tomorrow's traffic will be.
2. One pass of the real pipeline over each capture. Events of the training window go to the
   ``Learner`` (tier-1 baseline, raw windows). At the first event of the calibration window
   the baseline is built and the tier-2 scorers are fitted, for every channel with at least
   ``min_windows`` active training windows. From then on events go to an ``Engine`` with the
   fresh model: its tier-1 findings and its raw windows are collected.
3. Calibration: each scorer's threshold is set from its calibration windows
   (``WindowScorer.calibrate``) for ``false_alarms_per_day`` per channel; a tier-1 check
   that fired on the clean calibration window is disarmed on that channel (or register), and
   the report says so. New talkers in the calibration window cannot be disarmed: they are
   reported as a warning that the training window was too short.
4. The model gets its metadata (versions, feature schema, settings, windows, a SHA-256 of the
   captures) and the data-sufficiency report, and is written with skops.

Memory stays bounded by the baseline and the training windows; the calibration window is
streamed, never buffered.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from sentinel.capture.pcapfile import CaptureFile
from sentinel.config import Config
from sentinel.errors import Location, SentinelError
from sentinel.events import Anomaly, ModbusMessage
from sentinel.findings import Finding
from sentinel.ml import rules as R
from sentinel.ml.baseline import Learner, key_text
from sentinel.ml.engine import Engine
from sentinel.ml.features import SCHEMA
from sentinel.ml.model import FORMAT_VERSION, Model
from sentinel.ml.persist import library_versions
from sentinel.ml.scorer import MIN_CALIBRATION_WINDOWS, WindowScorer
from sentinel.ml.settings import MLSettings, MLTrainSettings
from sentinel.ml.tracker import ChannelState
from sentinel.pipeline.detector import Detector

log = logging.getLogger(__name__)
MAX_CALIBRATION_FINDINGS = 100_000  # findings on clean data kept to disarm checks
Progress = Callable[[str], None]


@dataclass
class CaptureInfo:
    path: str
    first: float
    last: float
    packets: int
    sha256: str


Windows = list[tuple[float, float]]


def _inside(ts: float, windows: Windows | None) -> bool:
    return windows is None or any(a <= ts <= b for a, b in windows)


def packets(path: str, windows: Windows | None = None) -> Iterator[tuple[float, int, bytes]]:
    """A capture's packets, only those inside ``windows`` (epoch seconds) if given."""
    with CaptureFile(path) as cap:
        for packet in cap:
            if _inside(packet[0], windows):
                yield packet


def capture_info(path: str, windows: Windows | None = None) -> CaptureInfo:
    """First and last packet time, packet count (inside ``windows`` if given) and SHA-256 of
    a capture file."""
    first = last = None
    count = 0
    with CaptureFile(path) as cap:
        for ts, _lt, _frame in cap:
            if not _inside(ts, windows):
                continue
            count += 1
            if first is None:
                first = ts
            last = ts if last is None or ts > last else last
    if first is None or last is None:
        where = " inside the approved windows" if windows is not None else ""
        raise SentinelError(f"capture holds no packets{where}", Location(path))
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return CaptureInfo(path, first, last, count, h.hexdigest())


def plan(infos: list[CaptureInfo], s: MLTrainSettings) -> tuple[float, float, float]:
    """(start, split, end): the training window is [start, split), calibration [split, end]."""
    ordered = sorted(infos, key=lambda i: i.first)
    for a, b in itertools.pairwise(ordered):
        if b.first < a.last:
            raise SentinelError(
                f"captures overlap in time ({a.path} and {b.path}); a baseline needs one "
                "timeline (synthesise with `sentinel lab synth --start`)"
            )
    start, end = ordered[0].first, max(i.last for i in ordered)
    span = end - start
    calibration = max(s.calibration_fraction * span, 60.0 * s.min_calibration_minutes)
    if calibration >= 0.8 * span:
        raise SentinelError(
            f"{span / 3600:.2f} h of traffic is too little to train and calibrate "
            f"(calibration alone needs {calibration / 3600:.2f} h); give more captures"
        )
    return start, end - calibration, end


class _CalibrationEngine(Engine):
    """An engine that keeps its findings and raw windows for calibration."""

    def __init__(self, model: Model, settings: MLSettings) -> None:
        super().__init__(model, settings)
        self.raw_windows: dict[tuple, list[list[float]]] = defaultdict(list)

    def windows(self, closed: list[tuple[ChannelState, list[float]]], t_end: float) -> Any:
        for ch, raw in closed:
            self.raw_windows[ch.key].append(raw)
        return None


class _Tap(Detector):
    """Routes the pipeline's events to the learner, then (calibration window) the engine."""

    id = "ml_training_tap"

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.clock = 0.0

    def _target(self, ts: float) -> Any:
        if ts > self.clock:
            self.clock = ts
        t = self.trainer
        if self.clock < t.split:
            return t.learner
        if t.engine is None:
            t.switch()
        return t.engine

    def _keep(self, found: Iterable[Finding] | None) -> None:
        kept = self.trainer.calibration_findings
        if found and self.trainer.engine is not None and len(kept) < MAX_CALIBRATION_FINDINGS:
            kept.extend(found)

    def on_modbus(self, msg: ModbusMessage) -> None:
        self._keep(self._target(msg.ts).modbus(msg))

    def on_anomaly(self, event: Anomaly) -> None:
        self._keep(self._target(event.ts).anomaly(event))

    def on_flow_end(self, flow: dict) -> None:
        self._keep(self._target(self.clock).flow_end(flow))

    def on_tick(self, now: float) -> None:
        self._keep(self._target(now).tick(now))


class Trainer:
    """One training run (see the module docstring)."""

    def __init__(
        self,
        config: Config,
        settings: MLSettings,
        captures: list[str],
        progress: Progress | None = None,
        windows: Windows | None = None,
    ) -> None:
        self.config = config
        self.windows = windows
        self.settings = settings
        self.train = settings.train
        self.captures = captures
        self.progress = progress or (lambda _msg: None)
        self.engine: _CalibrationEngine | None = None
        self.model: Model | None = None
        self.calibration_findings: list[Finding] = []
        self.infos: list[CaptureInfo] = []
        self.start = self.split = self.end = 0.0

    def run(self) -> Model:
        from sentinel.pipeline import Pipeline

        self.infos = sorted(
            (capture_info(p, self.windows) for p in self.captures), key=lambda i: i.first
        )
        self.start, self.split, self.end = plan(self.infos, self.train)
        self.learner = Learner(
            self.train, (self.start + self.split) / 2.0, self.settings.max_channels
        )
        for info in self.infos:
            self.progress(f"reading {info.path}")
            with tempfile.TemporaryDirectory(prefix="sentinel-train-") as tmp:
                pipeline = Pipeline(self.config, tmp, [_Tap(self)])
                if self.windows is None:
                    pipeline.run(info.path)
                else:  # only what the operator approved as normal
                    pipeline.run_packets(packets(info.path, self.windows))
            self.learner.reset_streams()
            if self.engine is not None:
                self.engine.reset_streams()
        if self.engine is None:  # no event in the calibration window
            raise SentinelError("no traffic in the calibration window; give more captures")
        assert self.model is not None
        self._calibrate(self.model, self.engine)
        return self.model

    # ------------------------------------------------------------------ fitting
    def switch(self) -> None:
        """The training window is over: build the baseline, fit the scorers."""
        self.progress("fitting")
        baseline = self.learner.build(_limits(self.config), _declared(self.config))
        s = self.train
        scorers: dict[str, WindowScorer] = {}
        for key, lc in sorted(self.learner.learn.items()):
            ktext = key_text(*key)
            data = baseline["channels"][ktext]
            X = np.array(lc.windows, dtype=np.float64) if lc.windows else np.zeros((0, 16))
            if data["windows"] < s.min_windows:
                data["notes"]["scorer"] = (
                    f"no tier-2 scorer: {data['windows']} active training windows "
                    f"(at least {s.min_windows} needed)"
                )
                continue
            scorer = WindowScorer(
                estimator=s.estimator,
                n_estimators=s.n_estimators,
                max_samples=s.max_samples,
                n_neighbors=s.n_neighbors,
                random_state=s.random_state,
                window_seconds=s.window_seconds,
                margin=s.value_margin,
            ).fit(X)
            scorers[ktext] = scorer
            data["scorer"] = True
        metadata = {
            "format_version": FORMAT_VERSION,
            "versions": library_versions(),
            "feature_schema": SCHEMA,
            "settings": s.model_dump(mode="json"),
            "training_window": [self.start, self.split],
            "calibration_window": [self.split, self.end],
            "captures": [
                {
                    "name": os.path.basename(i.path),
                    "sha256": i.sha256,
                    "first": i.first,
                    "last": i.last,
                    "packets": i.packets,
                }
                for i in self.infos
            ],
            "data_sha256": hashlib.sha256(
                "".join(i.sha256 for i in self.infos).encode()
            ).hexdigest(),
        }
        self.model = Model(metadata, baseline, scorers, {})
        self.engine = _CalibrationEngine(self.model, self.settings)

    # ------------------------------------------------------------------ calibration
    def _calibrate(self, model: Model, engine: _CalibrationEngine) -> None:
        s = self.train
        hours = max((self.end - self.split) / 3600.0, 1e-9)
        target = s.false_alarms_per_day / 24.0
        windows_per_hour = 3600.0 / s.hop_seconds
        channels = model.baseline["channels"]
        calibration: dict[str, Any] = {}
        for ktext in sorted(model.scorers):
            scorer = model.scorers[ktext]
            client, server, unit = ktext.split("|")
            X = np.array(engine.raw_windows.get((client, server, int(unit)), []))
            data = channels[ktext]
            if len(X) < MIN_CALIBRATION_WINDOWS:
                del model.scorers[ktext]
                data["scorer"] = False
                data["notes"]["scorer"] = (
                    f"no tier-2 scorer: {len(X)} calibration windows (at least "
                    f"{MIN_CALIBRATION_WINDOWS} needed)"
                )
                continue
            scorer.calibrate(X, target, windows_per_hour)
            alerts = _debounced_alerts(scorer, X, s.debounce_k, s.debounce_n)
            calibration[ktext] = {**scorer.calibration_, "debounced_alerts": alerts}
        disarmed, warnings = disarm(model, self.calibration_findings)
        model.report = _report(model, calibration, disarmed, warnings, hours, s)


def disarm(model: Model, findings: list[Finding]) -> tuple[list[dict[str, Any]], list[str]]:
    """Disarm the tier-1 checks that fired on the clean calibration window.

    A channel check (function, address, sequence, latency) is disarmed on that channel,
    or on the server for the server-wide reference of unknown channels; a register check
    on that register (a written value widens its envelope). Anything else (a new talker,
    a check about something the baseline does not have) becomes a warning: the training
    window did not see it, and it needs a longer one."""
    b = model.baseline
    channels, servers, registers = b["channels"], b.get("servers", {}), b["registers"]
    counts: Counter[tuple[str, str, str]] = Counter()  # (scope, key, check)
    warnings: list[str] = []
    for f in findings:
        ev = f.evidence
        check = str(ev.get("check"))
        ch = ev.get("channel")
        if check in ("function", "address", "sequence", "latency") and ch:
            if ev.get("scope") == "server":
                key = key_text(ch["server"], ch["unit"])
                if key in servers:
                    counts[("server", key, check)] += 1
                    continue
            else:
                key = key_text(ch["client"], ch["server"], ch["unit"])
                if key in channels:
                    counts[("channel", key, check)] += 1
                    continue
        elif check in ("range", "rate", "counter", "constant", "provenance", "write_value"):
            reg = ev["register"]
            rkey = key_text(reg["server"], reg["unit"], reg["table"], reg["address"])
            data = registers.get(rkey)
            if data is not None and (check != "write_value" or "write_envelope" in data):
                counts[("register", rkey, check)] += 1
                if check == "write_value":
                    lo, hi = data["write_envelope"]
                    v = float(ev["value"])
                    data["write_envelope"] = [min(lo, v), max(hi, v)]
                continue
        warnings.append(f"{f.rule_name}: {f.message}")
    disarmed = []
    for (scope, key, check), n in sorted(counts.items()):
        note = f"disarmed by calibration: {n} alarm(s) on the clean calibration window"
        if scope in ("channel", "server"):
            target = channels[key] if scope == "channel" else servers[key]
            target["armed"][check] = False
            target["notes"][check] = note
        else:
            reg = registers[key]
            if check == "range" and reg["class"] == "analog":
                reg["range_armed"] = False
            elif check == "range":
                reg.pop("write_envelope", None)
                reg["write_envelope_from"] = None
            elif check == "write_value":
                note = "envelope widened by calibration to a value written there"
            else:
                reg["class"] = "varying"
            reg["note"] = note
        disarmed.append({"scope": scope, "key": key, "check": check, "alarms": n, "note": note})
    return disarmed, warnings


def _debounced_alerts(scorer: WindowScorer, X: np.ndarray, k: int, n: int) -> int:
    """How many alerts the calibrated scorer would raise over consecutive windows ``X``."""
    bad = scorer.predict(X) == -1
    alerts, episode, recent = 0, False, []
    for b in bad:
        recent = ([*recent, bool(b)])[-n:]
        hits = sum(recent)
        if hits == 0:
            episode = False
        elif hits >= k and not episode:
            episode = True
            alerts += 1
    return alerts


def _declared(config: Config) -> set[tuple[str, str]]:
    """The config's (allowed master, device) pairs."""
    return {(m, a.address) for a in config.assets for m in a.allowed_masters}


def _limits(config: Config) -> dict[tuple[str, str, int], tuple[int, int]]:
    """The config's safe limits of writable registers: (asset, table, address) -> (min, max)."""
    out: dict[tuple[str, str, int], tuple[int, int]] = {}
    for asset in config.assets:
        for r in asset.registers:
            if r.min is None or r.max is None:
                continue
            for a in range(r.start, min(r.end, r.start + 4096) + 1):
                out[(asset.address, r.table, a)] = (r.min, r.max)
    return out


def _report(
    model: Model,
    calibration: dict[str, Any],
    disarmed: list[dict[str, Any]],
    warnings: list[str],
    calibration_hours: float,
    s: MLTrainSettings,
) -> dict[str, Any]:
    b = model.baseline
    rows = []
    for ktext, data in sorted(b["channels"].items()):
        rows.append(
            {
                "channel": ktext,
                "requests": data["requests"],
                "training_windows": data["windows"],
                "enough_windows": data["windows"] >= s.min_windows,
                "scorer": ktext in model.scorers,
                "armed": dict(data["armed"]),
                "notes": dict(data["notes"]),
                "calibration": calibration.get(ktext),
                "period": data.get("period"),
            }
        )
    classes = Counter(r["class"] for r in b["registers"].values())
    return {
        "training_hours": b["hours"],
        "calibration_hours": round(calibration_hours, 6),
        "channels": rows,
        "registers": dict(sorted(classes.items())),
        "disarmed": disarmed,
        "warnings": warnings[:100],
        "target_false_alarms_per_day": s.false_alarms_per_day,
        "rules": {str(r.sid): r.name for r in R.RULES},
    }


def train_model(
    captures: list[str],
    config: Config,
    settings: MLSettings,
    progress: Progress | None = None,
    windows: Windows | None = None,
) -> Model:
    """Train and calibrate a model on ``captures`` (see the module docstring); with
    ``windows`` (epoch seconds), on their packets inside those windows only."""
    if not captures:
        raise SentinelError("no capture to train on")
    model = Trainer(config, settings, list(captures), progress, windows).run()
    if windows is not None:
        model.metadata["approved_windows"] = [list(w) for w in windows]
    return model
