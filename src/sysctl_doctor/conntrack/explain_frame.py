"""`conntrack replay --explain FRAME`: how the tracker reached one packet's verdict, step by step.

The steps are the ones nf_conntrack_tcp_packet() takes: tcp_error() (length, checksum,
flags), tcp_new() when there is no entry, the state table, the RST checks, then
tcp_in_window()'s four bounds with the numbers an engineer reading the source would
compute by hand:

    I.   seq  <= sender.td_maxend                          (upper bound for data)
    II.  end  >= sender.td_end - receiver.td_maxwin        (lower bound for data)
    III. sack <= receiver.td_end                           (upper bound for the ack)
    IV.  sack >= receiver.td_end - MAXACKWINDOW(sender)    (lower bound for the ack)

(end = seq + payload + SYN + FIN; sack = the highest SACK edge, or ack;
MAXACKWINDOW = max(sender.td_maxwin, 66000); all arithmetic modulo 2^32, "margin"
is the signed distance to the bound: negative means crossed). Pure: builds lines and
a JSON object from Replay.explanation; nothing here reads files or prints.
"""

from __future__ import annotations

from typing import List

from sysctl_doctor.conntrack.profiles import KernelProfile
from sysctl_doctor.conntrack.tcp_model import (
    BE_LIBERAL, F_ACK, F_FIN, F_RST, F_SYN, MASK, STATE_NAMES, TcpSettings, sIG, sIV,
)

INDEX_NAMES = ("SYN", "SYN/ACK", "FIN", "ACK", "RST", "none")
_TRANSITION = {sIV: "INVALID (sIV)", sIG: "IGNORE (sIG)"}


def signed(value: int) -> int:
    """The kernel's (s32) view of a u32 difference."""
    value &= MASK
    return value - (1 << 32) if value & 0x80000000 else value


def _minus(a: int, b: int) -> str:
    result = (a - b) & MASK
    return f"{a} - {b} = {result}" + (" (mod 2^32)" if a < b else "")


def bounds(window: dict, profile: KernelProfile) -> List[dict]:
    """The four checks of tcp_in_window() in the order the profile evaluates them."""
    snd, rcv = window["sender"], window["receiver"]
    seq, end, sack = window["seq"], window["end"], window["sack"]
    maxack = window["maxackwindow"]
    checks = {
        "I": {"name": "I", "what": "seq <= sender.td_maxend", "value": seq, "bound": snd["td_maxend"],
              "margin": signed(snd["td_maxend"] - seq), "key": "seq_over",
              "logged_bound": (snd["td_maxend"] + 1) & MASK},
        "II": {"name": "II", "what": "end >= sender.td_end - receiver.td_maxwin", "value": end,
               "bound": (snd["td_end"] - rcv["td_maxwin"]) & MASK,
               "margin": signed(end - (snd["td_end"] - rcv["td_maxwin"])) if rcv["td_maxwin"] else None,
               "key": "seq_under", "logged_bound": (snd["td_end"] - rcv["td_maxwin"] - 1) & MASK},
        "III": {"name": "III", "what": "sack <= receiver.td_end", "value": sack, "bound": rcv["td_end"],
                "margin": signed(rcv["td_end"] - sack), "key": "ack_over",
                "logged_bound": (rcv["td_end"] + 1) & MASK},
        "IV": {"name": "IV", "what": "sack >= receiver.td_end - MAXACKWINDOW(sender)", "value": sack,
               "bound": (rcv["td_end"] - maxack) & MASK, "margin": signed(sack - (rcv["td_end"] - maxack)),
               "key": "ack_under", "logged_bound": (rcv["td_end"] - maxack - 1) & MASK},
    }
    checks["II"]["expr"] = _minus(snd["td_end"], rcv["td_maxwin"])
    checks["IV"]["expr"] = _minus(rcv["td_end"], maxack)
    order = ("I", "III", "II", "IV") if profile.window_lower_ignore else ("I", "II", "III", "IV")
    out = []
    for name in order:
        check = checks[name]
        check["ok"] = check["margin"] is None or check["margin"] >= 0
        out.append(check)
    return out


