"""Reconnaissance: port sweep, unit-id sweep, device identification, function-code sweep,
address sweep."""

from __future__ import annotations

from sentinel.lab import ops
from sentinel.lab.ops import Script
from sentinel.lab.scenarios import ScenarioContext
from sentinel.lab.scenarios._common import pick_plc, unit_of

# Ports of OT and IT services a scanner tries first (Modbus, S7, DNP3, IEC 104, OPC UA,
# EtherNet/IP, BACnet, Niagara Fox, and the usual remote-access ports).
ICS_PORTS = (21, 22, 23, 80, 102, 443, 502, 1911, 2222, 2404, 4840, 20000, 44818, 47808)


def port_sweep(ctx: ScenarioContext) -> Script:
    target = pick_plc(ctx)
    rng = ctx.rng
    extra = rng.sample(range(1, 1025), int(ctx.params.get("extra_ports", 20)))
    ports = list(dict.fromkeys([*ICS_PORTS, *extra]))
    rng.shuffle(ports)
    open_ports = yield ops.SynScan(
        target, tuple(ports), float(ctx.params.get("interval", 0.01)), rng.randint(33000, 60000)
    )
    ctx.notes["open_ports"] = open_ports


def unit_id_sweep(ctx: ScenarioContext) -> Script:
    target = pick_plc(ctx)
    rng = ctx.rng
    first = int(ctx.params.get("first", 0))
    count = int(ctx.params.get("count", 32))
    conn = yield ops.Connect(target)
    if conn is None:
        return
    answered = []
    for unit in range(first, min(first + count, 256)):
        answer = yield ops.Request(conn, unit, ops.read(3, 0, 1), 0.5)
        if answer is not None and not answer[0] & 0x80:
            answered.append(unit)
        yield ops.Sleep(rng.uniform(0.002, 0.02))
    ctx.notes["units"] = answered
    yield ops.Close(conn)


def identify(ctx: ScenarioContext) -> Script:
    target = pick_plc(ctx)
    rng = ctx.rng
    unit = unit_of(ctx, target)
    conn = yield ops.Connect(target)
    if conn is None:
        return
    yield ops.Request(conn, unit, ops.read_device_id(1, 0), 1.0)  # basic identification
    yield ops.Sleep(rng.uniform(0.01, 0.2))
    if rng.random() < 0.5:
        yield ops.Request(conn, unit, ops.read_device_id(2, 0), 1.0)  # regular
        yield ops.Sleep(rng.uniform(0.01, 0.2))
    for object_id in range(3):  # one object at a time, as some tools do
        yield ops.Request(conn, unit, ops.read_device_id(4, object_id), 1.0)
        yield ops.Sleep(rng.uniform(0.01, 0.1))
    yield ops.Request(conn, unit, ops.report_server_id(), 1.0)
    yield ops.Close(conn)


# Function codes a sweep tries, with a request body each; the unassigned codes get four zero
# bytes. Writes are left out: a careful intruder does not change the process while looking.
SWEEP_REQUESTS: dict[int, bytes] = {
    1: ops.read(1, 0, 1),
    2: ops.read(2, 0, 1),
    3: ops.read(3, 0, 1),
    4: ops.read(4, 0, 1),
    7: b"\x07",
    8: ops.diagnostics(0, 0x1234),
    11: b"\x0b",
    12: b"\x0c",
    17: ops.report_server_id(),
    43: ops.read_device_id(1, 0),
}
UNASSIGNED = (9, 10, 13, 14, 18, 19, 25, 26, 27, 40, 41, 42, 44, 55, 65, 66, 70, 90, 100, 110)


def function_code_sweep(ctx: ScenarioContext) -> Script:
    target = pick_plc(ctx)
    rng = ctx.rng
    unit = unit_of(ctx, target)
    codes = list(SWEEP_REQUESTS) + rng.sample(UNASSIGNED, int(ctx.params.get("unassigned", 10)))
    if ctx.params.get("shuffle", True):
        rng.shuffle(codes)
    conn = yield ops.Connect(target)
    if conn is None:
        return
    supported = []
    for fc in codes:
        pdu = SWEEP_REQUESTS.get(fc, bytes((fc, 0, 0, 0, 0)))
        answer = yield ops.Request(conn, unit, pdu, 0.5)
        if answer is not None and not (answer[0] & 0x80 and answer[1:2] == b"\x01"):
            supported.append(fc)
        yield ops.Sleep(rng.uniform(0.005, 0.05))
    ctx.notes["supported"] = sorted(supported)
    yield ops.Close(conn)


def address_sweep(ctx: ScenarioContext) -> Script:
    """Reads blocks of each table from address 0 until the PLC answers 'illegal data
    address' twice in a row, then probes a few far addresses."""
    target = pick_plc(ctx)
    rng = ctx.rng
    unit = unit_of(ctx, target)
    block = int(ctx.params.get("block", 8))
    conn = yield ops.Connect(target)
    if conn is None:
        return
    tables = [3, 4, 1, 2]
    rng.shuffle(tables)
    found: dict[int, int] = {}
    for fc in tables[: int(ctx.params.get("tables", 4))]:
        address = 0
        misses = 0
        while misses < 2 and address < 2000:
            answer = yield ops.Request(conn, unit, ops.read(fc, address, block), 0.5)
            if answer is None or answer[0] & 0x80:
                misses += 1
            else:
                found[fc] = address + block
            address += block
            yield ops.Sleep(rng.uniform(0.003, 0.03))
        for far in (100, 1000, 9999):
            yield ops.Request(conn, unit, ops.read(fc, far, 1), 0.5)
            yield ops.Sleep(rng.uniform(0.003, 0.03))
    ctx.notes["found"] = found
    yield ops.Close(conn)
