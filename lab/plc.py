"""A live lab PLC: a pymodbus TCP server whose registers follow the PLC's physical process.

Run one per PLC, inside the PLC's network namespace::

    python -m sentinel.lab.plc --site hospital --plc 198.51.100.20 [--port 502] [--seed 1]

The register image starts as the process's initial state; every ``STEP`` seconds the
process reads the setpoints and commands clients wrote (holding registers, coils), advances
by the real time elapsed and publishes its measurements. Reading, stepping and publishing
happen without yielding to the event loop, so a client's write is never lost between them.

pymodbus answers like a PLC in most respects; the lab adds listen-only mode (FC 8
sub-function 04, spec 6.8.1): while in it the PLC answers nobody, and restart communications
(sub-function 01), which ends it, is not answered either. ``sentinel.lab.plcmodel`` computes
the same answers for the synthetic generator; the tests check the two agree.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import signal
import struct
import time

from sentinel.lab.config import Plc, SiteDef, load_site
from sentinel.lab.plcmodel import STEP, PlcModel

log = logging.getLogger(__name__)


class ListenOnly:
    """pymodbus trace hooks that add listen-only mode (see the module docstring)."""

    def __init__(self) -> None:
        self.active = False
        self._mute: set[int] = set()  # transaction ids of restart requests not to answer

    def pdu(self, sending: bool, pdu: object) -> object:
        if not sending and getattr(pdu, "function_code", None) == 8:
            sub = getattr(pdu, "sub_function_code", None)
            tid = getattr(pdu, "transaction_id", 0)
            if sub == 0x04:
                self.active = True
            elif sub == 0x01 and self.active:
                self.active = False
                self._mute.add(tid)
        return pdu

    def packet(self, sending: bool, data: bytes) -> bytes:
        if not sending:
            return data
        if self.active:
            return b""
        if len(data) >= 8 and data[7] & 0x7F == 8 and self._mute:
            tid = struct.unpack_from(">H", data)[0]
            if tid in self._mute:
                self._mute.discard(tid)
                return b""
        return data


def _device(plc: Plc, model: PlcModel) -> object:
    from pymodbus.simulator import SimData, SimDevice
    from pymodbus.simulator.simutils import DataType

    img = model.image

    def bits(values: list[int]) -> list[SimData]:
        padded = [bool(v) for v in values] + [False] * (-len(values) % 16)
        return [SimData(0, values=padded, datatype=DataType.BITS)]

    def regs(values: list[int]) -> list[SimData]:
        return [SimData(0, values=list(values), datatype=DataType.REGISTERS)]

    return SimDevice(
        id=plc.unit,
        simdata=(bits(img.coils), bits(img.discretes), regs(img.holding), regs(img.input)),
    )


def _identity(plc: Plc) -> object:
    from pymodbus.pdu.device import ModbusDeviceIdentification

    ident = plc.identity
    return ModbusDeviceIdentification(
        info_name={
            "VendorName": ident.vendor,
            "ProductCode": ident.product,
            "MajorMinorRevision": ident.revision,
        }
    )


class LivePlc:
    """The server and the process loop of one PLC."""

    def __init__(self, site: SiteDef, address: str, host: str, port: int, seed: int) -> None:
        from pymodbus.server import ModbusTcpServer

        self.plc = site.plc(address)
        self.model = PlcModel(site, self.plc, random.Random(f"{seed}:{address}"), time.time())
        self.listen_only = ListenOnly()
        self.server = ModbusTcpServer(
            [_device(self.plc, self.model)],  # type: ignore[list-item]
            address=(host, port),
            identity=_identity(self.plc),  # type: ignore[arg-type]
            trace_packet=self.listen_only.packet,
            trace_pdu=self.listen_only.pdu,  # type: ignore[arg-type]
        )

    async def _sync(self, dt: float) -> None:
        unit = self.plc.unit
        img = self.model.image
        coils = await self.server.async_getValues(unit, 1, 0, len(img.coils))
        holding = await self.server.async_getValues(unit, 3, 0, len(img.holding))
        img.coils[:] = [1 if v else 0 for v in coils]
        img.holding[:] = list(holding)
        if dt > 0:
            self.model.process.step(dt)
        await self.server.async_setValues(unit, 1, 0, [bool(v) for v in img.coils])
        await self.server.async_setValues(unit, 2, 0, [bool(v) for v in img.discretes])
        await self.server.async_setValues(unit, 3, 0, list(img.holding))
        await self.server.async_setValues(unit, 4, 0, list(img.input))

    async def run(self, stop: asyncio.Event) -> None:
        serving = asyncio.create_task(self.server.serve_forever())
        last = time.monotonic()
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), STEP)
                now = time.monotonic()
                await self._sync(now - last)
                last = now
        finally:
            await self.server.shutdown()
            serving.cancel()


async def _main(args: argparse.Namespace) -> None:
    site = load_site(args.site)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    plc = LivePlc(site, args.plc, args.host or args.plc, args.port, args.seed)
    await plc.run(stop)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--site", required=True)
    parser.add_argument("--plc", required=True, help="the PLC's address (its asset)")
    parser.add_argument("--host", help="address to listen on (default: the PLC's)")
    parser.add_argument("--port", type=int, default=502)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