def explanation_json(explanation: dict, profile: KernelProfile, settings: TcpSettings) -> dict:
    v = explanation["verdict"]
    trace = explanation["trace"]
    out = {"frame": v.frame, "verdict": v.verdict, "message": v.message, "direction": v.direction,
           "src": v.src, "dst": v.dst, "sport": v.sport, "dport": v.dport, "seq": v.seq, "ack": v.ack,
           "flags": v.flags, "len": v.length, "state_after": v.state, "copy_of": v.copy_of,
           "kernel": "%d.%d" % profile.version, "profile": profile.label,
           "had_entry": explanation["had_entry"], "checksum": explanation["checksum"],
           "outgoing": explanation["outgoing"]}
    if "old_state" in trace:
        out["state_table"] = {"state": STATE_NAMES[trace["old_state"]], "index": INDEX_NAMES[trace["index"]],
                              "next": _TRANSITION.get(trace["new_state"]) or STATE_NAMES[trace["new_state"]]}
    if "rst_check" in trace:
        out["rst_check"] = {"result": trace["rst_check"][0], "keeps_state": trace["rst_check"][1]}
    window = trace.get("window")
    if window is not None:
        out["window"] = dict(window)
        out["window"]["bounds"] = [{k: c[k] for k in ("name", "what", "value", "bound", "margin", "ok",
                                                      "logged_bound")} for c in bounds(window, profile)]
    return out


