"""Reconnaissance detector: positive and negative captures per rule, exact findings asserted."""

from __future__ import annotations

from pathlib import Path

from scapy.packet import Packet

from sentinel.config import Asset, Config
from sentinel.detector_settings import PolicySettings
from sentinel.detectors.recon import ModbusRecon
from tests.conftest import Analysis, run_analysis
from tests.detectors.pcaps import (
    ENG,
    GATEWAY,
    HMI,
    PLC,
    ROGUE,
    T0,
    Modbus,
    device_id,
    device_id_response,
    evidence,
    exception,
    read,
    registers,
    report_server_id,
    report_server_id_response,
    save,
    summary,
    syn_probe,
    technique,
    write_register,
)

DEFAULTS = PolicySettings()
ENGINEERING = Config(
    assets=[
        Asset(address=PLC, name="pump-plc", role="plc"),
        Asset(address=ENG, name="eng-ws", role="engineering"),
    ]
)


def run(
    tmp_path: Path,
    *packets: list[Packet],
    config: Config | None = None,
    settings: PolicySettings = DEFAULTS,
) -> Analysis:
    cfg = config or Config()
    pcap = save(tmp_path / "capture.pcap", *packets)
    return run_analysis(pcap, tmp_path / "out", cfg, [ModbusRecon(cfg, settings)])


# ---------------------------------------------------------------- 9000201 function code sweep
def test_function_code_sweep_by_illegal_function_positive(tmp_path: Path) -> None:
    s = Modbus(ROGUE, PLC)
    for fc in (7, 11, 12, 20, 24, 41, 42):  # what the PLC does not implement
        s.request(bytes((fc, 0, 0, 0, 0)), exception(fc, 1), dt=0.05)
    a = run(tmp_path, s.close())
    assert summary(a.findings) == [("9000201", 1)]
    f = a.findings[0]
    assert technique(f) == "T0888"
    assert evidence(f)["illegal_function_codes"] == [7, 11, 12, 20]


def test_function_code_sweep_by_breadth_positive(tmp_path: Path) -> None:
    s = Modbus(ROGUE, PLC)
    for fc in (1, 2, 3, 4, 5, 6, 15, 16, 22, 23, 24, 43):  # a device silent on errors
        s.request(bytes((fc, 0, 0, 0, 1)), None, dt=0.05)
    a = run(tmp_path, s.close())
    assert summary(a.findings) == [("9000201", 1)]
    assert len(evidence(a.findings[0])["function_codes"]) == 12


def test_function_code_sweep_counts_afresh_once_its_pair_left_the_table(tmp_path: Path) -> None:
    """Past max_pairs the oldest pair's counts are dropped; its connection, still open, then
    counts from zero again, not on into the dropped counts (5 + 5 codes: no sweep of 8)."""
    settings = PolicySettings(max_pairs=16, fc_sweep_distinct=8)
    s = Modbus(ROGUE, PLC)
    for fc in (1, 2, 3, 4, 5):
        s.request(bytes((fc, 0, 0, 0, 1)), None, dt=0.05)
    others = []
    for i in range(16):  # sixteen newer pairs: the first one leaves the table
        other = Modbus(f"10.9.0.{i + 1}", PLC, t0=T0 + 1 + i / 100)
        other.poll()
        others.append(other.close())
    s.wait_until(T0 + 2)
    for fc in (6, 15, 16, 22, 23):
        s.request(bytes((fc, 0, 0, 0, 1)), None, dt=0.05)
    assert summary(run(tmp_path, s.close(), *others, settings=settings).findings) == []
    s2 = Modbus(ROGUE, PLC)  # the same ten codes with no pair in between: a sweep
    for fc in (1, 2, 3, 4, 5, 6, 15, 16, 22, 23):
        s2.request(bytes((fc, 0, 0, 0, 1)), None, dt=0.05)
    assert summary(run(tmp_path, s2.close(), settings=settings).findings) == [("9000201", 1)]


