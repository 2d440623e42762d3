"""A pymodbus TCP server for the scheduler tests, one per process (pymodbus keeps the device
identity in a process-wide singleton, so two identities need two processes).

    python plc_server.py HOST PORT LOG --vendor V --product P --revision R
        [--holding 215,500,...] [--coils 1,1,0] [--delay S --slow-after N]

Prints ``ready`` once it listens; appends the function code of every request to LOG.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("log")
    p.add_argument("--vendor", default="Acme Controls")
    p.add_argument("--product", default="AHU-3000")
    p.add_argument("--revision", default="2.1.0")
    p.add_argument("--holding", default="215,500,150,80,0,0,0,0")
    p.add_argument("--coils", default="1,1,0")
    p.add_argument("--unit", type=int, default=1)
    p.add_argument("--delay", type=float, default=0.0)
    p.add_argument("--slow-after", type=int, default=0)
    a = p.parse_args()
    logging.basicConfig(level=logging.CRITICAL)
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)

    from pymodbus.pdu.device import ModbusDeviceIdentification
    from pymodbus.server import ModbusTcpServer
    from pymodbus.simulator import SimData, SimDevice
    from pymodbus.simulator.simutils import DataType

    coils = [v == "1" for v in a.coils.split(",")]
    coils += [False] * (-len(coils) % 16)
    holding = [int(v) for v in a.holding.split(",")]
    device = SimDevice(
        id=a.unit,
        simdata=(
            [SimData(0, values=coils, datatype=DataType.BITS)],
            [SimData(0, values=[False] * 16, datatype=DataType.BITS)],
            [SimData(0, values=holding, datatype=DataType.REGISTERS)],
            [SimData(0, values=[1, 2, 3, 4], datatype=DataType.REGISTERS)],
        ),
    )
    ident = ModbusDeviceIdentification(
        info_name={
            "VendorName": a.vendor,
            "ProductCode": a.product,
            "MajorMinorRevision": a.revision,
        }
    )
    log = open(a.log, "a", buffering=1)  # noqa: SIM115 - open for the process's lifetime
    seen = [0]

    def trace_packet(sending: bool, data: bytes) -> bytes:
        if not sending and len(data) >= 8:
            seen[0] += 1
            log.write(f"{data[7]}\n")
        if sending and a.delay and seen[0] > a.slow_after:
            time.sleep(a.delay)  # blocks the loop: a slow controller
        return data

    async def run() -> None:
        server = ModbusTcpServer(
            [device], address=(a.host, a.port), identity=ident, trace_packet=trace_packet
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        task = asyncio.ensure_future(server.serve_forever())
        for _ in range(200):
            if server.transport is not None:
                break
            await asyncio.sleep(0.01)
        print("ready", flush=True)
        await stop.wait()
        await server.shutdown()
        task.cancel()

    asyncio.run(run())
    sys.exit(0)


if __name__ == "__main__":
    main()
