"""Modbus constants: function codes, exception codes, diagnostics sub-functions, MEI objects.

Names follow Zeek's ``base/protocols/modbus/consts.zeek`` so logs agree with Zeek's; values
cite the MODBUS Application Protocol Specification V1.1b3 (section numbers in comments).
"""

from __future__ import annotations

# Zeek's function_codes table (public codes, spec section 5.1, plus vendor-specific ones).
FUNCTION_NAMES: dict[int, str] = {
    0x01: "READ_COILS",  # 6.1
    0x02: "READ_DISCRETE_INPUTS",  # 6.2
    0x03: "READ_HOLDING_REGISTERS",  # 6.3
    0x04: "READ_INPUT_REGISTERS",  # 6.4
    0x05: "WRITE_SINGLE_COIL",  # 6.5
    0x06: "WRITE_SINGLE_REGISTER",  # 6.6
    0x07: "READ_EXCEPTION_STATUS",  # 6.7 (serial line only)
    0x08: "DIAGNOSTICS",  # 6.8 (serial line only)
    0x0B: "GET_COMM_EVENT_COUNTER",  # 6.9
    0x0C: "GET_COMM_EVENT_LOG",  # 6.10
    0x0F: "WRITE_MULTIPLE_COILS",  # 6.11
    0x10: "WRITE_MULTIPLE_REGISTERS",  # 6.12
    0x11: "REPORT_SLAVE_ID",  # 6.13
    0x14: "READ_FILE_RECORD",  # 6.14
    0x15: "WRITE_FILE_RECORD",  # 6.15
    0x16: "MASK_WRITE_REGISTER",  # 6.16
    0x17: "READ_WRITE_MULTIPLE_REGISTERS",  # 6.17
    0x18: "READ_FIFO_QUEUE",  # 6.18
    0x2B: "ENCAP_INTERFACE_TRANSPORT",  # 6.19-6.21
    0x5B: "OBJECT_MESSAGING",
    # Machine/vendor/network specific functions
    0x09: "PROGRAM_484",
    0x0A: "POLL_484",
    0x0D: "PROGRAM_584_984",
    0x0E: "POLL_584_984",
    0x12: "PROGRAM_884_U84",
    0x13: "RESET_COMM_LINK_884_U84",
    0x28: "PROGRAM_CONCEPT",
    0x29: "MULTIPLE_FUNCTION_CODES",
    0x5A: "PROGRAM_UNITY",
    0x7D: "FIRMWARE_REPLACEMENT",
    0x7E: "PROGRAM_584_984_2",
    0x7F: "REPORT_LOCAL_ADDRESS",
}

# Public function codes defined by the specification (section 5.1).
PUBLIC_FUNCTIONS = frozenset({1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 15, 16, 17, 20, 21, 22, 23, 24, 43})

# Exception codes (section 7).
EXCEPTION_NAMES: dict[int, str] = {
    0x01: "ILLEGAL_FUNCTION",
    0x02: "ILLEGAL_DATA_ADDRESS",
    0x03: "ILLEGAL_DATA_VALUE",
    0x04: "SLAVE_DEVICE_FAILURE",
    0x05: "ACKNOWLEDGE",
    0x06: "SLAVE_DEVICE_BUSY",
    0x08: "MEMORY_PARITY_ERROR",
    0x0A: "GATEWAY_PATH_UNAVAILABLE",
    0x0B: "GATEWAY_TARGET_DEVICE_FAILED_TO_RESPOND",
}

# Diagnostics sub-functions (section 6.8.1).
DIAGNOSTIC_SUBFUNCTIONS: dict[int, str] = {
    0x00: "RETURN_QUERY_DATA",
    0x01: "RESTART_COMMUNICATIONS_OPTION",
    0x02: "RETURN_DIAGNOSTIC_REGISTER",
    0x03: "CHANGE_ASCII_INPUT_DELIMITER",
    0x04: "FORCE_LISTEN_ONLY_MODE",
    0x0A: "CLEAR_COUNTERS_AND_DIAGNOSTIC_REGISTER",
    0x0B: "RETURN_BUS_MESSAGE_COUNT",
    0x0C: "RETURN_BUS_COMMUNICATION_ERROR_COUNT",
    0x0D: "RETURN_BUS_EXCEPTION_ERROR_COUNT",
    0x0E: "RETURN_SLAVE_MESSAGE_COUNT",
    0x0F: "RETURN_SLAVE_NO_RESPONSE_COUNT",
    0x10: "RETURN_SLAVE_NAK_COUNT",
    0x11: "RETURN_SLAVE_BUSY_COUNT",
    0x12: "RETURN_BUS_CHARACTER_OVERRUN_COUNT",
    0x14: "CLEAR_OVERRUN_COUNTER_AND_FLAG",
}

# MEI types of function 43 (section 6.19-6.21).
MEI_CANOPEN = 0x0D
MEI_READ_DEVICE_ID = 0x0E

# Read Device Identification object ids (section 6.21, table "Object Id").
DEVICE_ID_OBJECTS: dict[int, str] = {
    0x00: "VendorName",
    0x01: "ProductCode",
    0x02: "MajorMinorRevision",
    0x03: "VendorUrl",
    0x04: "ProductName",
    0x05: "ModelName",
    0x06: "UserApplicationName",
}


def function_name(raw_fc: int) -> str:
    """Zeek's ``build_func``: the name of a raw function byte, exception bit included."""
    name = FUNCTION_NAMES.get(raw_fc)
    if name is not None:
        return name
    masked = raw_fc & 0x7F
    if raw_fc & 0x80 and masked in FUNCTION_NAMES:
        return FUNCTION_NAMES[masked] + "_EXCEPTION"
    return f"unknown-{raw_fc}"


def exception_name(code: int) -> str:
    return EXCEPTION_NAMES.get(code, f"unknown-{code}")


# Precomputed for the hot path: raw function byte -> name.
FUNC_BY_RAW: tuple[str, ...] = tuple(function_name(i) for i in range(256))
