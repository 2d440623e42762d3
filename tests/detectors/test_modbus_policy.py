"""OT policy detector: one positive and one negative capture per rule, exact findings asserted.

Captures are crafted with scapy (real TCP) into tmp_path and run through the real pipeline
with only the policy detector, so every finding in findings.jsonl is accounted for.
"""

from __future__ import annotations

from pathlib import Path

from sentinel.config import Asset, Config, RegisterRange
from sentinel.detector_settings import PolicySettings
from sentinel.detectors.modbus_policy import ModbusPolicy
from tests.conftest import Analysis, run_analysis
from tests.detectors.pcaps import (
    ENG,
    HMI,
    PLC,
    PLC2,
    ROGUE,
    T0,
    Modbus,
    by_rule,
    diagnostics,
    evidence,
    exception,
    read,
    read_file_record,
    registers,
    save,
    summary,
    syn_probe,
    technique,
    write_coil,
    write_file_record,
    write_register,
    write_registers,
)

SITE = Config(
    assets=[
        Asset(
            address=PLC,
            name="pump-plc",
            role="plc",
            allowed_masters=[HMI, ENG],
            allowed_function_codes=[1, 2, 3, 4, 5, 6, 8, 15, 16, 20, 21, 90],
            registers=[
                RegisterRange(
                    table="holding",
                    start=0,
                    end=9,
                    name="setpoints",
                    writable=True,
                    min=0,
                    max=1000,
                ),
                RegisterRange(
                    table="holding",
                    start=10,
                    end=10,
                    name="offset",
                    writable=True,
                    min=-100,
                    max=100,
                ),
                RegisterRange(table="holding", start=100, end=199, name="config"),
                RegisterRange(table="coils", start=0, end=15, name="pumps", writable=True),
            ],
        ),
        Asset(address=PLC2, name="valve-plc", role="plc"),
        Asset(address=HMI, name="scada-hmi", role="hmi"),
        Asset(address=ENG, name="eng-ws", role="engineering"),
    ]
)
QUIET = PolicySettings()  # default learning window: longer than every capture here


def run(tmp_path: Path, config: Config, settings: PolicySettings, *sessions: Modbus) -> Analysis:
    pcap = save(tmp_path / "capture.pcap", *(s.close() for s in sessions))
    return run_analysis(pcap, tmp_path / "out", config, [ModbusPolicy(config, settings)])


# ---------------------------------------------------------------- 9000101 unauthorized client
def test_unauthorized_client_positive(tmp_path: Path) -> None:
    s = Modbus(ROGUE, PLC)
    for _ in range(3):
        s.poll(3, 0, 4)
    a = run(tmp_path, SITE, QUIET, s)
    assert summary(a.findings) == [("9000101", 3)]
    f = by_rule(a.findings, "9000101")
    assert technique(f) == "T0848"
    assert f["threat"]["tactic"]["name"] == ["Initial Access"]
    assert f["source"]["ip"] == ROGUE and f["destination"]["ip"] == PLC
    ev = evidence(f)
    assert ev["allowed_masters"] == sorted([HMI, ENG])
    assert ev["asset"] == "pump-plc"
    assert ev["function_code"] == 3


def test_unauthorized_client_negative(tmp_path: Path) -> None:
    s = Modbus(HMI, PLC)
    for _ in range(3):
        s.poll(3, 0, 4)
    assert run(tmp_path, SITE, QUIET, s).findings == []


# ---------------------------------------------------------------- 9000102 function code
def test_function_code_not_allowed_positive(tmp_path: Path) -> None:
    s = Modbus(HMI, PLC)
    s.request(bytes((7,)), bytes((7, 0)))  # Read Exception Status: not in the allow list
    a = run(tmp_path, SITE, QUIET, s)
    assert summary(a.findings) == [("9000102", 1)]
    f = a.findings[0]
    assert technique(f) == "T0855"
    assert evidence(f)["function"] == "READ_EXCEPTION_STATUS"
    assert evidence(f)["allowed_function_codes"] == [1, 2, 3, 4, 5, 6, 8, 15, 16, 20, 21, 90]


