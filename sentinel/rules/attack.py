"""MITRE ATT&CK for ICS technique of a rule: from its metadata, else from its classtype.

Convention (documented in docs/rules.md), compatible with the metadata that public ICS rule
sets already carry::

    metadata: mitre_technique_id T0855, mitre_technique_name Unauthorized_Command_Message,
              mitre_tactic_name Impair_Process_Control;

Underscores in names stand for spaces. When only the id is given, the name (and tactic) come
from the table below. A rule without technique metadata gets the technique mapped from its
classtype (``CLASSTYPE_TECHNIQUES``), and failing that ``DEFAULT``.
"""

from __future__ import annotations

from sentinel.findings import Technique

# ATT&CK for ICS techniques rule content commonly names: id -> (name, usual tactic).
TECHNIQUES: dict[str, tuple[str, str]] = {
    "T0800": ("Activate Firmware Update Mode", "Inhibit Response Function"),
    "T0801": ("Monitor Process State", "Collection"),
    "T0802": ("Automated Collection", "Collection"),
    "T0806": ("Brute Force I/O", "Impair Process Control"),
    "T0809": ("Data Destruction", "Inhibit Response Function"),
    "T0811": ("Data from Information Repositories", "Collection"),
    "T0813": ("Denial of Control", "Impact"),
    "T0814": ("Denial of Service", "Inhibit Response Function"),
    "T0815": ("Denial of View", "Impact"),
    "T0816": ("Device Restart/Shutdown", "Inhibit Response Function"),
    "T0826": ("Loss of Availability", "Impact"),
    "T0827": ("Loss of Control", "Impact"),
    "T0831": ("Manipulation of Control", "Impact"),
    "T0832": ("Manipulation of View", "Impact"),
    "T0835": ("Manipulate I/O Image", "Inhibit Response Function"),
    "T0836": ("Modify Parameter", "Impair Process Control"),
    "T0838": ("Modify Alarm Settings", "Inhibit Response Function"),
    "T0839": ("Module Firmware", "Persistence"),
    "T0840": ("Network Connection Enumeration", "Discovery"),
    "T0842": ("Network Sniffing", "Discovery"),
    "T0843": ("Program Download", "Lateral Movement"),
    "T0845": ("Program Upload", "Collection"),
    "T0846": ("Remote System Discovery", "Discovery"),
    "T0848": ("Rogue Master", "Initial Access"),
    "T0855": ("Unauthorized Command Message", "Impair Process Control"),
    "T0856": ("Spoof Reporting Message", "Impair Process Control"),
    "T0858": ("Change Operating Mode", "Execution"),
    "T0861": ("Point & Tag Identification", "Collection"),
    "T0866": ("Exploitation of Remote Services", "Lateral Movement"),
    "T0868": ("Detect Operating Mode", "Collection"),
    "T0869": ("Standard Application Layer Protocol", "Command and Control"),
    "T0872": ("Indicator Removal on Host", "Evasion"),
    "T0878": ("Alarm Suppression", "Inhibit Response Function"),
    "T0881": ("Service Stop", "Inhibit Response Function"),
    "T0883": ("Internet Accessible Device", "Initial Access"),
    "T0885": ("Commonly Used Port", "Command and Control"),
    "T0886": ("Remote Services", "Initial Access"),
    "T0888": ("Remote System Information Discovery", "Discovery"),
}


def _t(tid: str) -> Technique:
    name, tactic = TECHNIQUES[tid]
    return Technique(tid, name, tactic)


# Fallback by Suricata classtype (etc/classification.config names).
CLASSTYPE_TECHNIQUES: dict[str, Technique] = {
    "attempted-recon": _t("T0888"),
    "successful-recon-limited": _t("T0888"),
    "successful-recon-largescale": _t("T0888"),
    "network-scan": _t("T0846"),
    "protocol-command-decode": _t("T0866"),
    "attempted-dos": _t("T0814"),
    "successful-dos": _t("T0814"),
    "denial-of-service": _t("T0814"),
    "attempted-admin": _t("T0866"),
    "successful-admin": _t("T0866"),
    "attempted-user": _t("T0866"),
    "successful-user": _t("T0866"),
    "unsuccessful-user": _t("T0866"),
    "shellcode-detect": _t("T0866"),
    "web-application-attack": _t("T0866"),
    "policy-violation": _t("T0855"),
    "unknown": _t("T0855"),
    "misc-activity": _t("T0855"),
    "misc-attack": _t("T0866"),
    "bad-unknown": _t("T0855"),
    "non-standard-protocol": _t("T0885"),
    "string-detect": _t("T0855"),
    "trojan-activity": _t("T0869"),
    "command-and-control": _t("T0869"),
    "ics-unauthorized-command": _t("T0855"),
    "ics-device-discovery": _t("T0888"),
    "ics-protocol-anomaly": _t("T0866"),
}
DEFAULT = _t("T0855")


def technique_for(
    metadata: dict[str, list[str]], classtype: str | None
) -> tuple[Technique, str, list[str]]:
    """The rule's technique, where it came from (metadata | classtype | default), and
    warnings about the metadata."""
    warnings: list[str] = []
    ids = metadata.get("mitre_technique_id")
    if ids:
        tid = ids[0].strip().upper()
        known = TECHNIQUES.get(tid)
        names = metadata.get("mitre_technique_name")
        tactics = metadata.get("mitre_tactic_name")
        if not tid.startswith("T0") or not tid[1:].isdigit():
            warnings.append(f"mitre_technique_id {ids[0]!r} is not an ATT&CK for ICS id (T0xxx)")
        name = names[0].replace("_", " ") if names else (known[0] if known else tid)
        tactic = tactics[0].replace("_", " ") if tactics else (known[1] if known else "")
        if not known and not names:
            warnings.append(f"unknown technique {tid}: give mitre_technique_name too")
        return Technique(tid, name, tactic), "metadata", warnings
    if classtype and classtype in CLASSTYPE_TECHNIQUES:
        return CLASSTYPE_TECHNIQUES[classtype], "classtype", warnings
    return DEFAULT, "default", warnings
