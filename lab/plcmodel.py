"""A lab PLC's Modbus behaviour, computed: what the live lab's PLC answers, byte for byte.

The live lab's PLCs are pymodbus servers (``sentinel.lab.plc``); the synthetic generator
must answer exactly as they do, so this module reproduces their behaviour, including
pymodbus's own choices where the spec leaves room, and the test suite checks the two
against each other request by request (``tests/lab/test_plcmodel.py``):

- the PLC serves one unit id; any other unit gets exception 04 (server device failure);
- reads beyond a table, and writes beyond it, get exception 02;
- a function pymodbus does not know, a quantity outside the spec's range and a PDU too
  short for its function get exception 01 with function code 0 (``80 01``): pymodbus
  answers every request it cannot decode so; FC 15/16 whose byte count does not match
  get exception 03;
- FC 5 takes any non-zero value as ON and echoes 0xFF00;
- FC 43/14 answers with conformity level 0x83 and the objects of the asked category;
  FC 17 answers "vendor-product-revision" followed by the run indicator 0xFF;
- FC 8 sub-function 04 (force listen-only mode, spec 6.8.1) silences the PLC: no answer to
  anything until sub-function 01 (restart communications), which is not answered either;
  the lab adds this to pymodbus, which would otherwise answer and keep talking;
- a frame with a protocol id other than 0, or one that is not Modbus at all, gets no answer
  and leaves the connection deaf (pymodbus's framer never resynchronises); a length field
  beyond the data received waits for data that never comes.
"""

from __future__ import annotations

import random
import struct

from sentinel.lab.config import Plc, SiteDef
from sentinel.lab.process import Image, make_process

_MBAP = struct.Struct(">HHHB")
_U16x2 = struct.Struct(">HH")
STEP = 0.5  # seconds of process time per step, in the synthetic generator and the live PLC

ILLEGAL_FUNCTION, ILLEGAL_ADDRESS, ILLEGAL_VALUE, DEVICE_FAILURE = 1, 2, 3, 4
UNDECODABLE = b"\x80\x01"  # pymodbus's answer to what it cannot decode
# pymodbus's diagnostics sub-functions that echo their data (the rest are counters)
_DIAG_ECHO = {0x00, 0x01, 0x03, 0x0A, 0x14}
_DIAG_KNOWN = {0x00, 0x01, 0x02, 0x03, 0x04, 0x0A, 0x0B, 0x0C, 0x0D, 0x0E, 0x0F, 0x10, 0x11}
_DIAG_KNOWN |= {0x12, 0x14}
_PDU_SIZES = {1: 5, 2: 5, 3: 5, 4: 5, 5: 5, 6: 5, 7: 1, 11: 1, 12: 1, 17: 1}


def make_image(plc: Plc) -> Image:
    t = plc.tables
    return Image(t.coils, t.discretes, t.holding, t.input)