def test_function_code_not_allowed_negative(tmp_path: Path) -> None:
    s = Modbus(HMI, PLC)
    s.poll(1, 0, 8)
    s.poll(4, 0, 2)
    assert run(tmp_path, SITE, QUIET, s).findings == []


# ---------------------------------------------------------------- 9000103 role reversal
def test_role_reversal_declared_plc_positive(tmp_path: Path) -> None:
    worm = Modbus(PLC, PLC2, sport=40100)  # the declared PLC acts as a client (PLC worm)
    worm.poll(3, 0, 4)
    worm.poll(3, 4, 4)
    a = run(tmp_path, SITE, QUIET, worm)
    assert summary(a.findings) == [("9000103", 1)]
    f = a.findings[0]
    assert technique(f) == "T0848"
    ev = evidence(f)
    assert ev["basis"] == "declared" and ev["device"] == PLC
    assert ev["declared_role"] == "plc" and ev["device_name"] == "pump-plc"


def test_role_reversal_learned_positive(tmp_path: Path) -> None:
    learn = PolicySettings(learning_seconds=30)
    hmi = Modbus(HMI, PLC)
    for _ in range(10):  # PLC is a server during learning
        hmi.poll()
    pivot = Modbus(PLC, PLC2, t0=T0 + 60, sport=40200)  # after learning it becomes a client
    pivot.poll()
    pivot.poll()
    a = run(tmp_path, Config(), learn, hmi, pivot)
    assert [x for x in summary(a.findings) if x[0] == "9000103"] == [("9000103", 1)]
    assert evidence(by_rule(a.findings, "9000103"))["basis"] == "learned"


def test_role_reversal_negative_gateway_both_roles_from_the_start(tmp_path: Path) -> None:
    learn = PolicySettings(learning_seconds=30)
    upstream = Modbus(HMI, PLC)  # PLC (a gateway here) serves the HMI ...
    downstream = Modbus(PLC, PLC2, sport=40300, t0=T0 + 0.2)  # ... and polls a field device
    for _ in range(100):  # both from the start and on after the learning window
        upstream.poll()
        downstream.poll()
    a = run(tmp_path, Config(), learn, upstream, downstream)
    assert a.findings == []


# ---------------------------------------------------------------- 9000104 new writer
def test_new_writer_positive(tmp_path: Path) -> None:
    learn = PolicySettings(learning_seconds=30)
    s = Modbus(HMI, PLC)
    for _ in range(10):
        s.poll()
    s.wait_until(T0 + 40)
    s.write(write_register(3, 100))  # first write ever, after learning
    s.write(write_register(3, 110))  # known as a writer from now on
    a = run(tmp_path, Config(), learn, s)
    assert summary(a.findings) == [("9000104", 1)]
    f = a.findings[0]
    assert technique(f) == "T0855"
    assert evidence(f)["function"] == "WRITE_SINGLE_REGISTER"
    assert f["@timestamp"].startswith("2023-11-14T22:14:0")  # T0 + 40 s


def test_new_writer_negative_wrote_during_learning(tmp_path: Path) -> None:
    learn = PolicySettings(learning_seconds=30)
    s = Modbus(HMI, PLC)
    s.write(write_register(3, 100))  # a host writing for the first time while learning
    for _ in range(10):
        s.poll()
    s.wait_until(T0 + 40)
    s.write(write_register(3, 120))
    assert run(tmp_path, Config(), learn, s).findings == []


# ---------------------------------------------------------------- 9000105 writable ranges
def test_write_outside_ranges_positive(tmp_path: Path) -> None:
    s = Modbus(HMI, PLC)
    s.write(write_register(150, 7))  # holding 100-199 is declared read-only
    s.write(write_registers(8, [1, 2, 3, 4]))  # 8, 9 writable; 10 writable; 11 undeclared
    s.write(write_coil(20, True))  # coils 0-15 only
    a = run(tmp_path, SITE, QUIET, s)
    assert summary(a.findings) == [("9000105", 3)]
    ev = evidence(a.findings[0])  # the first of the three, folded by the aggregator
    assert ev["table"] == "holding" and ev["outside"] == [150] and ev["outside_count"] == 1
    assert ev["writable_ranges"] == [[0, 9], [10, 10]]
    assert technique(a.findings[0]) == "T0855"


