"""IP addresses and networks in the configuration: validated and written one way.

``IPAddress`` and ``IPNetwork`` are string fields whose value is the canonical text of the
address (``10.0.0.01`` is refused, ``2001:DB8::1`` becomes ``2001:db8::1``) or network (host
bits cleared: ``10.1.2.3/24`` becomes ``10.1.2.0/24``), so comparisons with decoded traffic
are plain string comparisons.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated

from pydantic import AfterValidator


def canonical_address(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(f"not an IP address: {value!r}") from None


def canonical_network(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise ValueError(f"not an IP network: {value!r}") from None


IPAddress = Annotated[str, AfterValidator(canonical_address)]
IPNetwork = Annotated[str, AfterValidator(canonical_network)]
