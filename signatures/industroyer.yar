/*
 * Industroyer / CrashOverride (2016 Ukrainian grid attack) and Industroyer2 (2022).
 * Written by the Sentinel team from public reporting:
 *  - ESET, "Win32/Industroyer: A new threat for industrial control systems" (June 2017)
 *  - Dragos, "CRASHOVERRIDE: Analysis of the Threat to Electric Grid Operations" (June 2017)
 *  - US-CERT TA17-163A, "CrashOverride Malware" (June 2017)
 *  - ESET, "Industroyer2: Industroyer reloaded" (April 2022)
 * The rules look for what crosses the network when the toolkit is staged: payload module
 * names, the IEC 60870-5-104 payload's configuration, Industroyer2's embedded target list.
 * Sids 9001001-9001003 (see docs/detectors.md).
 */

rule Industroyer_Payload_Modules
{
    meta:
        sid = 9001001
        description = "Industroyer/CrashOverride launcher or payload module names (protocol payload DLLs exporting Crash, haslo data wiper)"
        author = "Sentinel team"
        reference = "https://www.welivesecurity.com/2017/06/12/industroyer-biggest-threat-industrial-control-systems-since-stuxnet/"
        severity = "critical"
        mitre_attack = "T0867"
        family = "Industroyer"
        scope = "stream, file"
    strings:
        $p101 = "Crash101.dll" ascii wide nocase
        $p104 = "Crash104.dll" ascii wide nocase
        $p61850 = "Crash61850.dll" ascii wide nocase
        $popc = "CrashOPCClientDemo.dll" ascii wide nocase
        $wiper1 = "haslo.dat" ascii wide nocase
        $wiper2 = "haslo.exe" ascii wide nocase
    condition:
        2 of them
}

rule Industroyer_IEC104_Payload_Config
{
    meta:
        sid = 9001002
        description = "Configuration of the Industroyer IEC 60870-5-104 payload (target stations, ASDU, command sequence, service to stop)"
        author = "Sentinel team"
        reference = "https://www.welivesecurity.com/wp-content/uploads/2017/06/Win32_Industroyer.pdf"
        severity = "critical"
        mitre_attack = "T0867"
        family = "Industroyer"
        scope = "stream, file"
    strings:
        $k1 = "target_ip" ascii wide nocase
        $k2 = "target_port" ascii wide nocase
        $k3 = "stop_comm_service" ascii wide nocase
        $k4 = "first_action" ascii wide nocase
        $k5 = "command_type" ascii wide nocase
        $k6 = "socket_timeout" ascii wide nocase
        $k7 = /\basdu\s*=/ ascii wide nocase
    condition:
        4 of them
}

rule Industroyer2_Embedded_Target_Config
{
    meta:
        sid = 9001003
        description = "Industroyer2 hard-coded IEC-104 target configuration (process to kill and the OIK DevCounter directory)"
        author = "Sentinel team"
        reference = "https://www.welivesecurity.com/2022/04/12/industroyer2-industroyer-reloaded/"
        severity = "critical"
        mitre_attack = "T0867"
        family = "Industroyer2"
        scope = "stream, file"
    strings:
        $dir = "\\OIK\\DevCounter" ascii wide nocase
        $proc1 = "PService_PPD.exe" ascii wide nocase
        $proc2 = "PServiceControl.exe" ascii wide nocase
    condition:
        $dir and 1 of ($proc*)
}
