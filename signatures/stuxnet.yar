/*
 * Stuxnet (2010: Siemens Step 7 / S7-315 and S7-417 PLC sabotage).
 * Written by the Sentinel team from public reporting:
 *  - Symantec, "W32.Stuxnet Dossier" v1.4 (February 2011)
 *  - Langner, "To Kill a Centrifuge" (November 2013)
 * Stuxnet replaces the Step 7 communication library s7otbxdx.dll and keeps the original as
 * s7otbxsx.dll (a name no Siemens product uses), spreads through .LNK files with the
 * companions ~WTR4141.tmp / ~WTR4132.tmp, and its rootkit drivers carry the "myrtus" PDB path.
 * Sid 9001008 (see docs/detectors.md).
 */

rule Stuxnet_Step7_Dropper_Artifacts
{
    meta:
        sid = 9001008
        description = "Stuxnet artifacts: renamed Step 7 library s7otbxsx.dll, LNK companion files, myrtus PDB path"
        author = "Sentinel team"
        reference = "https://docs.broadcom.com/doc/security-response-w32-stuxnet-dossier-11-en"
        severity = "critical"
        mitre_attack = "T0867"
        family = "Stuxnet"
        scope = "stream, file"
    strings:
        $s7 = "s7otbxsx.dll" ascii wide nocase
        $pdb = "\\myrtus\\src\\" ascii nocase
        $lnk1 = "~WTR4141.tmp" ascii wide nocase
        $lnk2 = "~WTR4132.tmp" ascii wide nocase
        $drv1 = "mrxcls.sys" ascii wide nocase
        $drv2 = "mrxnet.sys" ascii wide nocase
    condition:
        $s7 or $pdb or 2 of ($lnk*, $drv*)
}
