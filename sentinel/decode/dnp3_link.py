"""A native DNP3 link-layer checker: the three DNP3 app-layer events tshark cannot give.

DNP3 itself is decoded by tshark (``sentinel/decode/ot/dnp3.py``), but Wireshark's dissector
does not dissect a link frame whose header CRC is wrong or whose length is below 5 (the bytes
stay plain TCP) and keeps no transaction count. This analyzer frames the TCP stream of each
DNP3 flow (the ports of ``ot.dnp3.ports``, TCP only) beside the tshark path and raises, as the
pipeline's ``Anomaly`` events, exactly these Suricata DNP3 app-layer events
(docs/rules.md, "DNP3 events"; spec: shared/specs/suricata-ot-rules.md section 4):

- ``dnp3.bad_link_crc``: the CRC of a link header (start bytes 0x05 0x64, length, control,
  destination, source: IEEE 1815-2012 9.2.4.1) does not match its 8 bytes. The checker then
  resynchronises on the next 0x05 0x64.
- ``dnp3.len_too_small``: a link header (with a good CRC) whose length is below 5, the size of
  control + destination + source (IEEE 1815 9.2.4.1.3). The header is skipped. The other case
  of Suricata's ``len_too_small``, a user-data frame too short for the transport and
  application headers, stays with the tshark path (``sentinel/decode/ot/dnp3.py``): each
  event has a single producer.
- ``dnp3.flooded``: more than 32 live transactions in the flow (Suricata's ``max-tx``).
  A live transaction is a request (the first segment of a first application fragment, FIR in
  both the transport and application headers, with a request function code that expects a
  response: not CONFIRM nor the ``*_NR`` functions nor AUTHENTICATE_ERR) not yet answered by a
  response (RESPONSE 0x81 or AUTHENTICATE_RESP 0x83) with the same link address pair and
  application sequence; a response answers every live request of its pair and sequence (a
  retry repeats the sequence). Raised once, re-armed when the count falls below 32.

Only frames whose header and data-block CRCs are right count for ``flooded``; a data block
CRC mismatch is the tshark path's ``bad_transport_crc``. A direction whose first bytes are not
a frame start (the capture began mid-connection) and a direction after a capture gap are
resynchronised silently: ``bad_link_crc`` is raised only once frames were in step.

State is bounded: per direction at most one partial link frame (292 bytes) is buffered; the
live transaction table holds at most ``MAX_KEYS`` (address pair, sequence) keys of at most
``MAX_PER_KEY`` requests each (the oldest key is dropped first). Hostile bytes never raise.
The analyzer does not set the flow's ``service`` (flows.jsonl is the same with OT decoding on
or off).
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import crcmod.predefined

from sentinel.events import Anomaly

log = logging.getLogger(__name__)

# CRC-16/DNP (IEEE 1815-2012 9.2.4.1.1 and annex E: polynomial 0x3D65, reflected, final
# complement; check value 0xEA82), sent least significant octet first.
crc16_dnp = crcmod.predefined.mkPredefinedCrcFun("crc-16-dnp")

START = b"\x05\x64"  # IEEE 1815 9.2.4.1.1: the two start octets
HEADER_SIZE = 10  # start (2), length, control, destination (2), source (2), CRC (2)
MIN_LENGTH = 5  # 9.2.4.1.3: the length counts control, destination and source, then user data
BLOCK = 16  # 9.2.4.1.1: user data go in blocks of 16 octets, each followed by its CRC
MAX_FRAME = HEADER_SIZE + 250 + 2 * 16  # length 255: 250 user octets in 16 blocks
CTRL_PRM = 0x40  # 9.2.4.1.3.2: primary (initiating) frame
USER_DATA = frozenset({3, 4})  # primary link functions CONFIRMED / UNCONFIRMED_USER_DATA
TH_FIR = 0x40  # transport header (8.2.1): first segment of a fragment
AC_FIR = 0x80  # application control (4.2.2.4): first fragment of a message
AC_SEQ = 0x0F
# Request functions that expect no response (IEEE 1815 4.2.2.5): CONFIRM, DIRECT_OPERATE_NR,
# IMMED_FREEZE_NR, FREEZE_CLEAR_NR, FREEZE_AT_TIME_NR, AUTHENTICATE_ERR.
NO_RESPONSE = frozenset({0x00, 0x06, 0x08, 0x0A, 0x0C, 0x21})
ANSWERS = frozenset({0x81, 0x83})  # RESPONSE, AUTHENTICATE_RESP (not UNSOLICITED_RESPONSE)
MAX_LIVE = 32  # Suricata's DNP3 max-tx: flooded above it, re-armed below it
MAX_KEYS = 256  # (master, outstation, sequence) keys kept per flow
MAX_PER_KEY = 64  # live requests counted per key


class EventBus(Protocol):
    def anomaly(self, event: Anomaly) -> None: ...


def link_ports(config: Any) -> frozenset[int]:
    """The TCP ports the checker runs on: ``ot.dnp3.ports`` when OT decoding and DNP3 are on
    (``sentinel analyze --no-ot`` turns it off with the tshark path)."""
    from sentinel.decode.tshark import effective_settings  # the settings with CLI overrides

    settings = effective_settings(config)
    if "dnp3" not in settings.enabled_protocols():
        return frozenset()
    return frozenset(settings.dnp3.ports)


class Dnp3LinkAnalyzer:
    """DNP3 link framing over one TCP connection (see the module docstring); the flow table's
    analyzer interface (``feed``, ``gap``, ``finish``)."""

    __slots__ = (
        "_buffers",
        "_bus",
        "_flooded",
        "_live",
        "_live_count",
        "_lost",
        "conn",
        "flow",
        "frames",
        "service",
        "uid",
    )

    def __init__(self, flow: Any, bus: EventBus) -> None:
        self.flow = flow
        self.uid: str = flow.uid
        self.conn = flow.conn
        self._bus = bus
        self.service: str | None = None  # see the module docstring
        self.frames = 0  # complete link frames with a good header CRC
        self._buffers = [b"", b""]  # [responder, originator]
        # Per direction: None until its first two bytes are seen, then whether it is out of
        # step with the frames (silent resynchronisation).
        self._lost: list[bool | None] = [None, None]
        self._live: dict[tuple[int, int, int], int] = {}  # (master, outstation, seq) -> n
        self._live_count = 0
        self._flooded = False

    # -- the flow table's interface
    def feed(self, is_orig: bool, data: bytes, ts: float, frame: int) -> None:
        buf = self._buffers[is_orig]
        buf = buf + data if buf else data
        size = len(buf)
        lost = self._lost[is_orig]
        if lost is None:
            if size < 2:
                self._buffers[is_orig] = buf
                return
            lost = self._lost[is_orig] = buf[:2] != START
        pos = 0
        while True:
            start = buf.find(START, pos)
            if start < 0:
                # A trailing 0x05 may be the first start octet of the next frame, unless a
                # frame just ended on it (its last CRC octet).
                pos = size - 1 if pos < size and buf[-1:] == b"\x05" else size
                break
            if size - start < HEADER_SIZE:
                pos = start
                break
            want = buf[start + 8] | buf[start + 9] << 8
            got = crc16_dnp(buf[start : start + 8])
            if got != want:
                if not lost:
                    self._anomaly(
                        is_orig,
                        ts,
                        frame,
                        "dnp3.bad_link_crc",
                        f"link header CRC 0x{want:04x}, computed 0x{got:04x}",
                    )
                    lost = self._lost[is_orig] = True
                pos = start + 2  # resynchronise on the next start octets
                continue
            lost = self._lost[is_orig] = False
            length = buf[start + 2]
            if length < MIN_LENGTH:
                self.frames += 1
                self._anomaly(
                    is_orig,
                    ts,
                    frame,
                    "dnp3.len_too_small",
                    f"link length {length} (at least {MIN_LENGTH}: control, destination, source)",
                )
                pos = start + HEADER_SIZE
                continue
            user = length - MIN_LENGTH
            end = start + HEADER_SIZE + user + 2 * ((user + BLOCK - 1) // BLOCK)
            if end > size:
                pos = start
                break
            self.frames += 1
            if user:
                self._user_data(buf, start, user, ts, frame, is_orig)
            pos = end
        self._buffers[is_orig] = buf[pos:] if pos < size else b""

    def gap(self, is_orig: bool, ts: float, frame: int) -> None:
        """Bytes are missing: drop the partial frame and resynchronise silently."""
        self._buffers[is_orig] = b""
        self._lost[is_orig] = True

    def finish(self, ts: float) -> None:
        self._buffers = [b"", b""]
        self._live.clear()
        self._live_count = 0

    @property
    def live(self) -> int:
        """Requests not answered yet (as counted for ``flooded``)."""
        return self._live_count

    # -- internals
    def _user_data(
        self, buf: bytes, start: int, user: int, ts: float, frame: int, is_orig: bool
    ) -> None:
        ctrl = buf[start + 3]
        if not ctrl & CTRL_PRM or ctrl & 0x0F not in USER_DATA:
            return
        first = b""
        at = start + HEADER_SIZE
        left = user
        while left:
            n = BLOCK if left > BLOCK else left
            block = buf[at : at + n]
            if crc16_dnp(block) != buf[at + n] | buf[at + n + 1] << 8:
                return  # the frame is dropped (bad_transport_crc: the tshark path's event)
            if not first:
                first = block
            at += n + 2
            left -= n
        if len(first) < 3 or not first[0] & TH_FIR or not first[1] & AC_FIR:
            return
        seq, fc = first[1] & AC_SEQ, first[2]
        dst = buf[start + 4] | buf[start + 5] << 8
        src = buf[start + 6] | buf[start + 7] << 8
        if fc in ANSWERS:
            self._answered((dst, src, seq))
        elif fc < 0x80 and fc not in NO_RESPONSE:
            self._request((src, dst, seq), fc, ts, frame, is_orig)

    def _request(
        self, key: tuple[int, int, int], fc: int, ts: float, frame: int, is_orig: bool
    ) -> None:
        live = self._live
        n = live.get(key)
        if n is None:
            if len(live) >= MAX_KEYS:
                oldest = next(iter(live))
                self._live_count -= live.pop(oldest)
            live[key] = 1
            self._live_count += 1
        elif n < MAX_PER_KEY:
            live[key] = n + 1
            self._live_count += 1
        if self._live_count > MAX_LIVE and not self._flooded:
            self._flooded = True
            self._anomaly(
                is_orig,
                ts,
                frame,
                "dnp3.flooded",
                f"{self._live_count} requests without response (more than {MAX_LIVE}); "
                f"last: function {fc}, link {key[0]} -> {key[1]}, sequence {key[2]}",
            )

    def _answered(self, key: tuple[int, int, int]) -> None:
        n = self._live.pop(key, 0)
        if n:
            self._live_count -= n
            if self._flooded and self._live_count < MAX_LIVE:
                self._flooded = False  # re-armed

    def _anomaly(self, is_orig: bool, ts: float, frame: int, name: str, detail: str) -> None:
        self._bus.anomaly(Anomaly(ts, self.uid, self.conn, is_orig, name, detail, frame))