def test_write_outside_ranges_reports_each_address(tmp_path: Path) -> None:
    s = Modbus(HMI, PLC)
    s.write(write_registers(8, [1, 2, 3, 4]))
    a = run(tmp_path, SITE, QUIET, s)
    assert summary(a.findings) == [("9000105", 1)]
    ev = evidence(a.findings[0])
    assert (ev["address"], ev["quantity"], ev["outside"]) == (8, 4, [11])


def test_write_outside_ranges_negative(tmp_path: Path) -> None:
    s = Modbus(HMI, PLC)
    s.write(write_register(2, 500))
    s.write(write_registers(0, [1, 2, 3]))
    s.write(write_coil(15, False))
    assert run(tmp_path, SITE, QUIET, s).findings == []


# ---------------------------------------------------------------- 9000106 safe limits
def test_value_outside_limits_positive(tmp_path: Path) -> None:
    s = Modbus(HMI, PLC)
    s.write(write_register(3, 1500))  # setpoints: 0..1000
    s.write(write_register(10, -256))  # offset: -100..100 (signed)
    a = run(tmp_path, SITE, QUIET, s)
    assert summary(a.findings) == [("9000106", 2)]
    f = a.findings[0]
    assert technique(f) == "T0836"
    assert f["threat"]["technique"]["name"] == ["Modify Parameter"]
    assert evidence(f)["violations"] == [
        {"address": 3, "value": 1500, "min": 0, "max": 1000, "name": "setpoints"}
    ]
    assert "writes 1500 to holding 3 (setpoints)" in f["message"]


def test_value_outside_limits_signed(tmp_path: Path) -> None:
    s = Modbus(HMI, PLC)
    s.write(write_register(10, -256))
    a = run(tmp_path, SITE, QUIET, s)
    assert evidence(a.findings[0])["violations"][0]["value"] == -256


def test_value_outside_limits_negative(tmp_path: Path) -> None:
    s = Modbus(HMI, PLC)
    s.write(write_register(3, 1000))
    s.write(write_register(10, -100))
    s.write(write_registers(0, [0, 500, 1000]))
    assert run(tmp_path, SITE, QUIET, s).findings == []


# ---------------------------------------------------------------- 9000107-9000109 diagnostics
def test_dangerous_diagnostics_positive(tmp_path: Path) -> None:
    s = Modbus(HMI, PLC)
    s.request(diagnostics(0x04), None)  # force listen only: the device stops answering
    s.request(diagnostics(0x01, 0xFF00), diagnostics(0x01, 0xFF00))
    s.request(diagnostics(0x0A), diagnostics(0x0A))
    s.request(diagnostics(0x14), diagnostics(0x14))
    a = run(tmp_path, Config(), QUIET, s)
    assert summary(a.findings) == [("9000107", 1), ("9000108", 1), ("9000109", 2)]
    listen, restart, clear = a.findings
    assert (technique(listen), technique(restart), technique(clear)) == ("T0814", "T0816", "T0872")
    assert evidence(listen)["sub_function_name"] == "FORCE_LISTEN_ONLY_MODE"
    assert evidence(restart)["sub_function"] == 1


def test_dangerous_diagnostics_negative(tmp_path: Path) -> None:
    s = Modbus(HMI, PLC)
    s.request(diagnostics(0x00, 0xA537), diagnostics(0x00, 0xA537))  # return query data
    s.request(diagnostics(0x0B), diagnostics(0x0B, 12))  # return bus message count
    assert run(tmp_path, Config(), QUIET, s).findings == []


