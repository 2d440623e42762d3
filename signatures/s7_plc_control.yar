/*
 * S7comm CPU STOP and program (re)start jobs, the commands that PLC exploitation frameworks
 * send to Siemens S7-300/400 CPUs (ISF/icssploit s7_300_400_plc_control, snap7-based tools
 * such as plcscan derivatives, Metasploit-style "PLC stop" modules, PLC worms).
 * Written by the Sentinel team from the public protocol documentation: Wireshark's S7comm
 * dissector (function 0x29 PLC Stop, 0x28 PI-Service) and snap7's Cli_PlcStop /
 * Cli_PlcHotStart / Cli_PlcColdStart telegrams.
 * Layout: S7 header 32 01 (job) 00 00, PDU reference, parameter and data lengths, then the
 * parameter: 29 00 00 00 00 00 09 "P_PROGRAM" (stop) or 28 00 00 00 00 00 00 FD 00 nn
 * [args] 09 "P_PROGRAM" (hot start: no argument, cold start: "C ").
 * Sids 9001006-9001007 (see docs/detectors.md).
 */

rule S7comm_CPU_Stop_Job
{
    meta:
        sid = 9001006
        description = "S7comm job that puts a Siemens CPU into STOP (function 0x29, P_PROGRAM)"
        author = "Sentinel team"
        reference = "https://attack.mitre.org/techniques/T0858/"
        severity = "high"
        mitre_attack = "T0858"
        protocol = "s7comm"
        scope = "stream"
    strings:
        $stop = { 32 01 00 00 ?? ?? 00 10 00 00 29 00 00 00 00 00 09 50 5F 50 52 4F 47 52 41 4D }
    condition:
        $stop
}

rule S7comm_CPU_Program_Start_Job
{
    meta:
        sid = 9001007
        description = "S7comm PI-Service job that (re)starts the program of a Siemens CPU (hot or cold start, P_PROGRAM)"
        author = "Sentinel team"
        reference = "https://attack.mitre.org/techniques/T0858/"
        severity = "high"
        mitre_attack = "T0858"
        protocol = "s7comm"
        scope = "stream"
    strings:
        $start = { 32 01 00 00 ?? ?? 00 ?? 00 00 28 00 00 00 00 00 00 FD 00 [1-3] 09 50 5F 50 52 4F 47 52 41 4D }
    condition:
        $start
}
