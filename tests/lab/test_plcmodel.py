"""The synthetic generator's PLC answers exactly as the live lab's pymodbus PLC.

A real pymodbus server (``sentinel.lab.plc.LivePlc``) listens on loopback; every request the
lab's actors and scenarios send goes to it and to ``PlcModel`` (started from the same
register image), and the answers must be byte-identical, or both absent.
"""

from __future__ import annotations

import asyncio
import copy
import random
import socket
import threading
from collections.abc import Iterator

import pytest

from sentinel.lab import ops
from sentinel.lab.config import load_site
from sentinel.lab.scenarios import load_scenarios, make_context
from sentinel.lab.scenarios.dos import malformed_frames
from sentinel.lab.scenarios.recon import SWEEP_REQUESTS, UNASSIGNED

pytest.importorskip("pymodbus")
NO_ANSWER_WAIT = 0.3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A live lab PLC on loopback, served from a background event loop (no process loop:
    the register image stays as the test sets it)."""

    def __init__(self, site_name: str, address: str) -> None:
        from sentinel.lab.plc import LivePlc

        self.port = _free_port()
        self.site = load_site(site_name)
        self.loop = asyncio.new_event_loop()
        self.plc: LivePlc | None = None
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)

            async def start() -> None:
                self.plc = LivePlc(self.site, address, "127.0.0.1", self.port, 5)
                self.task = asyncio.ensure_future(self.plc.server.serve_forever())
                ready.set()

            self.loop.run_until_complete(start())
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert ready.wait(10)
        for _ in range(100):  # wait until it listens
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                break
            except OSError:
                threading.Event().wait(0.05)
        assert self.plc is not None
        self.model = copy.deepcopy(self.plc.model)  # same image, same identity

    def stop(self) -> None:
        async def down() -> None:
            assert self.plc is not None
            await self.plc.server.shutdown()

        asyncio.run_coroutine_threadsafe(down(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def _exchange(sock: socket.socket, data: bytes, wait: float = NO_ANSWER_WAIT) -> bytes | None:
    sock.sendall(data)
    sock.settimeout(wait)
    try:
        return sock.recv(4096) or None
    except TimeoutError:
        return None


@pytest.fixture(scope="module")
def hospital_plc() -> Iterator[Server]:
    server = Server("hospital", "198.51.100.20")
    yield server
    server.stop()


def _requests(unit: int) -> list[tuple[int, bytes]]:
    """(unit, PDU) of everything the actors and scenarios send, in one sequence."""
    out: list[tuple[int, bytes]] = []
    site = load_site("hospital")
    for poll in site.lab.hmi.polls:
        out.append((unit, ops.read(poll.fc, poll.address, poll.quantity)))
    out += [(unit, ops.write_register(0, 215)), (unit, ops.write_registers(4, [130]))]
    out += [(unit, ops.read(3, 0, 16)), (unit, ops.read(3, 4, 1))]
    out += [(u, ops.read(3, 0, 1)) for u in (0, 1, 2, 7, 47, 255)]
    out += [(unit, ops.read_device_id(code, 0)) for code in (1, 2, 3)]
    out += [(unit, ops.read_device_id(4, obj)) for obj in (0, 1, 2, 3)]
    out.append((unit, ops.report_server_id()))
    out += [(unit, pdu) for pdu in SWEEP_REQUESTS.values()]
    out += [(unit, bytes((fc, 0, 0, 0, 0))) for fc in UNASSIGNED]
    for fc in (1, 2, 3, 4):
        for address in (0, 4, 8, 10, 12, 16, 24, 100, 1000, 9999):
            for block in (1, 4, 8, 10, 16):
                out.append((unit, ops.read(fc, address, block)))
    out += [(unit, ops.read(3, 0, 0)), (unit, ops.read(3, 0, 126)), (unit, ops.read(1, 0, 2001))]
    out += [
        (unit, ops.write_coil(2, False)),
        (unit, ops.read(1, 0, 3)),
        (unit, ops.write_coil(2, True)),
    ]
    out += [(unit, ops.write_register(40, 1)), (unit, ops.write_register(15, 65535))]
    out += [(unit, ops.diagnostics(0, 0x1234)), (unit, ops.diagnostics(1, 0xFF00))]
    out += [(unit, ops.diagnostics(1, 0)), (unit, ops.diagnostics(99, 0))]
    return out


def test_answers_match_pymodbus(hospital_plc: Server) -> None:
    unit = hospital_plc.model.unit
    session = hospital_plc.model.session()
    mismatches = []
    with socket.create_connection(("127.0.0.1", hospital_plc.port)) as sock:
        for i, (u, pdu) in enumerate(_requests(unit)):
            request = ops.adu(i + 1, u, pdu)
            live = _exchange(sock, request)
            simulated = session.feed(request)
            expected = simulated[0] if simulated else None
            if live != expected:
                mismatches.append((pdu.hex(), u, live and live.hex(), expected and expected.hex()))
    assert not mismatches, mismatches
    assert hospital_plc.model.image.holding[0] == 215  # the writes reached the model too
    assert hospital_plc.model.image.holding[4] == 130


def test_listen_only_matches(hospital_plc: Server) -> None:
    """FC 8/04 silences the PLC for every client until FC 8/01, which is not answered."""
    unit = hospital_plc.model.unit
    model = hospital_plc.model
    steps = [
        ops.read(3, 0, 1),
        ops.diagnostics(4, 0),
        ops.read(3, 0, 1),
        ops.diagnostics(0, 0x55AA),
        ops.diagnostics(1, 0),
        ops.read(3, 0, 1),
        ops.diagnostics(1, 0),
    ]
    with socket.create_connection(("127.0.0.1", hospital_plc.port)) as sock:
        session = model.session()
        for i, pdu in enumerate(steps):
            request = ops.adu(100 + i, unit, pdu)
            live = _exchange(sock, request)
            simulated = session.feed(request)
            assert live == (simulated[0] if simulated else None), (i, pdu.hex())
    assert not model.listen_only


def test_malformed_frames_match(hospital_plc: Server) -> None:
    """Each malformed frame of the scenario, on a fresh connection, then a valid request."""
    site = load_site("hospital")
    scenario = load_scenarios()["malformed-frames"]
    actor = ops.Actor("t", "198.51.100.45", random.Random(3), lambda: 0.0)
    ctx = make_context(scenario, site, actor)
    unit = hospital_plc.model.unit
    for name, frame in malformed_frames(ctx, unit, 900):
        with socket.create_connection(("127.0.0.1", hospital_plc.port)) as sock:
            session = hospital_plc.model.session()
            live = _exchange(sock, frame)
            simulated = session.feed(frame)
            assert live == (simulated[0] if simulated else None), name
