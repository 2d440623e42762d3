"""Crafted Modbus event streams for the ML tests: an HMI polling a PLC like the lab's does.

The engine consumes decoded events (``ModbusMessage``, ``Anomaly``, flow records, ticks), so
its unit tests feed it events built here rather than packets; the end-to-end tests
(``test_evaluation.py``, ``test_cli.py``) go through real captures and the real pipeline.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sentinel.events import Anomaly, ConnId, ModbusMessage
from sentinel.findings import Finding
from sentinel.ml.baseline import Learner
from sentinel.ml.engine import Engine
from sentinel.ml.model import Model
from sentinel.ml.settings import MLSettings, MLTrainSettings

HMI, ENG, PLC, ROGUE = "192.0.2.10", "192.0.2.11", "192.0.2.20", "192.0.2.66"
T0 = 1_700_000_000.0
FUNC = {
    1: "READ_COILS",
    3: "READ_HOLDING_REGISTERS",
    4: "READ_INPUT_REGISTERS",
    5: "WRITE_SINGLE_COIL",
    6: "WRITE_SINGLE_REGISTER",
    8: "DIAGNOSTICS",
    16: "WRITE_MULTIPLE_REGISTERS",
    43: "ENCAP_INTERFACE_TRANSPORT",
}

Event = tuple[str, Any]  # ("modbus", msg) | ("anomaly", event) | ("flow", record) | ("tick", t)


def conn(client: str = HMI, server: str = PLC, sport: int = 40000) -> ConnId:
    return ConnId(client, sport, server, 502)


def request(
    ts: float, c: ConnId, fc: int, tid: int, unit: int = 1, uid: str = "C1", **fields: Any
) -> ModbusMessage:
    return ModbusMessage(
        ts, uid, c, True, tid, 0, unit, fc, FUNC.get(fc, f"unknown-{fc}"), None, 6, 0, dict(fields)
    )


def response(
    ts: float,
    c: ConnId,
    fc: int,
    tid: int,
    latency: float,
    unit: int = 1,
    uid: str = "C1",
    exception: str | None = None,
    **fields: Any,
) -> ModbusMessage:
    func = FUNC.get(fc, f"unknown-{fc}") + ("_EXCEPTION" if exception else "")
    return ModbusMessage(
        ts, uid, c, False, tid, 0, unit, fc, func, exception, 6, 0, dict(fields), latency
    )


@dataclass
class Plant:
    """The PLC's registers: holding 0-3 setpoints, input 0-3 sensors, input 4 a counter,
    coils 0-1 constant."""

    holding: list[int] = field(default_factory=lambda: [210, 500, 150, 80])
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    counter: int = 1000
    bank: int = 1  # input 5: process data that changes once a day or so

    def inputs(self, t: float) -> list[int]:
        if self.rng.random() < 0.1:
            self.counter += 1
        return [
            int(200 + 5 * self.rng.random()),
            int(480 + 10 * self.rng.random()),
            int(140 + 8 * self.rng.random()),
            int(1900 + 30 * self.rng.random()),
            self.counter,
            self.bank,
        ]


@dataclass
class Poller:
    """An HMI that polls ``PLC`` once a second: input 0-4, holding 0-3, coils 0-1; now and
    then writes a setpoint (FC 6) inside 180-260 on holding 0."""

    plant: Plant = field(default_factory=Plant)
    client: str = HMI
    uid: str = "C1"
    latency: float = 0.0006
    tid: int = 0
    rng: random.Random = field(default_factory=lambda: random.Random(3))
    write_every: int = 120  # cycles
    inputs: int = 5  # input registers read (6: the bank too)
    c: ConnId = field(init=False)

    def __post_init__(self) -> None:
        self.c = conn(self.client)

    def _pair(self, t: float, fc: int, fields: dict[str, Any], values: Any) -> Iterator[Event]:
        self.tid = (self.tid + 1) & 0xFFFF
        lat = self.latency * (0.6 + 0.8 * self.rng.random())
        yield ("modbus", request(t, self.c, fc, self.tid, uid=self.uid, **fields))
        out = dict(fields)
        if values is not None:
            out["values"] = values
        yield ("modbus", response(t + lat, self.c, fc, self.tid, lat, uid=self.uid, **out))

    def cycle(self, t: float, n: int) -> Iterator[Event]:
        p = self.plant
        values = p.inputs(t)[: self.inputs]
        yield from self._pair(t, 4, {"address": 0, "quantity": self.inputs}, values)
        yield from self._pair(t + 0.002, 3, {"address": 0, "quantity": 4}, list(p.holding))
        yield from self._pair(t + 0.004, 1, {"quantity": 2, "address": 0}, [True, True])
        if n and n % self.write_every == 0:
            value = 180 + self.rng.randrange(0, 81)
            p.holding[0] = value
            yield from self._pair(t + 0.006, 6, {"address": 0, "values": [value]}, None)

    def run(self, start: float, seconds: int) -> Iterator[Event]:
        for n in range(seconds):
            t = start + n + 0.001 * self.rng.random()
            yield from self.cycle(t, n)
            yield ("tick", t + 0.5)


def feed(target: Any, events: Iterable[Event]) -> list[Finding]:
    """Feed events to a learner or engine; the findings it returned."""
    out: list[Finding] = []
    for kind, x in events:
        if kind == "modbus":
            found = target.modbus(x)
        elif kind == "anomaly":
            found = target.anomaly(x)
        elif kind == "flow":
            found = target.flow_end(x)
        else:
            found = target.tick(x)
        if found:
            out.extend(found)
    return out


def baseline_model(
    seconds: int = 4 * 3600,
    settings: MLTrainSettings | None = None,
    poller: Poller | None = None,
    limits: dict[tuple[str, str, int], tuple[int, int]] | None = None,
    scorers: bool = False,
) -> tuple[Model, Poller]:
    """A model learned from ``seconds`` of the poller's traffic (and, with ``scorers``,
    tier-2 scorers fitted on its windows, uncalibrated)."""
    from sentinel.ml.features import SCHEMA
    from sentinel.ml.persist import library_versions
    from sentinel.ml.scorer import WindowScorer

    s = settings or MLTrainSettings()
    poller = poller or Poller()
    learner = Learner(s, T0 + seconds / 2)
    feed(learner, poller.run(T0, seconds))
    feed(learner, [("flow", flow(HMI, PLC, T0, T0 + seconds))])
    baseline = learner.build(limits or {(PLC, "holding", 0): (180, 260)})
    fitted = {}
    if scorers:
        for key, lc in learner.learn.items():
            ktext = "|".join(map(str, key))
            fitted[ktext] = WindowScorer(window_seconds=s.window_seconds).fit(lc.windows)
            baseline["channels"][ktext]["scorer"] = True
    metadata = {
        "format_version": 1,
        "versions": library_versions(),
        "feature_schema": SCHEMA,
        "settings": s.model_dump(mode="json"),
        "training_window": [T0, T0 + seconds],
        "calibration_window": [T0 + seconds, T0 + seconds],
        "captures": [],
        "data_sha256": "0" * 64,
    }
    return Model(metadata, baseline, fitted, {"channels": []}), poller


def flow(
    orig: str,
    resp: str,
    start: float,
    end: float,
    port: int = 502,
    sport: int = 40000,
    state: str = "SF",
) -> dict[str, Any]:
    return {
        "ts": start,
        "uid": f"F{orig}{sport}",
        "orig_h": orig,
        "orig_p": sport,
        "resp_h": resp,
        "resp_p": port,
        "proto": "tcp",
        "service": None,
        "last_ts": end,
        "duration": end - start,
        "conn_state": state,
        "history": "ShADadFf",
    }


def anomaly(ts: float, c: ConnId, name: str) -> Anomaly:
    return Anomaly(ts, "C9", c, True, name, "test", 0)


def engine(model: Model, **settings: Any) -> Engine:
    return Engine(model, MLSettings(**settings))


def by_rule(findings: list[Finding]) -> dict[str, list[Finding]]:
    out: dict[str, list[Finding]] = {}
    for f in findings:
        out.setdefault(f.rule_id, []).append(f)
    return out
