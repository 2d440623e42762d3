"""Settings of the tshark-backed OT decoding (``ot:`` in the config).

DNP3, IEC 60870-5-104, S7comm, EtherNet/IP-CIP and BACnet/IP are decoded by Wireshark's
dissectors (``tshark``) in a process of their own, beside the native Modbus/TCP path; see
``sentinel/decode/tshark.py`` and docs/ot-protocols.md.

The lead adds ``OTSettings`` to ``sentinel.config.Config`` as ``ot``; until then (or for a config
without an ``ot`` section) ``ot_settings(config)`` returns the defaults. Example::

    ot:
      enabled: true            # default; `sentinel analyze --no-ot` turns it off for one run
      tshark: /usr/bin/tshark  # default: "tshark" found on PATH
      dnp3: {ports: [20000, 20001]}
      bacnet: {enabled: false}
      policy: {learning_seconds: 600, engineering_hosts: [10.0.0.5]}
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sentinel.netaddr import IPAddress

# Registered ports (IANA): DNP3 20000/tcp+udp (IEEE 1815 annex), IEC 60870-5-104 2404/tcp,
# ISO-TSAP 102/tcp (S7comm over TPKT/COTP, RFC 1006), EtherNet/IP 44818/tcp+udp (explicit
# messaging) and 2222/udp (implicit I/O), BACnet/IP 47808/udp (ASHRAE 135 annex J).
DEFAULT_PORTS: dict[str, list[int]] = {
    "dnp3": [20000],
    "iec104": [2404],
    "s7comm": [102],
    "enip": [44818, 2222],
    "bacnet": [47808],
}
PROTOCOLS = tuple(DEFAULT_PORTS)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _ports(value: list[int]) -> list[int]:
    for port in value:
        if not 0 < port < 65536:
            raise ValueError(f"not a port number: {port}")
    return sorted(set(value))


class OTProtocol(_Strict):
    """One protocol: whether it is decoded, and the ports it is expected on.

    Ports other than the registered one are handed to the dissector with tshark's
    ``--decode-as`` (``-d``); a flow on any listed port also starts the tshark source
    (see ``OTSettings.lazy_start``).
    """

    enabled: bool = True
    ports: list[int] = []

    _check_ports = field_validator("ports", mode="after")(lambda cls, v: _ports(v))


class OTPolicySettings(_Strict):
    """Thresholds of the OT policy detector (``detectors/ot_policy.py``), ``ot.policy``."""

    # What clients do in the first learning_seconds of OT traffic (packet time) is normal:
    # without allowed_masters in the config, a client that sends control commands, setpoint
    # writes or time changes to a device only after that is reported.
    learning_seconds: float = Field(600.0, ge=0)
    # A DNP3 DISABLE_UNSOLICITED not followed by ENABLE_UNSOLICITED to the same outstation
    # within this many seconds is reported (masters disable it briefly at start-up).
    unsolicited_grace: float = Field(30.0, gt=0)
    # Hosts allowed to program, start/stop and restart controllers, besides the assets
    # declared with role engineering.
    engineering_hosts: list[IPAddress] = []
    # Rule ids (e.g. 9000705) whose findings are dropped, for site tuning.
    disabled_rules: list[int] = []
    # Clients/devices/pairs tracked (bounded memory on a scanned network).
    max_tracked: int = Field(16384, ge=16)


def _protocol(name: str) -> Any:
    return Field(default_factory=lambda: OTProtocol(ports=DEFAULT_PORTS[name]))


class OTSettings(_Strict):
    """The ``ot`` section of the config."""

    # On by default when tshark is installed; off means no tshark process and no cost at all.
    enabled: bool = True
    # The tshark executable: a name looked up on PATH, or a path.
    tshark: str = "tshark"
    dnp3: OTProtocol = _protocol("dnp3")
    iec104: OTProtocol = _protocol("iec104")
    s7comm: OTProtocol = _protocol("s7comm")
    enip: OTProtocol = _protocol("enip")
    bacnet: OTProtocol = _protocol("bacnet")
    # True: tshark is started when the first flow on an enabled protocol's port appears, so a
    # capture without OT traffic costs nothing. False: tshark runs with every analysis (OT
    # protocols that Wireshark's heuristics find on unexpected ports are then seen too).
    lazy_start: bool = True
    # True: tshark only sees packets on the enabled protocols' ports (and IP fragments): the
    # worker filters the capture (same frame numbers and time stamps as the native path), or
    # tshark's capture filter on a live interface. False: tshark reads the whole capture
    # (slower on mixed captures; Wireshark's heuristics then also find OT protocols on other
    # ports).
    prefilter: bool = True
    # Points, IOAs, items listed per event (the rest is counted in the event's detail).
    max_objects: int = Field(64, ge=1, le=4096)
    # Events that wait for the native path to see their flow before they are delivered.
    max_pending_events: int = Field(100_000, ge=100)
    # Flows remembered after they end, so that late tshark events still get their uid.
    max_ended_flows: int = Field(65536, ge=16)
    # Seconds to wait for tshark to finish after the capture has been read (0: no limit).
    finish_timeout: float = Field(0.0, ge=0)
    # Live interfaces: tshark's session is reset every this many packets (tshark -M) so that
    # its memory stays bounded; 0: never (files are always read in one session).
    live_session_reset: int = Field(1_000_000, ge=0)
    # Extra tshark preferences, each "name:value" (passed as -o name:value).
    tshark_preferences: list[str] = []
    policy: OTPolicySettings = OTPolicySettings()

    @model_validator(mode="before")
    @classmethod
    def _default_ports(cls, data: Any) -> Any:
        """``dnp3: {enabled: true}`` keeps the registered ports; ``ports: []`` means none."""
        if isinstance(data, dict):
            data = dict(data)
            for name in PROTOCOLS:
                value = data.get(name)
                if isinstance(value, dict) and "ports" not in value:
                    data[name] = {**value, "ports": DEFAULT_PORTS[name]}
        return data

    @field_validator("tshark_preferences", mode="after")
    @classmethod
    def _prefs(cls, value: list[str]) -> list[str]:
        for pref in value:
            name, sep, _ = pref.partition(":")
            if not sep or not name or not all(c.isalnum() or c in "._-" for c in name):
                raise ValueError(f"not a tshark preference 'name:value': {pref!r}")
        return value

    def protocol(self, name: str) -> OTProtocol:
        return getattr(self, name)

    def enabled_protocols(self) -> list[str]:
        """Protocols to decode; empty when OT decoding is off."""
        if not self.enabled:
            return []
        return [p for p in PROTOCOLS if self.protocol(p).enabled]

    def server_ports(self) -> frozenset[int]:
        """Ports of the enabled protocols (flows on them are oriented towards these ports)."""
        return frozenset(
            port for p in PROTOCOLS if self.protocol(p).enabled for port in self.protocol(p).ports
        )


def ot_settings(config: Any) -> OTSettings:
    """The config's ``ot`` section, or the defaults when the config has none."""
    section = getattr(config, "ot", None)
    if isinstance(section, OTSettings):
        return section
    if section is None:
        return OTSettings()
    return OTSettings.model_validate(
        section.model_dump() if hasattr(section, "model_dump") else section
    )
