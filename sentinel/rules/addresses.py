"""Rule header addresses and ports: ``any``, CIDR, ``!``, nested ``[...]`` lists, ``a:b`` port
ranges and ``$VARIABLES`` (spec section 1, "Header").

A list means "any of its positive items (or anything, when it has none) and none of its
negated items", so ``[10.0.0.0/24,!10.0.0.5]`` is the /24 without one host. Specs compile to
small predicate trees evaluated once per flow direction (the engine caches the result).

Variables follow Suricata's ``vars.address-groups`` / ``vars.port-groups`` and may reference
each other (``EXTERNAL_NET: "!$HOME_NET"``). ``default_variables`` gives Suricata's defaults
(with ``HOME_NET`` taken from the config's site networks when there are any, and
``MODBUS_PORTS`` from ``decode.modbus_ports``, ``DNP3_PORTS`` from ``ot.dnp3.ports``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

from sentinel.privacy import clear_for_matching

# Suricata's suricata.yaml defaults (vars section), plus the OT server/client groups.
DEFAULT_ADDRESS_GROUPS: dict[str, str] = {
    "HOME_NET": "[192.168.0.0/16,10.0.0.0/8,172.16.0.0/12]",
    "EXTERNAL_NET": "!$HOME_NET",
    "HTTP_SERVERS": "$HOME_NET",
    "SMTP_SERVERS": "$HOME_NET",
    "SQL_SERVERS": "$HOME_NET",
    "DNS_SERVERS": "$HOME_NET",
    "TELNET_SERVERS": "$HOME_NET",
    "AIM_SERVERS": "$EXTERNAL_NET",
    "DC_SERVERS": "$HOME_NET",
    "DNP3_SERVER": "$HOME_NET",
    "DNP3_CLIENT": "$HOME_NET",
    "MODBUS_CLIENT": "$HOME_NET",
    "MODBUS_SERVER": "$HOME_NET",
    "ENIP_CLIENT": "$HOME_NET",
    "ENIP_SERVER": "$HOME_NET",
}
DEFAULT_PORT_GROUPS: dict[str, str] = {
    "HTTP_PORTS": "80",
    "SHELLCODE_PORTS": "!80",
    "ORACLE_PORTS": "1521",
    "SSH_PORTS": "22",
    "DNP3_PORTS": "20000",
    "MODBUS_PORTS": "502",
    "FILE_DATA_PORTS": "[$HTTP_PORTS,110,143]",
    "FTP_PORTS": "21",
    "GENEVE_PORTS": "6081",
    "VXLAN_PORTS": "4789",
    "TEREDO_PORTS": "3544",
}


class SpecError(ValueError):
    """An address or port spec that cannot be parsed (message says why)."""


@dataclass(frozen=True)
class Variables:
    """Address and port groups, by name without the ``$``."""

    addresses: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_ADDRESS_GROUPS))
    ports: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_PORT_GROUPS))

    def key(self) -> tuple:
        return (tuple(sorted(self.addresses.items())), tuple(sorted(self.ports.items())))


def default_variables(
    home_networks: list[str] | None = None,
    modbus_ports: list[int] | None = None,
    dnp3_ports: list[int] | None = None,
) -> Variables:
    addresses = dict(DEFAULT_ADDRESS_GROUPS)
    ports = dict(DEFAULT_PORT_GROUPS)
    if home_networks:
        addresses["HOME_NET"] = "[" + ",".join(home_networks) + "]"
    for name, values in (("MODBUS_PORTS", modbus_ports), ("DNP3_PORTS", dnp3_ports)):
        if values:
            ports[name] = (
                str(values[0]) if len(values) == 1 else "[" + ",".join(map(str, values)) + "]"
            )
    return Variables(addresses, ports)


# --------------------------------------------------------------------------- tree
# Nodes: ("any",), ("net", version, lo, hi), ("not", node), ("list", positives, negatives)
Node = tuple


def _evaluate(node: Node, value: tuple[int, int]) -> bool:
    tag = node[0]
    if tag == "any":
        return True
    if tag == "net":
        return node[1] == value[0] and node[2] <= value[1] <= node[3]
    if tag == "not":
        return not _evaluate(node[1], value)
    positives, negatives = node[1], node[2]
    if positives and not any(_evaluate(n, value) for n in positives):
        return False
    return not any(_evaluate(n, value) for n in negatives)


def _split_list(text: str) -> list[str]:
    """Split the inside of ``[...]`` on top-level commas."""
    items, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise SpecError("unbalanced ']'")
        elif ch == "," and depth == 0:
            items.append(text[start:i].strip())
            start = i + 1
    if depth:
        raise SpecError("unbalanced '['")
    items.append(text[start:].strip())
    if any(not item for item in items):
        raise SpecError("empty item in list")
    return items


class _SpecParser:
    """Shared recursive-descent parser for address and port specs."""

    what = ""

    def __init__(self, variables: Mapping[str, str]) -> None:
        self.variables = variables

    def parse(self, text: str, seen: tuple[str, ...] = ()) -> Node:
        text = text.strip()
        if not text:
            raise SpecError(f"empty {self.what}")
        if text.startswith("!"):
            inner = self.parse(text[1:], seen)
            if inner == ("any",):
                raise SpecError(f"!any is not a valid {self.what}")
            return ("not", inner)
        if text.startswith("["):
            if not text.endswith("]"):
                raise SpecError(f"unbalanced '[' in {text!r}")
            positives: list[Node] = []
            negatives: list[Node] = []
            for item in _split_list(text[1:-1]):
                node = self.parse(item, seen)
                if node[0] == "not":
                    negatives.append(node[1])
                elif node == ("any",):
                    positives = [("any",)]
                else:
                    positives.append(node)
            if not positives and not negatives:
                raise SpecError(f"empty {self.what} list")
            return ("list", tuple(positives), tuple(negatives))
        if text.startswith("$"):
            name = text[1:]
            if name in seen:
                raise SpecError(f"variable ${name} refers to itself")
            if name not in self.variables:
                raise SpecError(f"unknown variable ${name}")
            try:
                return self.parse(str(self.variables[name]), (*seen, name))
            except SpecError as exc:
                raise SpecError(f"${name}: {exc}") from None
        if text.lower() == "any":
            return ("any",)
        return self.atom(text)

    def atom(self, text: str) -> Node:
        raise NotImplementedError


class _AddressParser(_SpecParser):
    what = "address"

    def atom(self, text: str) -> Node:
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise SpecError(f"not an address or network: {text!r}") from None
        return ("net", net.version, int(net.network_address), int(net.broadcast_address))


class _PortParser(_SpecParser):
    what = "port"

    def atom(self, text: str) -> Node:
        if ":" in text:
            lo_text, hi_text = text.split(":", 1)
            lo = _port(lo_text) if lo_text.strip() else 0
            hi = _port(hi_text) if hi_text.strip() else 65535
            if lo > hi:
                raise SpecError(f"port range {text!r} is empty")
            return ("net", 0, lo, hi)
        p = _port(text)
        return ("net", 0, p, p)


def _port(text: str) -> int:
    text = text.strip()
    if not text.isdigit() or int(text) > 65535:
        raise SpecError(f"not a port: {text!r}")
    return int(text)


@dataclass(frozen=True)
class AddressSpec:
    text: str
    node: Node

    @property
    def is_any(self) -> bool:
        return self.node == ("any",)

    def match(self, ip: str) -> bool:
        if self.node == ("any",):
            return True
        addr = ipaddress.ip_address(clear_for_matching(ip))  # a pseudonym: the address behind it
        return _evaluate(self.node, (addr.version, int(addr)))


@dataclass(frozen=True)
class PortSpec:
    text: str
    node: Node

    @property
    def is_any(self) -> bool:
        return self.node == ("any",)

    def match(self, port: int) -> bool:
        return self.node == ("any",) or _evaluate(self.node, (0, port))


def parse_address(text: str, variables: Variables) -> AddressSpec:
    return AddressSpec(text, _AddressParser(variables.addresses).parse(text))


def parse_ports(text: str, variables: Variables) -> PortSpec:
    return PortSpec(text, _PortParser(variables.ports).parse(text))


def check_variables(variables: Variables) -> list[str]:
    """Problems with the variables themselves (each one resolved once)."""
    problems = []
    for name, value in variables.addresses.items():
        try:
            _AddressParser(variables.addresses).parse(str(value), (name,))
        except SpecError as exc:
            problems.append(f"address-groups {name}: {exc}")
    for name, value in variables.ports.items():
        try:
            _PortParser(variables.ports).parse(str(value), (name,))
        except SpecError as exc:
            problems.append(f"port-groups {name}: {exc}")
    return problems
