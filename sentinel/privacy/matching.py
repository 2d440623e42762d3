"""Detection on clear addresses while every output carries pseudonyms.

With pseudonymization on, the flow table replaces each address outside the OT inventory by a
pseudonym before any event carries it, so detectors and sinks only ever see pseudonyms. A
few checks are about *where* an address is, not *which* address it is: rule headers
(``$HOME_NET``, ``!$MODBUS_CLIENT``, CIDRs in rule variables) and the site labels of a
finding. A pseudonym lies in reserved space (240.0.0.0/4, a ULA prefix), so those checks
would see every pseudonymized host as "outside every network", and detections would change
(an unknown host inside the hospital network would match ``!$MODBUS_CLIENT``).

``clear_for_matching(ip)`` gives such checks the clear address behind a pseudonym minted in
this process (from the live pseudonymizers' in-memory reverse maps; nothing is read from
disk and nothing is written), and the address itself otherwise. Its result must only be
used for a yes/no membership test, never stored or logged. Cost: about 0.1 us a call (a loop
over an empty list when pseudonymization is off).
"""

from __future__ import annotations

import contextlib
import weakref
from typing import Protocol


class Resolver(Protocol):
    def clear_address(self, pseudonym: str) -> str | None: ...


# Weak references to the live pseudonymizers (a plain list: iterating a WeakSet costs ten
# times more, and this runs for every rule header of every new flow direction).
_LIVE: list[weakref.ref[Resolver]] = []


def _gone(ref: weakref.ref[Resolver]) -> None:
    with contextlib.suppress(ValueError):
        _LIVE.remove(ref)


def register(resolver: Resolver) -> None:
    """Called by each ``Pseudonymizer`` when it is made; it leaves when it is collected."""
    _LIVE.append(weakref.ref(resolver, _gone))


def clear_for_matching(ip: str) -> str:
    """The clear address behind ``ip`` if it is a live pseudonym, else ``ip`` itself."""
    for ref in _LIVE:
        resolver = ref()
        if resolver is not None:
            clear = resolver.clear_address(ip)
            if clear is not None:
                return clear
    return ip


def remembered(pseudonym: str) -> tuple[str, str] | None:
    """``(clear address, key id)`` of a pseudonym minted in this process (current or previous
    key of a live pseudonymizer), for the sensor's own re-identification (``sensor``)."""
    for ref in _LIVE:
        resolver = ref()
        lookup = getattr(resolver, "remembered", None)
        if lookup is not None:
            found = lookup(pseudonym)
            if found is not None:
                return found
    return None


def is_pseudonym(text: str) -> bool:
    """Whether ``text`` has the form of a pseudonym of a live pseudonymizer (False when
    pseudonymization is off): a sink's test before it stores bytes that could name a host."""
    for ref in _LIVE:
        resolver = ref()
        check = getattr(resolver, "is_pseudonym", None)
        if check is not None and check(text):
            return True
    return False
