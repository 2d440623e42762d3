/*
 * TRITON / TRISIS / HatMan (2017 attack on Triconex safety instrumented systems).
 * Written by the Sentinel team from public reporting:
 *  - FireEye/Mandiant, "Attackers Deploy New ICS Attack Framework TRITON" (December 2017)
 *  - FireEye/Mandiant, "A Totally Tubular Treatise on TRITON and TriStation" (June 2018)
 *  - Dragos, "TRISIS Malware" (December 2017); CISA MAR-17-352-01 "HatMan" (December 2017)
 * trilog.exe carries library.zip with the framework's TriStation modules (TsHi, TsBase,
 * TsLow, TS_cnames) and the payloads inject.bin / imain.bin; zip member names are stored
 * uncompressed, so the rule also fires on the archive crossing the network.
 * Sid 9001004 (see docs/detectors.md).
 */

rule TRITON_Framework_Components
{
    meta:
        sid = 9001004
        description = "TRITON/TRISIS framework components (TriStation modules, SIS payloads, SafeAppendProgramMod)"
        author = "Sentinel team"
        reference = "https://cloud.google.com/blog/topics/threat-intelligence/attackers-deploy-new-ics-attack-framework-triton/"
        severity = "critical"
        mitre_attack = "T0867"
        family = "TRITON"
        scope = "stream, file"
    strings:
        $m1 = "TsHi.py" ascii wide
        $m2 = "TsLow.py" ascii wide
        $m3 = "TsBase.py" ascii wide
        $m4 = "TS_cnames.py" ascii wide
        $f1 = "SafeAppendProgramMod" ascii wide
        $b1 = "inject.bin" ascii wide
        $b2 = "imain.bin" ascii wide
    condition:
        3 of them
}
