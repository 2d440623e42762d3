"""The sink interface: where a run's records and findings go.

A run always writes its JSONL files (``JsonlSink``); other sinks (Elasticsearch, EVE) are
added beside it and receive the same records. Records are plain dicts: ``modbus``, ``flow``,
``ot`` and ``dnp3`` records as in modbus.jsonl / flows.jsonl / ot.jsonl / dnp3.jsonl,
``finding`` documents in ECS (``Finding.to_ecs``), ``assets`` the whole inventory at the end
of a run.
"""

from __future__ import annotations

from typing import Any


class Sink:
    """Base class: override what the sink stores; everything else is ignored."""

    id = ""

    def modbus(self, record: dict[str, Any]) -> None:
        """One Modbus message record."""

    def flow(self, record: dict[str, Any]) -> None:
        """One ended flow."""

    def ot(self, record: dict[str, Any]) -> None:
        """One OT message decoded through tshark (DNP3, IEC 104, S7comm, ENIP/CIP, BACnet),
        normalised: see ``sentinel.decode.tshark.ot_record`` and docs/ot-protocols.md."""

    def dnp3(self, record: dict[str, Any]) -> None:
        """One DNP3 request/reply pair with Zeek's dnp3.log fields (``fc_request``,
        ``fc_reply``, ``iin``)."""

    def finding(self, document: dict[str, Any]) -> None:
        """One ECS finding document."""

    def assets(self, records: list[dict[str, Any]]) -> None:
        """The passive inventory at the end of a run (or periodically when live)."""

    def flush(self) -> None:
        """Make what was written durable/visible now (a live run calls it every second)."""

    def close(self) -> None:
        """Flush and release; called once at the end of the run."""
