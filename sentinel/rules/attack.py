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

# The ATT&CK for ICS techniques Sentinel's rules, detectors, jobs and playbooks name, and those
# rule content commonly names: id -> (name, usual tactic). The one table of them.
TECHNIQUES: dict[str, tuple[str, str]] = {
    "T0800": ("Activate Firmware Update Mode", "Inhibit Response Function"),
    "T0801": ("Monitor Process State", "Collection"),
    "T0802": ("Automated Collection", "Collection"),
    "T0804": ("Block Reporting Message", "Inhibit Response Function"),
    "T0806": ("Brute Force I/O", "Impair Process Control"),
    "T0809": ("Data Destruction", "Inhibit Response Function"),
    "T0811": ("Data from Information Repositories", "Collection"),
    "T0813": ("Denial of Control", "Impact"),
    "T0814": ("Denial of Service", "Inhibit Response Function"),
    "T0815": ("Denial of View", "Impact"),
    "T0816": ("Device Restart/Shutdown", "Inhibit Response Function"),
    "T0821": ("Modify Controller Tasking", "Execution"),
    "T0826": ("Loss of Availability", "Impact"),
    "T0827": ("Loss of Control", "Impact"),
    "T0830": ("Adversary-in-the-Middle", "Collection"),
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
    "T0857": ("System Firmware", "Inhibit Response Function"),
    "T0858": ("Change Operating Mode", "Execution"),
    "T0859": ("Valid Accounts", "Lateral Movement"),
    "T0861": ("Point & Tag Identification", "Collection"),
    "T0864": ("Transient Cyber Asset", "Initial Access"),
    "T0866": ("Exploitation of Remote Services", "Lateral Movement"),
    "T0867": ("Lateral Tool Transfer", "Lateral Movement"),
    "T0868": ("Detect Operating Mode", "Collection"),
    "T0869": ("Standard Application Layer Protocol", "Command and Control"),
    "T0872": ("Indicator Removal on Host", "Evasion"),
    "T0873": ("Project File Infection", "Persistence"),
    "T0878": ("Alarm Suppression", "Inhibit Response Function"),
    "T0881": ("Service Stop", "Inhibit Response Function"),
    "T0882": ("Theft of Operational Information", "Impact"),
    "T0883": ("Internet Accessible Device", "Initial Access"),
    "T0885": ("Commonly Used Port", "Command and Control"),
    "T0886": ("Remote Services", "Initial Access"),
    "T0888": ("Remote System Information Discovery", "Discovery"),
    "T0889": ("Modify Program", "Persistence"),
}


def technique(tid: str) -> Technique:
    """The technique ``tid`` of the table (KeyError for an id it does not hold)."""
    name, tactic = TECHNIQUES[tid]
    return Technique(tid, name, tactic)


# Fallback by Suricata classtype (etc/classification.config names).
CLASSTYPE_TECHNIQUES: dict[str, Technique] = {
    "attempted-recon": technique("T0888"),
    "successful-recon-limited": technique("T0888"),
    "successful-recon-largescale": technique("T0888"),
    "network-scan": technique("T0846"),
    "protocol-command-decode": technique("T0866"),
    "attempted-dos": technique("T0814"),
    "successful-dos": technique("T0814"),
    "denial-of-service": technique("T0814"),
    "attempted-admin": technique("T0866"),
    "successful-admin": technique("T0866"),
    "attempted-user": technique("T0866"),
    "successful-user": technique("T0866"),
    "unsuccessful-user": technique("T0866"),
    "shellcode-detect": technique("T0866"),
    "web-application-attack": technique("T0866"),
    "policy-violation": technique("T0855"),
    "unknown": technique("T0855"),
    "misc-activity": technique("T0855"),
    "misc-attack": technique("T0866"),
    "bad-unknown": technique("T0855"),
    "non-standard-protocol": technique("T0885"),
    "string-detect": technique("T0855"),
    "trojan-activity": technique("T0869"),
    "command-and-control": technique("T0869"),
    "ics-unauthorized-command": technique("T0855"),
    "ics-device-discovery": technique("T0888"),
    "ics-protocol-anomaly": technique("T0866"),
}
DEFAULT = technique("T0855")


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
