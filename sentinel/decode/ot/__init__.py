"""Normalisation of Wireshark's OT dissections into ``OTEvent``s, one module per protocol.

This is the base layer (Zeek's ``scripts/base``): it names what each message does and
knows nothing of detection. Each protocol module exports ``PROTOCOL`` (the name used in
events and config), ``LAYERS`` (tshark protocol names whose trees it needs), ``FILTER``
(the display filter selecting its frames), ``DISSECTOR`` and ``TRANSPORTS`` (for
``--decode-as`` on extra ports) and a ``Normaliser`` class whose
``packet(layers, base)`` returns the events of one frame. ``sentinel.decode.tshark`` runs them
in the tshark worker process.
"""

from __future__ import annotations

from sentinel.decode.ot import bacnet, dnp3, enip, iec104, s7comm
from sentinel.decode.ot.common import OPERATIONS, FrameBase

MODULES = {m.PROTOCOL: m for m in (dnp3, iec104, s7comm, enip, bacnet)}

__all__ = ["MODULES", "OPERATIONS", "FrameBase"]
