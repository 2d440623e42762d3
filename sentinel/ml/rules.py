"""What the learned-baseline detector reports: rule ids, names, severities and techniques.

Rule ids 9000600-9000699 are reserved for ``ml_anomaly``, in Sentinel's own block
9000000-9099999 (``detectors/common.py`` lists who has which hundred: policy 9000100,
reconnaissance 9000200, the scheduler 9000300, response 9000400, link layer 9000500, OT
protocol policy 9000700). Ids 9000601-9000619 are the deterministic checks of tier 1, 9000620
the window scorer of tier 2. Ruleset: ``sentinel-ml``.

Techniques are MITRE ATT&CK for ICS; the tactic given is the one the technique serves here.
"""

from __future__ import annotations

from dataclasses import dataclass

from sentinel.findings import Technique
from sentinel.rules.attack import TECHNIQUES, technique

RULESET = "sentinel-ml"
DETECTOR_ID = "ml_anomaly"

T = {tid: technique(tid) for tid in TECHNIQUES}  # the ML findings' techniques by id


@dataclass(frozen=True)
class Rule:
    sid: int
    name: str
    severity: str
    technique: Technique

    @property
    def rule_id(self) -> str:
        return str(self.sid)


NEW_TALKER = Rule(
    9000601, "Modbus client never seen with this server in the baseline", "high", T["T0848"]
)
NEW_CONNECTION = Rule(
    9000602, "Connection between hosts never seen together in the baseline", "medium", T["T0846"]
)
NEW_UNIT = Rule(
    9000603, "Modbus unit id never used on this client-server pair", "medium", T["T0846"]
)
NEW_FUNCTION = Rule(9000604, "Modbus function code never used on this channel", "high", T["T0855"])
NEW_ADDRESS = Rule(
    9000605, "Modbus address outside the channel's learned address set", "medium", T["T0861"]
)
NEW_TRANSITION = Rule(
    9000606, "Modbus request sequence never seen on this channel", "medium", T["T0855"]
)
WRITE_VALUE = Rule(
    9000607, "Modbus write value outside the register's learned envelope", "high", T["T0836"]
)
REGISTER_VALUE = Rule(9000608, "Register value outside its learned behaviour", "medium", T["T0831"])
UNEXPLAINED_CHANGE = Rule(
    9000609, "Register changed without a write from a baseline writer", "high", T["T0836"]
)
LATENCY = Rule(
    9000610, "Response latency above the channel's learned envelope", "medium", T["T0830"]
)
REPLAY = Rule(
    9000611,
    "Replayed Modbus write (identical request seen on another connection)",
    "high",
    T["T0855"],
)
REQUEST_BURST = Rule(
    9000613, "Modbus request burst far above the server's learned load", "high", T["T0814"]
)
CONNECTION_BURST = Rule(
    9000614, "Connection burst far above the server's learned load", "medium", T["T0814"]
)
NEW_ANOMALY = Rule(
    9000612, "Protocol anomaly never seen on this pair in the baseline", "medium", T["T0866"]
)
WINDOW = Rule(
    9000620, "Channel behaviour outside its learned baseline (window scorer)", "medium", T["T0855"]
)

RULES: tuple[Rule, ...] = (
    NEW_TALKER,
    NEW_CONNECTION,
    NEW_UNIT,
    NEW_FUNCTION,
    NEW_ADDRESS,
    NEW_TRANSITION,
    WRITE_VALUE,
    REGISTER_VALUE,
    UNEXPLAINED_CHANGE,
    LATENCY,
    REPLAY,
    NEW_ANOMALY,
    REQUEST_BURST,
    CONNECTION_BURST,
    WINDOW,
)

READ_FCS = {1: "coils", 2: "discretes", 3: "holding", 4: "input"}
WRITE_FCS = {5: "coils", 6: "holding", 15: "coils", 16: "holding", 22: "holding", 23: "holding"}


def technique_for_function(fc: int, sub_function: int | None = None) -> Technique:
    """The technique a request of function ``fc`` serves when it should not have happened."""
    if fc in WRITE_FCS:
        return T["T0855"]
    if fc == 8:
        return T["T0816"] if sub_function == 1 else T["T0814"]
    if fc in (17, 43):
        return T["T0888"]
    if fc in READ_FCS:
        return T["T0801"]
    return T["T0855"]