def explanation_lines(explanation: dict, profile: KernelProfile, settings: TcpSettings) -> List[str]:
    v = explanation["verdict"]
    trace = explanation["trace"]
    lines = [f"frame {v.frame}: {v.src}:{v.sport} > {v.dst}:{v.dport} [{v.flags}] seq={v.seq} ack={v.ack} "
             f"win={explanation['window_raw']} len={v.length}",
             f"model: kernel {profile.version[0]}.{profile.version[1]} (profile {profile.label})"]
    verdict_line = f"verdict: {v.verdict.upper()}" + (f' — "{v.message}"' if v.message else
                                                       " (the kernel logs nothing for it)")
    if v.copy_of is not None:
        lines.append(f"a forwarded copy of frame {v.copy_of} (the same packet leaving the box, after NAT): "
                     f"conntrack saw it once, as frame {v.copy_of}; run --explain {v.copy_of}")
        lines.append(verdict_line)
        return lines
    lines.append("hook: " + ("OUTPUT/POSTROUTING (sent by the capturing host): no checksum check"
                             if explanation["outgoing"] else "PRE_ROUTING (arriving at the box)"))
    state = explanation["checksum"]
    if state is not None:
        lines.append("tcp_error(): checksum " + {
            "ok": "correct",
            "bad": "wrong: nf_conntrack_checksum=1 makes it INVALID before anything else is looked at",
            "partial": "is the sender's pseudo-header sum (offloaded to its NIC): not checked",
            "unknown": "not in the capture (cut by the snap length): taken as correct",
        }[state])
    elif not settings.checksum:
        lines.append("tcp_error(): nf_conntrack_checksum=0: checksum not checked")
    if "old_state" not in trace:
        if v.message in (profile.message("truncated"), profile.message("bad_flags"), "bad checksum"):
            lines.append("stopped in tcp_error(): the header itself is refused; no entry is looked at")
        else:
            lines.append(_no_entry_line(explanation, settings))
        lines.append(verdict_line)
        return lines
    if explanation["had_entry"]:
        lines.append(f"entry: found, this packet is its {explanation['entry_direction'].upper()} direction")
    else:
        lines.append("entry: none — tcp_new() made one from this packet (it is the ORIGINAL direction)")
    old, index, new = trace["old_state"], trace["index"], trace["new_state"]
    lines.append(f"state table: {STATE_NAMES[old]} + {INDEX_NAMES[index]} in dir {v.direction} -> "
                 f"{_TRANSITION.get(new) or STATE_NAMES[new]}")
    if "rst_check" in trace:
        result, keep = trace["rst_check"]
        lines.append("RST check: " + {
            "invalid": "seq is below the other side's highest ACK (td_maxack): \"invalid rst\"",
            "window": "passed; the window checks follow",
            "in_window": "accepted without the window checks (closing entry, or answering a packet "
                         "conntrack let through)",
        }[result] + ("; the entry keeps its state (the RST seq is not exact)" if keep else ""))
    window = trace.get("window")
    if window is None:
        lines.append(verdict_line)
        return lines
    snd, rcv = window["sender"], window["receiver"]
    lines.append("tcp_in_window():")
    lines.append(f"  sender   td_end={snd['td_end']} td_maxend={snd['td_maxend']} td_maxwin={snd['td_maxwin']} "
                 f"td_scale={snd['td_scale']}" + (" BE_LIBERAL" if snd["flags"] & BE_LIBERAL else ""))
    lines.append(f"  receiver td_end={rcv['td_end']} td_maxend={rcv['td_maxend']} td_maxwin={rcv['td_maxwin']} "
                 f"td_scale={rcv['td_scale']}")
    extra = sum(1 for bit in (F_SYN, F_FIN) if v._pkt.flags & bit)
    lines.append(f"  packet   seq={window['seq']} end={window['end']} (seq + {explanation['datalen']} bytes"
                 + (f" + {extra} for SYN/FIN" if extra else "") + f") ack={window['ack']} sack={window['sack']}"
                 + ("" if v._pkt.flags & F_ACK else " (no ACK flag: ack taken as receiver.td_end)"))
    scaled = (f"{window['win']} (a SYN's window is never scaled)" if v._pkt.flags & F_SYN
              else f"{window['win']} << {snd['td_scale']} = {window['scaled_win']}")
    lines.append(f"  window   {scaled}; MAXACKWINDOW(sender) = {window['maxackwindow']}")
    crossed = None
    for check in bounds(window, profile):
        if check["margin"] is None:
            lines.append(f"  {check['name']:<4} {check['what']}: receiver.td_maxwin is 0, not checked")
            continue
        mark = "ok" if check["ok"] else f"CROSSED by {-check['margin']} bytes"
        op = "<=" if "<=" in check["what"] else ">="
        lines.append(f"  {check['name']:<4} {check['what']}: {check['value']} {op} "
                     f"{check.get('expr', check['bound'])}  margin {check['margin']}  {mark}")
        if not check["ok"] and crossed is None:
            crossed = check
    if crossed is not None:
        note = f"  first bound crossed: {crossed['name']}"
        if profile.window_lower_ignore:
            note += f" (the kernel logs it as {crossed['logged_bound']})"
        lines.append(note)
        if window["liberal"]:
            lines.append("  be_liberal (the sysctl, or the entry's BE_LIBERAL from a mid-stream pickup) "
                         "turns it into ACCEPT")
    lines.append(verdict_line)
    return lines


def _no_entry_line(explanation: dict, settings: TcpSettings) -> str:
    flags = explanation["verdict"]._pkt.flags
    if flags & F_RST:
        what = "a RST"
    elif flags & F_SYN and flags & F_ACK:
        what = "a SYN/ACK"
    elif flags & F_FIN:
        what = "a FIN"
    elif flags & F_SYN:
        what = "a SYN"
    elif flags & F_ACK:
        what = "an ACK"
    else:
        what = "a packet without SYN/ACK/FIN/RST"
    if flags & (F_RST | F_FIN) or (flags & F_SYN and flags & F_ACK) or not flags & (F_SYN | F_ACK):
        return (f"entry: none; tcp_new(): {what} cannot open a connection (state table NONE -> INVALID): "
                "no entry is made")
    if not settings.loose:
        return (f"entry: none; tcp_new(): {what} would pick the connection up mid-stream, but "
                "nf_conntrack_tcp_loose=0 forbids it: no entry, nothing logged")
    return f"entry: none; tcp_new() for {what}"