def test_function_code_sweep_negative_polling_hmi(tmp_path: Path) -> None:
    s = Modbus(HMI, PLC)
    s.request(device_id(), exception(43, 1))  # the PLC lacks device identification
    for _ in range(30):
        for fc in (1, 2, 3, 4):
            s.poll(fc, 0, 8, dt=0.2)
        s.request(bytes((16, 0, 10, 0, 1, 2, 0, 5)), bytes((16, 0, 10, 0, 1)), dt=0.2)
        s.request(device_id(), exception(43, 1), dt=0.2)
    assert run(tmp_path, s.close()).findings == []


# ---------------------------------------------------------------- 9000202 unit id sweep
def test_unit_id_sweep_by_errors_positive(tmp_path: Path) -> None:
    s = Modbus(ROGUE, GATEWAY)
    for unit in range(0, 16):  # a single-unit server answers other units with exception 4
        response = registers(3, [1]) if unit == 1 else exception(3, 4)
        s.request(read(3, 0, 1), response, dt=0.02, unit=unit)
    a = run(tmp_path, s.close())
    assert summary(a.findings) == [("9000202", 1)]
    f = a.findings[0]
    assert technique(f) == "T0846"
    assert evidence(f)["failed_unit_ids"] == [0, 8]


def test_unit_id_sweep_by_breadth_positive(tmp_path: Path) -> None:
    s = Modbus(ROGUE, GATEWAY)
    for unit in range(1, 40):  # a device that answers every unit id
        s.request(read(3, 0, 1), registers(3, [1]), dt=0.02, unit=unit)
    a = run(tmp_path, s.close())
    assert summary(a.findings) == [("9000202", 1)]
    assert evidence(a.findings[0])["unit_ids"] == [1, 32]


def test_unit_id_sweep_negative_gateway_polling(tmp_path: Path) -> None:
    s = Modbus(HMI, GATEWAY)
    for _ in range(20):  # a gateway with eight serial devices, polled every cycle
        for unit in range(1, 9):
            s.request(read(3, 0, 2), registers(3, [1, 2]), dt=0.05, unit=unit)
    s.request(read(3, 0, 2), exception(3, 0x0B), unit=9)  # one device off the bus
    assert run(tmp_path, s.close()).findings == []


# ---------------------------------------------------------------- 9000203 address sweep
def test_address_sweep_by_breadth_positive(tmp_path: Path) -> None:
    s = Modbus(ROGUE, PLC)
    for block in range(70):
        s.request(read(3, block * 10, 10), registers(3, [0] * 10), dt=0.01)
    a = run(tmp_path, s.close())
    assert summary(a.findings) == [("9000203", 1)]
    f = a.findings[0]
    assert technique(f) == "T0861"
    ev = evidence(f)
    assert ev["start_addresses"] == 64 and ev["tables"] == ["holding"]
    assert ev["address_range"] == [0, 630]


def test_address_sweep_by_illegal_address_positive(tmp_path: Path) -> None:
    s = Modbus(ROGUE, PLC)
    for fc in (3, 4):  # map each table until the PLC says "illegal data address"
        for address in (0, 8, 16, 24, 100, 1000, 9999):
            ok = address < 16
            answer = registers(fc, [0] * 8) if ok else exception(fc, 2)
            s.request(read(fc, address, 8), answer, dt=0.02)
    a = run(tmp_path, s.close())
    assert summary(a.findings) == [("9000203", 1)]
    assert evidence(a.findings[0])["illegal_addresses"] == 8


def test_address_sweep_negative_fixed_poll_list(tmp_path: Path) -> None:
    s = Modbus(HMI, PLC)
    for _ in range(40):
        for address in (0, 100, 200, 300):
            s.poll(3, address, 10, dt=0.1)
        s.request(read(4, 9000, 4), exception(4, 2), dt=0.1)  # a misconfigured tag
    assert run(tmp_path, s.close()).findings == []


# ---------------------------------------------------------------- 9000204 device identification
def test_device_identification_only_connection_positive(tmp_path: Path) -> None:
    s = Modbus(ROGUE, PLC)  # what nmap modbus-discover / PLCScan do: identify, then leave
    s.request(device_id(1, 0), device_id_response())
    s.request(report_server_id(), report_server_id_response())
    a = run(tmp_path, s.close())
    assert summary(a.findings) == [("9000204", 1)]
    f = a.findings[0]
    assert technique(f) == "T0888"
    ev = evidence(f)
    assert ev["basis"] == "identification-only connection"
    assert ev["identification_requests"] == 2 and ev["function_code"] == 43