# ---------------------------------------------------------------- 9000110-9000113 programming
def test_program_and_file_functions_positive(tmp_path: Path) -> None:
    learn = PolicySettings(learning_seconds=30)
    s = Modbus(HMI, PLC)
    s.poll()
    s.wait_until(T0 + 40)  # file reads are learned: these come after the learning window
    s.request(write_file_record(), write_file_record())
    s.request(read_file_record(), bytes((20, 6, 5, 6, 0, 1, 0, 2)))
    s.request(bytes((90, 0, 0x41, 0xFF, 0)), bytes((90, 0, 0xFE)))  # UMAS (Unity) request
    s.request(bytes((125, 1, 2, 3)), exception(125, 1))
    a = run(tmp_path, Config(), learn, s)
    assert summary(a.findings) == [
        ("9000110", 1),
        ("9000111", 1),
        ("9000112", 1),
        ("9000113", 1),
    ]
    assert [technique(f) for f in a.findings] == ["T0843", "T0845", "T0843", "T0857"]
    assert evidence(a.findings[0])["files"] == [4]
    assert a.findings[3]["event"]["severity"] == 99  # critical


def test_program_and_file_functions_negative_declared_engineering(tmp_path: Path) -> None:
    s = Modbus(ENG, PLC)  # a declared engineering workstation the PLC allows
    s.request(write_file_record(), write_file_record())
    s.request(read_file_record(), bytes((20, 6, 5, 6, 0, 1, 0, 2)))
    s.request(bytes((90, 0, 0x41, 0xFF, 0)), bytes((90, 0, 0xFE)))
    assert run(tmp_path, SITE, QUIET, s).findings == []


def test_file_read_negative_learned(tmp_path: Path) -> None:
    learn = PolicySettings(learning_seconds=30)
    s = Modbus(HMI, PLC)  # a historian reading load profiles from file records
    s.request(read_file_record(), bytes((20, 6, 5, 6, 0, 1, 0, 2)))
    s.wait_until(T0 + 60)
    s.request(read_file_record(), bytes((20, 6, 5, 6, 0, 1, 0, 2)))
    assert run(tmp_path, Config(), learn, s).findings == []


# ---------------------------------------------------------------- 9000114 flood
FLOODS = PolicySettings(learning_seconds=10, flood_window=1.0, flood_min_requests=50)


def _flood_session(rate_learning: float, burst: int) -> Modbus:
    s = Modbus(HMI, PLC)
    while s.t < T0 + 12:  # learning: the pair's normal rate
        s.poll(dt=1.0 / rate_learning)
    s.wait_until(T0 + 20)
    for _ in range(burst):  # within 0.5 s
        s.poll(dt=0.5 / burst)
    return s


def test_flood_positive(tmp_path: Path) -> None:
    a = run(tmp_path, Config(), FLOODS, _flood_session(2, 80))
    assert summary(a.findings) == [("9000114", 1)]
    f = a.findings[0]
    assert technique(f) == "T0814"
    ev = evidence(f)
    assert (ev["requests"], ev["limit"], ev["learned_peak"]) == (51, 50, 2)


def test_flood_negative_below_threshold(tmp_path: Path) -> None:
    assert run(tmp_path, Config(), FLOODS, _flood_session(2, 45)).findings == []


def test_flood_negative_learned_busy_pair(tmp_path: Path) -> None:
    # 30 requests a second while learning: the limit becomes 5 x 30 = 150 a second.
    assert run(tmp_path, Config(), FLOODS, _flood_session(30, 80)).findings == []


# ---------------------------------------------------------------- 9000115 unanswered
SILENCE = PolicySettings(response_timeout=1.0, unanswered_min=5, unanswered_ratio=0.5)


def test_unanswered_positive(tmp_path: Path) -> None:
    s = Modbus(HMI, PLC)
    for _ in range(3):
        s.poll(dt=1.0)
    for _ in range(10):  # the PLC stopped answering
        s.request(read(3, 0, 4), None, dt=1.0)
    a = run(tmp_path, Config(), SILENCE, s)
    assert summary(a.findings) == [("9000115", 1)]
    f = a.findings[0]
    assert technique(f) == "T0814"
    ev = evidence(f)
    assert ev["unanswered"] == 5 and ev["requests"] == 9
    assert ev["response_timeout"] == 1.0


