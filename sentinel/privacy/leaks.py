"""Find addresses in clear that should not be: ``sentinel privacy check`` and the tests.

Every IPv4 and IPv6 address written in the given files (JSON Lines, EVE, stats, or any text)
is reported unless it is declared infrastructure (``allowed``) or lies in pseudonym space
(240.0.0.0/4 without 255.x, or the ULA prefix ``fd00::/8`` of pseudonymization keys). With
pseudonymization on, a run's output directory must give no finding at all.

One ambiguity is resolved in favour of the reader: ``2001:db8::20:502`` (an IPv6 address and
a port written without brackets, as some logs do) is accepted when ``2001:db8::20`` is.
"""

from __future__ import annotations

import bisect
import ipaddress
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

_IPV4 = re.compile(rb"(?<![0-9.])(?:[0-9]{1,3}\.){3}[0-9]{1,3}(?![0-9]|\.[0-9])")
_IPV6 = re.compile(rb"(?<![0-9A-Za-z:])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![0-9A-Za-z:.])")
_IPV6_MAPPED = re.compile(rb"(?<![0-9A-Za-z:])[0-9A-Fa-f:]*:(?:[0-9]{1,3}\.){3}[0-9]{1,3}")
PSEUDO_V4 = ipaddress.ip_network("240.0.0.0/4")
PSEUDO_V6 = ipaddress.ip_network("fd00::/8")
TEXT_SUFFIXES = (".jsonl", ".json", ".log", ".txt", ".ndjson")


@dataclass(frozen=True)
class Leak:
    path: str
    line: int
    address: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.address} in clear"


def in_pseudonym_space(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if addr.version == 4:
        return addr in PSEUDO_V4 and addr.packed[0] != 255
    return addr in PSEUDO_V6


def addresses_in(data: bytes) -> Iterable[tuple[int, str]]:
    """(1-based line, address) for every valid IP address written in ``data``."""
    newlines = [m.start() for m in re.finditer(rb"\n", data)]
    for pattern in (_IPV4, _IPV6, _IPV6_MAPPED):
        for m in pattern.finditer(data):
            text = m.group().decode("ascii")
            try:
                addr = ipaddress.ip_address(text)
            except ValueError:
                continue
            if addr.version == 6 and addr.ipv4_mapped is not None:
                addr = addr.ipv4_mapped
            yield bisect.bisect_left(newlines, m.start()) + 1, str(addr)


def find_leaks(
    paths: Iterable[str | os.PathLike[str]],
    allowed: Callable[[str], bool],
) -> list[Leak]:
    """Clear addresses in ``paths`` (files, or directories searched recursively for text
    files) that ``allowed`` does not accept and that are not in pseudonym space."""
    leaks: list[Leak] = []
    for file in _files(paths):
        data = file.read_bytes()
        seen: set[tuple[int, str]] = set()
        for line, text in addresses_in(data):
            if (line, text) in seen:
                continue
            seen.add((line, text))
            if _accepted(text, allowed):
                continue
            host, _, port = text.rpartition(":")
            if ":" in host and port.isdigit() and _accepted(_canonical(host), allowed):
                continue  # "2001:db8::20:502": an accepted IPv6 address and a port, unbracketed
            leaks.append(Leak(str(file), line, text))
    return sorted(leaks, key=lambda x: (x.path, x.line, x.address))


def _accepted(text: str | None, allowed: Callable[[str], bool]) -> bool:
    if text is None:
        return False
    return allowed(text) or in_pseudonym_space(ipaddress.ip_address(text))


def _canonical(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _files(paths: Iterable[str | os.PathLike[str]]) -> Iterable[Path]:
    for p in map(Path, paths):
        if p.is_dir():
            yield from sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in TEXT_SUFFIXES)
        elif p.is_file():
            yield p