def test_device_identification_negative_hmi_then_polls(tmp_path: Path) -> None:
    s = Modbus(HMI, PLC)  # an HMI identifies the PLC when it connects, then polls it
    s.request(device_id(1, 0), device_id_response())
    for _ in range(5):
        s.poll()
    assert run(tmp_path, s.close()).findings == []


def test_device_identification_declared_engineering_positive(tmp_path: Path) -> None:
    s = Modbus(HMI, PLC)
    s.request(device_id(1, 0), device_id_response())
    s.poll()
    a = run(tmp_path, s.close(), config=ENGINEERING)
    assert summary(a.findings) == [("9000204", 1)]
    assert evidence(a.findings[0])["basis"] == "not a declared engineering host"
    assert evidence(a.findings[0])["asset"] == "pump-plc"


def test_device_identification_declared_engineering_negative(tmp_path: Path) -> None:
    s = Modbus(ENG, PLC)
    s.request(device_id(1, 0), device_id_response())
    s.request(report_server_id(), report_server_id_response())
    assert run(tmp_path, s.close(), config=ENGINEERING).findings == []


# ---------------------------------------------------------------- 9000205 many exceptions
def test_many_exceptions_positive(tmp_path: Path) -> None:
    s = Modbus(ROGUE, PLC)
    for address in range(10):  # probing values: each write refused differently
        s.request(write_register(address, 0xFFFF), exception(6, 3), dt=0.1)
    a = run(tmp_path, s.close())
    assert summary(a.findings) == [("9000205", 1)]
    f = a.findings[0]
    assert technique(f) == "T0888"
    assert evidence(f)["distinct_failures"] == 10
    assert evidence(f)["exception_codes"] == [3]


def test_many_exceptions_negative_same_failure_repeated(tmp_path: Path) -> None:
    s = Modbus(HMI, PLC)
    for _ in range(50):  # the same misconfigured request, failing every cycle
        s.request(read(3, 9000, 2), exception(3, 2), dt=0.2)
        s.request(read(3, 0, 2), exception(3, 6), dt=0.2) if _ % 25 == 0 else s.poll()
    assert run(tmp_path, s.close()).findings == []


# ---------------------------------------------------------------- 9000206 service sweep
def test_service_sweep_ports_of_one_host_positive(tmp_path: Path) -> None:
    ports = (21, 22, 23, 80, 102, 443, 502, 2404, 4840, 20000, 44818, 47808)
    probes = [
        syn_probe(ROGUE, PLC, port, T0 + i * 0.01, sport=45000, open_port=port == 502)
        for i, port in enumerate(ports)
    ]
    a = run(tmp_path, *probes)
    assert summary(a.findings) == [("9000206", 1)]
    f = a.findings[0]
    assert technique(f) == "T0846"
    ev = evidence(f)
    assert ev["targets"] == 10 and ev["hosts"] == [PLC] and ev["modbus_ports"] == [502]


def test_service_sweep_hosts_on_port_502_positive(tmp_path: Path) -> None:
    probes = [
        syn_probe(ROGUE, f"192.0.2.{100 + i}", 502, T0 + i * 0.05, sport=45000 + i)
        for i in range(12)
    ]
    a = run(tmp_path, *probes)
    assert summary(a.findings) == [("9000206", 1)]
    assert len(evidence(a.findings[0])["hosts"]) == 10


def test_service_sweep_negative(tmp_path: Path) -> None:
    retries = [  # an HMI retrying a rebooting PLC: always the same service
        syn_probe(HMI, PLC, 502, T0 + i * 2.0, sport=46000 + i) for i in range(12)
    ]
    web = [  # not looking for Modbus: no Modbus port among the targets
        syn_probe(HMI, "192.0.2.200", 8000 + i, T0 + 100 + i * 0.01, sport=47000 + i)
        for i in range(12)
    ]
    assert run(tmp_path, *retries, *web).findings == []