class PlcModel:
    """Register image, physical process and Modbus answers of one lab PLC."""

    def __init__(self, site: SiteDef, plc: Plc, rng: random.Random, t0: float) -> None:
        self.plc = plc
        self.unit = plc.unit
        self.image = make_image(plc)
        self.process = make_process(plc.process, self.image, site.tags(plc.asset), plc.params, rng)
        self.process.init()
        self.t = t0
        self.listen_only = False
        ident = plc.identity
        self.objects = (ident.vendor.encode(), ident.product.encode(), ident.revision.encode())

    def advance(self, now: float) -> None:
        """Run the process up to ``now`` in steps of ``STEP`` seconds."""
        while self.t + STEP <= now:
            self.process.step(STEP)
            self.t += STEP

    # -- framing, per connection
    def session(self) -> Session:
        return Session(self)

    # -- one request
    def answer(self, unit: int, pdu: bytes) -> bytes | None:
        """The response PDU to one complete request PDU, or None for no answer."""
        fc = pdu[0]
        if fc == 8 and len(pdu) >= 3:
            sub = struct.unpack_from(">H", pdu, 1)[0]
            if sub == 0x04:
                self.listen_only = True
                return None
            if sub == 0x01 and self.listen_only:
                self.listen_only = False
                return None
        if self.listen_only:
            return None
        expected = _PDU_SIZES.get(fc)
        if expected is not None and len(pdu) < expected:
            return UNDECODABLE
        try:
            return self._answer(unit, fc, pdu)
        except (struct.error, IndexError):
            return UNDECODABLE

    def _answer(self, unit: int, fc: int, pdu: bytes) -> bytes:
        img = self.image
        if fc in (1, 2, 3, 4, 5, 6, 15, 16) and unit != self.unit:
            return _exception(fc, DEVICE_FAILURE)
        if fc in (1, 2):
            address, quantity = _U16x2.unpack_from(pdu, 1)
            if not 1 <= quantity <= 2000:
                return UNDECODABLE
            table = img.coils if fc == 1 else img.discretes
            if not _bits_fit(address, quantity, len(table)):
                return _exception(fc, ILLEGAL_ADDRESS)
            return bytes((fc,)) + _pack_bits(table[address : address + quantity])
        if fc in (3, 4):
            address, quantity = _U16x2.unpack_from(pdu, 1)
            if not 1 <= quantity <= 125:
                return UNDECODABLE
            table = img.holding if fc == 3 else img.input
            if address + quantity > len(table):
                return _exception(fc, ILLEGAL_ADDRESS)
            values = table[address : address + quantity]
            return struct.pack(f">BB{quantity}H", fc, 2 * quantity, *values)
        if fc == 5:
            address, value = _U16x2.unpack_from(pdu, 1)
            if not _bits_fit(address, 1, len(img.coils)):
                return _exception(fc, ILLEGAL_ADDRESS)
            img.coils[address] = 1 if value else 0
            return struct.pack(">BHH", 5, address, 0xFF00 if value else 0)
        if fc == 6:
            address, value = _U16x2.unpack_from(pdu, 1)
            if address >= len(img.holding):
                return _exception(fc, ILLEGAL_ADDRESS)
            img.holding[address] = value
            return pdu[:5]
        if fc == 15:
            address, quantity = _U16x2.unpack_from(pdu, 1)
            count = pdu[5]
            if not 1 <= quantity <= 1968 or count != (quantity + 7) // 8 or len(pdu) < 6 + count:
                return _exception(fc, ILLEGAL_VALUE)
            if not _bits_fit(address, quantity, len(img.coils)):
                return _exception(fc, ILLEGAL_ADDRESS)
            for i in range(quantity):
                img.coils[address + i] = pdu[6 + i // 8] >> (i % 8) & 1
            return pdu[:5]
        if fc == 16:
            address, quantity = _U16x2.unpack_from(pdu, 1)
            count = pdu[5]
            if not 1 <= quantity <= 123 or count != 2 * quantity or len(pdu) < 6 + count:
                return _exception(fc, ILLEGAL_VALUE)
            if address + quantity > len(img.holding):
                return _exception(fc, ILLEGAL_ADDRESS)
            img.holding[address : address + quantity] = struct.unpack_from(f">{quantity}H", pdu, 6)
            return pdu[:5]
        if fc == 7:
            return b"\x07\x00"
        if fc == 8:
            sub = struct.unpack_from(">H", pdu, 1)[0]
            if sub not in _DIAG_KNOWN:
                return _exception(fc, DEVICE_FAILURE)
            if sub in _DIAG_ECHO:
                return pdu
            return pdu[:3] + b"\x00\x00"
        if fc == 11:
            return b"\x0b\x00\x00\x00\x00"
        if fc == 12:
            return b"\x0c\x06" + bytes(6)
        if fc == 17:
            text = b"-".join(self.objects)
            return bytes((17, len(text) + 1)) + text + b"\xff"
        if fc == 43:
            return self._device_id(pdu)
        return UNDECODABLE

    def _device_id(self, pdu: bytes) -> bytes:
        if len(pdu) < 4 or pdu[1] != 0x0E:
            return _exception(43, ILLEGAL_FUNCTION)
        code, object_id = pdu[2], pdu[3]
        if code == 4:
            if object_id >= len(self.objects):
                return _exception(43, ILLEGAL_ADDRESS)
            wanted = [object_id]
        else:
            wanted = list(range(len(self.objects)))
        body = b"".join(bytes((i, len(self.objects[i]))) + self.objects[i] for i in wanted)
        return bytes((0x2B, 0x0E, code, 0x83, 0, 0, len(wanted))) + body


class Session:
    """One TCP connection's byte stream into the PLC, framed as pymodbus frames it."""

    def __init__(self, model: PlcModel) -> None:
        self.model = model
        self.buffer = b""
        self.deaf = False

    def feed(self, data: bytes) -> list[bytes]:
        """Response ADUs to the bytes received (several requests may arrive at once)."""
        if self.deaf:
            return []
        self.buffer += data
        out = []
        while len(self.buffer) >= 8:
            tid, pid, length, unit = _MBAP.unpack_from(self.buffer)
            if pid != 0 or length < 2:
                self.deaf = True
                self.buffer = b""
                break
            if len(self.buffer) < 6 + length:
                break
            pdu = self.buffer[7 : 6 + length]
            self.buffer = self.buffer[6 + length :]
            answer = self.model.answer(unit, pdu)
            if answer is not None:
                out.append(_MBAP.pack(tid, 0, len(answer) + 1, unit) + answer)
        return out


def _exception(fc: int, code: int) -> bytes:
    return bytes((fc | 0x80, code))


def _bits_fit(address: int, quantity: int, size: int) -> bool:
    """pymodbus stores 16 bits per register: a read fits if its registers all exist."""
    registers = (size + 15) // 16
    return address // 16 + (address % 16 + quantity + 15) // 16 <= registers


def _pack_bits(bits: list[int]) -> bytes:
    packed = bytearray((len(bits) + 7) // 8)
    for i, bit in enumerate(bits):
        if bit:
            packed[i // 8] |= 1 << (i % 8)
    return bytes((len(packed),)) + bytes(packed)
