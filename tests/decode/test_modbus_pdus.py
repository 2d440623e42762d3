"""Table-driven: Modbus ADU bytes -> decoded fields, for every public function code.

Malformed frames seen in the field or in fuzzing each become a named case here.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest

from sentinel.decode.modbus import ModbusAnalyzer
from sentinel.events import Anomaly, ConnId, ModbusMessage
from tests.craft import adu


class FakeFlow:
    uid = "Ctest"
    conn = ConnId("192.0.2.10", 40000, "192.0.2.20", 502)
    hist_bits = (2, 1)  # a handshake was seen
    frame = last_frame = 1


class Bus:
    def __init__(self) -> None:
        self.messages: list[ModbusMessage] = []
        self.anomalies: list[Anomaly] = []

    def modbus(self, msg: ModbusMessage) -> None:
        self.messages.append(msg)

    def anomaly(self, event: Anomaly) -> None:
        self.anomalies.append(event)


def decode(*adus: tuple[bool, bytes]) -> Bus:
    bus = Bus()
    analyzer = ModbusAnalyzer(FakeFlow(), bus)
    for i, (is_orig, data) in enumerate(adus):
        analyzer.feed(is_orig, data, 100.0 + i, i + 1)
    analyzer.finish(200.0)
    return bus


def regs(*values: int) -> bytes:
    return struct.pack(f">{len(values)}H", *values)


# (name, request PDU, response PDU, expected request fields, expected response fields)
CASES: list[tuple[str, bytes, bytes, dict[str, Any], dict[str, Any]]] = [
    (
        "read coils",
        b"\x01" + regs(19, 10),
        b"\x01\x02\xcd\x01",
        {"address": 19, "quantity": 10},
        {"values": [True, False, True, True, False, False, True, True, True, False]},
    ),
    (
        "read discrete inputs",
        b"\x02" + regs(196, 3),
        b"\x02\x01\x05",
        {"address": 196, "quantity": 3},
        {"values": [True, False, True]},
    ),
    (
        "read holding registers",
        b"\x03" + regs(107, 3),
        b"\x03\x06" + regs(555, 0, 100),
        {"address": 107, "quantity": 3},
        {"address": 107, "quantity": 3, "values": [555, 0, 100]},
    ),
    (
        "read input registers",
        b"\x04" + regs(8, 1),
        b"\x04\x02" + regs(10),
        {"address": 8, "quantity": 1},
        {"address": 8, "quantity": 1, "values": [10]},
    ),
    (
        "write single coil",
        b"\x05" + regs(172, 0xFF00),
        b"\x05" + regs(172, 0xFF00),
        {"address": 172, "values": [True]},
        {"address": 172, "values": [True]},
    ),
    (
        "write single register",
        b"\x06" + regs(1, 3),
        b"\x06" + regs(1, 3),
        {"address": 1, "values": [3]},
        {"address": 1, "values": [3]},
    ),
    ("read exception status", b"\x07", b"\x07\x6d", {}, {"status": 0x6D}),
    (
        "diagnostics restart",
        b"\x08" + regs(1, 0xFF00),
        b"\x08" + regs(1, 0xFF00),
        {"sub_function": 1, "sub_function_name": "RESTART_COMMUNICATIONS_OPTION", "data": [0xFF00]},
        {"sub_function": 1, "sub_function_name": "RESTART_COMMUNICATIONS_OPTION", "data": [0xFF00]},
    ),
    (
        "diagnostics listen only",
        b"\x08" + regs(4, 0),
        b"\x08" + regs(4, 0),
        {"sub_function": 4, "sub_function_name": "FORCE_LISTEN_ONLY_MODE", "data": [0]},
        {"sub_function": 4, "sub_function_name": "FORCE_LISTEN_ONLY_MODE", "data": [0]},
    ),
    (
        "comm event counter",
        b"\x0b",
        b"\x0b" + regs(0xFFFF, 0x108),
        {},
        {"status": 0xFFFF, "event_count": 0x108},
    ),
    (
        "comm event log",
        b"\x0c",
        b"\x0c\x08" + regs(0, 0x108, 0x121) + b"\x20\x00",
        {},
        {"status": 0, "event_count": 0x108, "message_count": 0x121, "events": [0x20, 0]},
    ),
    (
        "write multiple coils",
        b"\x0f" + regs(19, 10) + b"\x02\xcd\x01",
        b"\x0f" + regs(19, 10),
        {
            "address": 19,
            "quantity": 10,
            "values": [True, False, True, True, False, False, True, True, True, False],
        },
        {"address": 19, "quantity": 10},
    ),
    (
        "write multiple registers",
        b"\x10" + regs(1, 2) + b"\x04" + regs(10, 258),
        b"\x10" + regs(1, 2),
        {"address": 1, "quantity": 2, "values": [10, 258]},
        {"address": 1, "quantity": 2},
    ),
    (
        "report server id",
        b"\x11",
        b"\x11\x06\x2a\xffPLC1",
        {},
        {"server_id": 42, "run_indicator": True, "server_id_data": "PLC1"},
    ),
    (
        "read file record",
        b"\x14\x0e\x06" + regs(4, 1, 2) + b"\x06" + regs(3, 9, 2),
        b"\x14\x0c\x05\x06" + regs(0x0DFE, 0x20) + b"\x05\x06" + regs(0x33CD, 0x40),
        {
            "records": [
                {"ref_type": 6, "file": 4, "record": 1, "length": 2},
                {"ref_type": 6, "file": 3, "record": 9, "length": 2},
            ]
        },
        {
            "records": [
                {"ref_type": 6, "values": [0x0DFE, 0x20]},
                {"ref_type": 6, "values": [0x33CD, 0x40]},
            ]
        },
    ),
    (
        "write file record",
        b"\x15\x0d\x06" + regs(4, 7, 3) + regs(0x06AF, 0x04BE, 0x100D),
        b"\x15\x0d\x06" + regs(4, 7, 3) + regs(0x06AF, 0x04BE, 0x100D),
        {"records": [{"ref_type": 6, "file": 4, "record": 7, "values": [0x06AF, 0x04BE, 0x100D]}]},
        {"records": [{"ref_type": 6, "file": 4, "record": 7, "values": [0x06AF, 0x04BE, 0x100D]}]},
    ),
    (
        "mask write register",
        b"\x16" + regs(4, 0xF2, 0x25),
        b"\x16" + regs(4, 0xF2, 0x25),
        {"address": 4, "and_mask": 0xF2, "or_mask": 0x25},
        {"address": 4, "and_mask": 0xF2, "or_mask": 0x25},
    ),
    (
        "read/write multiple registers",
        b"\x17" + regs(3, 6, 14, 3) + b"\x06" + regs(255, 255, 255),
        b"\x17\x0c" + regs(0xFE, 0xACF0, 0xCD, 0xFF, 3, 0xD),
        {
            "read_address": 3,
            "read_quantity": 6,
            "address": 14,
            "quantity": 3,
            "values": [255, 255, 255],
        },
        {"address": 3, "quantity": 6, "values": [0xFE, 0xACF0, 0xCD, 0xFF, 3, 0xD]},
    ),
    (
        "read fifo queue",
        b"\x18" + regs(0x4DE),
        b"\x18" + regs(6, 2) + regs(0x1B8, 0x1284),
        {"address": 0x4DE},
        {"values": [0x1B8, 0x1284]},
    ),
    (
        "read device identification",
        b"\x2b\x0e\x01\x00",
        b"\x2b\x0e\x01\x01\x00\x00\x03\x00\x07Company\x01\x07Product\x02\x05V2.11",
        {"mei_type": 14, "read_device_id_code": 1, "object_id": 0},
        {
            "mei_type": 14,
            "read_device_id_code": 1,
            "conformity_level": 1,
            "more_follows": False,
            "next_object_id": 0,
            "objects": {
                "VendorName": "Company",
                "ProductCode": "Product",
                "MajorMinorRevision": "V2.11",
            },
        },
    ),
]


@pytest.mark.parametrize("name,req,resp,req_fields,resp_fields", CASES, ids=[c[0] for c in CASES])
def test_function_codes(name, req, resp, req_fields, resp_fields):
    bus = decode((True, adu(7, 1, req)), (False, adu(7, 1, resp)))
    assert bus.anomalies == []
    request, response = bus.messages
    assert request.fields == req_fields
    assert response.fields == resp_fields
    assert (request.fc, request.pdu_type, response.pdu_type) == (req[0], "REQ", "RESP")
    assert response.latency == pytest.approx(1.0)
    assert request.len == len(req) + 1
    assert response.request is request and request.request is None


def test_every_public_function_is_covered():
    from sentinel.decode.modbus_codes import PUBLIC_FUNCTIONS

    assert {c[1][0] for c in CASES} == PUBLIC_FUNCTIONS


def test_exception_response():
    bus = decode((True, adu(1, 1, b"\x03" + regs(0, 200))), (False, adu(1, 1, b"\x83\x02")))
    resp = bus.messages[1]
    assert (resp.fc, resp.func, resp.exception) == (
        3,
        "READ_HOLDING_REGISTERS_EXCEPTION",
        "ILLEGAL_DATA_ADDRESS",
    )
    assert resp.fields == {"exception_code": 2}


def test_unknown_function_named_like_zeek():
    bus = decode((True, adu(1, 1, b"\x1d\x00\x00")), (False, adu(1, 1, b"\x9d\x01")))
    assert [m.func for m in bus.messages] == ["unknown-29", "unknown-157"]
    assert [a.name for a in bus.anomalies] == ["modbus.unknown_function"] * 2


def test_several_adus_in_one_segment_and_one_across_segments():
    stream = adu(1, 1, b"\x03" + regs(0, 1)) + adu(2, 1, b"\x03" + regs(1, 1))
    stream += adu(3, 1, b"\x06" + regs(5, 9))
    bus = decode((True, stream[:3]), (True, stream[3:20]), (True, stream[20:]))
    assert [m.tid for m in bus.messages] == [1, 2, 3]
    assert bus.anomalies == []


@pytest.mark.parametrize(
    "name,data,anomaly",
    [
        ("length field zero", struct.pack(">HHHB", 1, 0, 0, 1) + b"\x03", "modbus.invalid_length"),
        (
            "length field too large",
            struct.pack(">HHHB", 1, 0, 300, 1) + b"\x03",
            "modbus.invalid_length",
        ),
        (
            "protocol id not zero",
            struct.pack(">HHHB", 1, 5, 6, 1) + b"\x03" + regs(0, 1),
            "modbus.invalid_protocol_id",
        ),
        ("read request too short", adu(2, 1, b"\x03\x00\x01"), "modbus.truncated_pdu"),
        ("read request too long", adu(2, 1, b"\x03" + regs(0, 1, 2)), "modbus.invalid_length"),
        ("coil value not 0 or FF00", adu(2, 1, b"\x05" + regs(3, 0x1234)), "modbus.invalid_value"),
        (
            "byte count larger than data",
            adu(2, 1, b"\x10" + regs(1, 2) + b"\x08" + regs(1)),
            "modbus.truncated_pdu",
        ),
        (
            "unknown diagnostics sub-function",
            adu(2, 1, b"\x08" + regs(0x99, 0)),
            "modbus.unknown_diagnostic_subfunction",
        ),
    ],
)
def test_malformed_frames_become_named_anomalies(name, data, anomaly):
    good = adu(1, 1, b"\x03" + regs(0, 1))  # confirms the connection as Modbus first
    bus = decode((True, good), (True, data))
    assert anomaly in [a.name for a in bus.anomalies]


def test_non_modbus_first_bytes_disable_the_decoder():
    tls_hello = bytes.fromhex("16030100a5010000a10303") + bytes(40)
    bus = decode((True, tls_hello), (True, adu(1, 1, b"\x03" + regs(0, 1))))
    assert bus.messages == []
    assert [a.name for a in bus.anomalies] == ["modbus.non_modbus_traffic"]


def test_unsolicited_response():
    bus = decode(
        (True, adu(1, 1, b"\x03" + regs(0, 1))),
        (False, adu(1, 1, b"\x03\x02\x00\x07")),
        (False, adu(9, 1, b"\x03\x02\x00\x07")),
    )
    assert [a.name for a in bus.anomalies] == ["modbus.unsolicited_response"]
    assert bus.messages[1].latency is not None and bus.messages[2].latency is None
    assert bus.messages[1].request is bus.messages[0] and bus.messages[2].request is None


def test_responses_carry_their_request_not_a_field():
    """``request`` pairs like ``latency`` (transaction id, function code and unit id), the
    exception responses included; it is no tuple field, so records built by unpacking the
    message are those of an unpaired message, and ``_replace`` keeps it."""
    read = adu(1, 1, b"\x03" + regs(0, 200))
    bus = decode(
        (True, read),
        (True, adu(2, 1, b"\x06" + regs(5, 9))),
        (True, adu(3, 1, b"\x03" + regs(0, 1))),
        (False, adu(2, 1, b"\x06" + regs(5, 9))),
        (False, adu(1, 1, b"\x83\x02")),
        (False, adu(3, 2, b"\x03\x02\x00\x07")),  # another unit: not the answer
    )
    req1, req2, _req3, resp2, resp1, other = bus.messages
    assert (resp2.request, resp1.request, other.request) == (req2, req1, None)
    assert resp1.request is req1 and resp1.is_exception
    assert len(resp1) == len(req1) == len(ModbusMessage._fields)
    assert tuple(resp1) == tuple(ModbusMessage(*resp1))  # the same values as a plain message
    assert resp1._replace(fields={}).request is req1


def test_request_flood_is_capped():
    bus = Bus()
    analyzer = ModbusAnalyzer(FakeFlow(), bus, max_pending=10)
    for tid in range(25):
        analyzer.feed(True, adu(tid, 1, b"\x03" + regs(0, 1)), float(tid), tid)
    analyzer.finish(30.0)
    assert [a.name for a in bus.anomalies] == ["modbus.flooded"]
    assert analyzer.unanswered == 25


def test_header_of_an_adu_cut_by_the_end_is_kept():
    full = adu(4, 1, b"\x10" + regs(1, 2) + b"\x04" + regs(10, 258))
    bus = decode((True, adu(3, 1, b"\x03" + regs(0, 1))), (True, full[:10]))
    assert [m.tid for m in bus.messages] == [3, 4]
    assert bus.messages[1].fields == {} and bus.messages[1].func == "WRITE_MULTIPLE_REGISTERS"
    assert [a.name for a in bus.anomalies] == ["modbus.incomplete_adu"]