def test_unanswered_negative(tmp_path: Path) -> None:
    s = Modbus(HMI, PLC)
    for i in range(20):  # a few lost answers among many
        s.request(read(3, 0, 4), None if i % 7 == 3 else registers(3, [0] * 4), dt=1.0)
    assert run(tmp_path, Config(), SILENCE, s).findings == []


def test_unanswered_negative_one_way_capture(tmp_path: Path) -> None:
    s = Modbus(HMI, PLC)
    for _ in range(30):  # the sensor sees only the client's side (asymmetric routing)
        s.request(read(3, 0, 4), None, dt=1.0)
    assert run(tmp_path, Config(), SILENCE, s).findings == []


# ---------------------------------------------------------------- 9000116 new device
def test_new_device_positive(tmp_path: Path) -> None:
    learn = PolicySettings(learning_seconds=30)
    hmi = Modbus(HMI, PLC)
    for _ in range(10):
        hmi.poll()
    newcomer = Modbus(ROGUE, PLC, t0=T0 + 60, sport=40500)
    newcomer.poll()
    newcomer.poll()
    a = run(tmp_path, Config(), learn, hmi, newcomer)
    assert summary(a.findings) == [("9000116", 1)]
    f = a.findings[0]
    assert technique(f) == "T0864"
    assert evidence(f)["devices"] == [{"ip": ROGUE, "role": "client"}]


def test_new_device_negative_declared_and_learned(tmp_path: Path) -> None:
    learn = PolicySettings(learning_seconds=30)
    hmi = Modbus(HMI, PLC)
    for _ in range(10):
        hmi.poll()
    eng = Modbus(ENG, PLC, t0=T0 + 60, sport=40600)  # declared in the config: not new
    eng.poll()
    hmi2 = Modbus(HMI, PLC, t0=T0 + 70, sport=40700)  # learned: not new
    hmi2.poll()
    assert run(tmp_path, SITE, learn, hmi, eng, hmi2).findings == []


# ---------------------------------------------------------------- 9000117 connection flood
def _syns(port: int, count: int, spacing: float, t0: float = T0) -> list:
    return [
        p
        for i in range(count)
        for p in syn_probe(ROGUE, PLC, port, t0 + i * spacing, sport=20000 + i)[:1]  # no reply
    ]


def test_connection_flood_positive(tmp_path: Path) -> None:
    pcap = save(tmp_path / "c.pcap", _syns(502, 250, 0.001))
    a = run_analysis(pcap, tmp_path / "out", SITE, [ModbusPolicy(SITE, QUIET)])
    assert summary(a.findings) == [("9000117", 1)]
    f = a.findings[0]
    assert technique(f) == "T0814"
    ev = evidence(f)
    assert (ev["server"], ev["port"], ev["connections"]) == (PLC, 502, 200)
    assert ev["clients"] == [ROGUE] and ev["asset"] == "pump-plc"


def test_connection_flood_negative(tmp_path: Path) -> None:
    retries = _syns(502, 20, 0.5)  # an HMI-like retry loop: a few per window
    web = _syns(8080, 250, 0.001, t0=T0 + 100)  # not a Modbus port
    pcap = save(tmp_path / "c.pcap", retries, web)
    a = run_analysis(pcap, tmp_path / "out", SITE, [ModbusPolicy(SITE, QUIET)])
    assert a.findings == []


# ---------------------------------------------------------------- tuning and determinism
def test_disabled_rules_are_dropped(tmp_path: Path) -> None:
    s = Modbus(ROGUE, PLC)
    s.poll()
    a = run(tmp_path, SITE, PolicySettings(disabled_rules=[9000101]), s)
    assert a.findings == []


def test_findings_are_deterministic(tmp_path: Path) -> None:
    s = Modbus(ROGUE, PLC)
    s.write(write_register(3, 5000))
    pcap = save(tmp_path / "capture.pcap", s.close())
    runs = [
        run_analysis(pcap, tmp_path / f"out{i}", SITE, [ModbusPolicy(SITE, QUIET)])
        for i in range(2)
    ]
    assert summary(runs[0].findings) == [("9000101", 1), ("9000106", 1)]
    assert runs[0].findings == runs[1].findings  # same ids, same documents
