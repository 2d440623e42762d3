/*
 * PIPEDREAM / INCONTROLLER (2022 modular ICS attack toolkit: Schneider Electric and OMRON
 * PLCs, OPC UA servers, Windows engineering workstations).
 * Written by the Sentinel team from public reporting:
 *  - CISA/DOE/NSA/FBI AA22-103A, "APT Cyber Tools Targeting ICS/SCADA Devices" (April 2022)
 *  - Dragos, "CHERNOVITE's PIPEDREAM Malware Targeting Industrial Control Systems" (2022)
 *  - Mandiant, "INCONTROLLER: New State-Sponsored Cyber Attack Tools" (April 2022)
 * The Windows component (Dragos: LAZYCARGO) loads the vulnerable ASRock driver AsrDrv103.sys
 * (CVE-2020-15368) to run code in the kernel. ASRock utilities also install that driver, so a
 * match in an OT network asks for a look rather than proves an intrusion (severity medium).
 * Sid 9001005 (see docs/detectors.md).
 */

rule PIPEDREAM_LAZYCARGO_AsrDrv103
{
    meta:
        sid = 9001005
        description = "Vulnerable ASRock driver AsrDrv103 (CVE-2020-15368) as loaded by PIPEDREAM's Windows component"
        author = "Sentinel team"
        reference = "https://www.cisa.gov/news-events/cybersecurity-advisories/aa22-103a"
        severity = "medium"
        mitre_attack = "T0867"
        family = "PIPEDREAM"
        scope = "stream, file"
    strings:
        $drv = "AsrDrv103" ascii wide nocase
    condition:
        $drv
}
