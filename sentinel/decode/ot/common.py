"""What every protocol normaliser shares: the operation classes, tree access, event building.

tshark's JSON (``-T json --no-duplicate-keys``) is the protocol tree: a field is a key
(``"dnp3.al.func": "3"``); a field with children adds ``"<field>_tree": {...}``; a text item
with children is a key holding its label (``"IOA: 1300": {...}``); a key that occurs several
times at one level holds a list of its values. Values are strings as tshark displays them
(``"3"``, ``"0x0c01"``, ``"132.709"``). The helpers below read that shape defensively: hostile
or truncated packets give missing fields, never exceptions.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

from sentinel.events import ConnId, OTEvent

# The operation classes of ``OTEvent.operation`` (documented in docs/ot-protocols.md).
OPERATIONS = (
    "read",  # read data, poll, interrogate
    "write",  # write data or a setpoint (analog output, register, property, tag)
    "control",  # operate an output: trip/close, start/stop a motor, select-before-operate
    "program_download",  # logic, configuration or blocks sent to the device
    "program_upload",  # logic read back from the device
    "firmware",  # firmware update
    "start",  # controller/application put in run mode
    "stop",  # controller/application stopped
    "restart",  # cold/warm restart, reinitialise, reset
    "file",  # file transfer, delete, directory
    "time_sync",  # clock set, time synchronisation, delay measurement
    "authentication",  # login, password, authentication challenge/reply
    "diagnostics",  # identification, status, self-test, system lists
    "configuration",  # reporting and communication control, parameters, class assignment
    "report",  # data the device sends on its own (events, spontaneous, cyclic)
    "session",  # link and session management: confirm, keep-alive, connect
    "other",
)


class FrameBase(NamedTuple):
    """Where one frame came from (from tshark's frame/ip/tcp/udp layers)."""

    ts: float
    frame: int
    transport: str  # tcp | udp
    src: str
    sport: int
    dst: str
    dport: int


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def to_int(value: Any, default: int | None = None) -> int | None:
    """``"12"``, ``"0x0c"``, ``"1"`` -> int; anything else -> default."""
    if type(value) is str:
        try:
            return int(value)  # most values: decimal (leading zeros too)
        except ValueError:
            try:
                return int(value, 0)  # "0x0c"
            except ValueError:
                return default
    if isinstance(value, list):
        return to_int(value[0], default) if value else default
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    return default


def to_num(value: Any) -> int | float | None:
    if isinstance(value, list):
        value = value[0] if value else None
    n = to_int(value)
    if n is not None:
        return n
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def to_bool(value: Any) -> bool:
    if isinstance(value, list):
        value = value[0] if value else None
    return value in ("1", "True", "true", True, 1)


def get(node: Any, name: str) -> Any:
    """The first value of field ``name`` directly in ``node`` (a list's first element)."""
    if isinstance(node, dict):
        value = node.get(name)
        if isinstance(value, list):
            return value[0] if value else None
        return value
    return None


def find(node: Any, name: str) -> Any:
    """The first value of field ``name`` anywhere below ``node``, depth-first in tree order."""
    if isinstance(node, dict):
        if name in node:
            value = node[name]
            return value[0] if isinstance(value, list) and value else value
        for value in node.values():
            if isinstance(value, dict | list):
                found = find(value, name)
                if found is not None:
                    return found
    elif isinstance(node, list):
        for item in node:
            found = find(item, name)
            if found is not None:
                return found
    return None


def find_all(node: Any, name: str, out: list[Any] | None = None) -> list[Any]:
    """Every value of field ``name`` below ``node``, in tree order."""
    if out is None:
        out = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == name:
                if isinstance(value, list):
                    out.extend(v for v in value if not isinstance(v, dict | list))
                elif not isinstance(value, dict):
                    out.append(value)
            if isinstance(value, dict | list):
                find_all(value, name, out)
    elif isinstance(node, list):
        for item in node:
            find_all(item, name, out)
    return out


def collect(
    node: Any, names: frozenset[str] | set[str], out: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The first value of each of ``names`` below ``node``, in one walk of the tree."""
    if out is None:
        out = {}
    if isinstance(node, dict):
        for key, value in node.items():
            if key in names and key not in out:
                first = value[0] if isinstance(value, list) and value else value
                if not isinstance(first, dict | list):
                    out[key] = first
            if isinstance(value, dict | list):
                collect(value, names, out)
    elif isinstance(node, list):
        for item in node:
            collect(item, names, out)
    return out


def subtrees(node: Any, prefix: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Children of ``node`` whose key starts with ``prefix`` and hold a subtree."""
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key.startswith(prefix):
            for item in as_list(value):
                if isinstance(item, dict):
                    yield key, item


def layer_list(layers: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """The instances of protocol layer ``name`` in a frame (several PDUs in one segment)."""
    return [x for x in as_list(layers.get(name)) if isinstance(x, dict)]


def hex_bytes(value: Any) -> bytes | None:
    """tshark's ``"0a:1b:..."`` (or ``"0a1b"``) -> bytes."""
    if isinstance(value, list):
        value = value[0] if value else None
    if not isinstance(value, str):
        return None
    try:
        return bytes.fromhex(value.replace(":", ""))
    except ValueError:
        return None


def bits(flags: dict[int, str], value: int) -> list[str]:
    return [name for bit, name in flags.items() if value & bit]


def unknown(code: int | None) -> str:
    return f"unknown-{code}" if code is not None else "unknown"


def event(
    base: FrameBase,
    protocol: str,
    direction: str,
    operation: str,
    function: str,
    code: int | None,
    *,
    unit: int | None = None,
    objects: list[dict[str, Any]] | tuple[dict[str, Any], ...] = (),
    status: str | None = None,
    flags: list[str] | tuple[str, ...] = (),
    detail: dict[str, Any] | None = None,
    data: bytes | None = None,
) -> OTEvent:
    """An event seen from the sender: ``conn`` is sender -> receiver until the pipeline joins
    it to its flow (which sets ``uid``, ``conn`` and ``is_orig``)."""
    return OTEvent(
        base.ts,
        None,
        ConnId(base.src, base.sport, base.dst, base.dport),
        True,
        base.frame,
        base.transport,
        protocol,
        direction,
        operation,
        function,
        code,
        unit,
        tuple(objects),
        status,
        tuple(flags),
        {protocol: detail or {}},
        data,
    )


class PairTable:
    """Bounded memory of the last request per (flow, key) so that a response can take the
    operation of the request it answers (protocols whose responses do not say it)."""

    def __init__(self, limit: int = 65536) -> None:
        self.limit = limit
        self._d: dict[tuple, Any] = {}

    def put(self, key: tuple, value: Any) -> None:
        d = self._d
        if key in d:
            del d[key]
        elif len(d) >= self.limit:
            del d[next(iter(d))]
        d[key] = value

    def get(self, key: tuple) -> Any:
        return self._d.get(key)

    def pop(self, key: tuple) -> Any:
        return self._d.pop(key, None)


def flow_key(base: FrameBase, reverse: bool = False) -> tuple:
    if reverse:
        return (base.dst, base.dport, base.src, base.sport, base.transport)
    return (base.src, base.sport, base.dst, base.dport, base.transport)
