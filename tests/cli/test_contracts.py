"""The JSON contracts external checks rely on, validated strictly on real runs of the console script.

Field names and types are those the README promises (and the issues asked for); a field renamed, a
line number turned into a string, a bool turned into "true" fails here.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Dict, List

import pytest

from cli.console import INCIDENT, run_cli
from conntrack.captures import seed_packets, write_ethernet_pcap

PROVIDER_KINDS = {"builtin", "module", "interface", "autoload", "unknown"}
SEVERITIES = {"error", "warning", "info"}


def _json(args: List[str], codes: set) -> Any:
    result = run_cli(args)
    assert result.returncode in codes, (args, result.returncode, result.stderr.decode())
    return json.loads(result.stdout)  # pure JSON: nothing else on stdout


def _is_str_or_none(value: Any) -> bool:
    return value is None or isinstance(value, str)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_fields(obj: Dict[str, Any], required: set, where: str) -> None:
    assert isinstance(obj, dict), where
    missing = required - set(obj)
    assert not missing, f"{where}: missing {sorted(missing)} in {obj}"


# --- show ---------------------------------------------------------------------------------------

def _validate_show(doc: Dict[str, Any], with_tree: bool) -> None:
    _check_fields(doc, {"settings", "ignored_files"}, "show")
    assert isinstance(doc["settings"], list) and doc["settings"]
    for s in doc["settings"]:
        _check_fields(s, {"key", "value", "exists", "file", "line", "ignore_failure", "overrides"}, "setting")
        assert isinstance(s["key"], str) and "." in s["key"] and not s["key"].startswith("/"), s
        assert isinstance(s["value"], str), s
        if with_tree:
            assert isinstance(s["exists"], bool), s
        else:
            assert s["exists"] is None, s
        assert isinstance(s["file"], str) and s["file"].startswith("/"), s
        assert _is_int(s["line"]) and s["line"] >= 1, s
        assert isinstance(s["ignore_failure"], bool), s
        assert isinstance(s["overrides"], list), s
        for o in s["overrides"]:
            _check_fields(o, {"file", "line", "value"}, "override")
            assert isinstance(o["file"], str) and _is_int(o["line"]) and isinstance(o["value"], str), o
    assert isinstance(doc["ignored_files"], list)
    for i in doc["ignored_files"]:
        _check_fields(i, {"file", "reason"}, "ignored_file")
        assert isinstance(i["file"], str) and isinstance(i["reason"], str), i


def test_show_contract_on_the_example_root() -> None:
    doc = _json(["show", "--root", str(INCIDENT), "--format", "json"], {0})
    _validate_show(doc, with_tree=False)
    by_key = {s["key"]: s for s in doc["settings"]}
    forward = by_key["net.ipv4.ip_forward"]
    assert (forward["value"], forward["file"], forward["line"]) == ("1", "/etc/sysctl.d/99-sysctl.conf", 72)
    assert forward["overrides"] == [{"file": "/etc/sysctl.d/10-hardening.conf", "line": 4, "value": "0"}]
    assert {"file": "/etc/sysctl.d/README.sysctl", "reason": "name does not end in .conf"} in [
        {"file": i["file"], "reason": i["reason"]} for i in doc["ignored_files"]]


def test_show_contract_with_a_key_tree(tmp_path: Path) -> None:
    tree = tmp_path / "proc-sys"
    for key in ("net/ipv4/ip_forward", "kernel/pid_max", "net/ipv4/conf/lo/rp_filter",
                "net/ipv4/conf/eth0/rp_filter"):
        (tree / key).parent.mkdir(parents=True, exist_ok=True)
        (tree / key).write_text("0\n")
    doc = _json(["show", "--root", str(INCIDENT), "--proc-sys", str(tree), "--format", "json"], {0})
    _validate_show(doc, with_tree=True)
    exists = {s["key"]: s["exists"] for s in doc["settings"]}
    assert exists["net.ipv4.ip_forward"] is True
    assert exists["net.netfilter.nf_conntrack_tcp_be_liberal"] is False
    assert exists["net.ipv4.conf.eth0.rp_filter"] is True  # the glob, expanded


# --- check --------------------------------------------------------------------------------------

def _validate_check(doc: Dict[str, Any], live: bool) -> None:
    _check_fields(doc, {"keys", "findings"}, "check")
    assert isinstance(doc["keys"], list) and doc["keys"]
    codes = {f["code"] for f in doc["findings"]}
    for k in doc["keys"]:
        _check_fields(k, {"key", "configured", "file", "line", "provider", "boot", "after_late_load", "live",
                          "findings"}, "key")
        assert isinstance(k["key"], str) and "." in k["key"], k
        assert isinstance(k["configured"], str), k
        assert isinstance(k["file"], str) and k["file"].startswith("/"), k
        assert _is_int(k["line"]) and k["line"] >= 1, k
        _check_fields(k["provider"], {"kind", "module"}, "provider")
        assert k["provider"]["kind"] in PROVIDER_KINDS, k
        assert _is_str_or_none(k["provider"]["module"]), k
        if k["provider"]["kind"] in ("module", "autoload"):  # autoload: the module the value loads (tcp_bbr)
            assert isinstance(k["provider"]["module"], str) and k["provider"]["module"], k
        _check_fields(k["boot"], {"applied", "value"}, "boot")
        assert isinstance(k["boot"]["applied"], bool), k
        assert _is_str_or_none(k["boot"]["value"]), k
        _check_fields(k["after_late_load"], {"value"}, "after_late_load")
        assert _is_str_or_none(k["after_late_load"]["value"]), k
        if live:
            assert _is_str_or_none(k["live"]), k
        else:
            assert k["live"] is None, k
        assert isinstance(k["findings"], list) and all(isinstance(c, str) for c in k["findings"]), k
        assert set(k["findings"]) <= codes, k
    for f in doc["findings"]:
        _check_fields(f, {"code", "severity", "key", "message", "fix"}, "finding")
        # SD rules everywhere, CT rules where the host does NAT (a podman or Kubernetes host masquerades)
        assert isinstance(f["code"], str) and f["code"][:2] in ("SD", "CT") and f["code"][2:].isdigit(), f
        assert f["severity"] in SEVERITIES, f
        assert _is_str_or_none(f["key"]), f  # null for a file-level finding (SD105)
        assert isinstance(f["message"], str) and f["message"], f
        assert isinstance(f["fix"], str), f
        # issue 15: the keys a finding is about (a per-file SD109 names several); [] for host-level findings
        assert isinstance(f["keys"], list) and (f["key"] is None or f["keys"][0] == f["key"]), f
    # issue 15: every line of every sysctl file with its fate; key rows carry the fate of the line they show
    fates = {"applied", "overridden", "repeat", "cancelled", "excludes", "no-such-key", "invalid", "shadowed", "masked",
             "runtime-only", "never-read"}
    for k in doc["keys"]:
        assert k["fate"] in fates and (k["fate"] == "applied") == (k["fate"] not in ("cancelled", "shadowed", "masked",
                                                                                      "runtime-only", "never-read")), k
        if k["fate"] != "applied":
            assert k["boot"]["applied"] is False, k
    assert isinstance(doc["assignments"], list)
    for a in doc["assignments"]:
        _check_fields(a, {"file", "line", "key", "value", "glob", "fate", "reason", "by", "keys"}, "assignment")
        assert a["fate"] in fates and isinstance(a["file"], str) and _is_int(a["line"]), a
        assert _is_str_or_none(a["key"]) and _is_str_or_none(a["value"]) and isinstance(a["glob"], bool), a
        assert a["by"] is None or (isinstance(a["by"]["file"], str) and (a["by"]["line"] is None or _is_int(a["by"]["line"]))), a
        assert a["keys"] is None or all(isinstance(x, str) for x in a["keys"]), a


def test_check_contract_on_the_example_root() -> None:
    doc = _json(["check", "--root", str(INCIDENT), "--format", "json"], {1})
    _validate_check(doc, live=False)
    be_liberal = next(k for k in doc["keys"] if k["key"] == "net.netfilter.nf_conntrack_tcp_be_liberal")
    assert be_liberal["provider"] == {"kind": "module", "module": "nf_conntrack"}
    assert be_liberal["boot"] == {"applied": False, "value": "0"}
    assert "SD101" in be_liberal["findings"]
    sd101 = next(f for f in doc["findings"] if f["code"] == "SD101")
    assert sd101["severity"] == "error" and sd101["key"] == be_liberal["key"]


def test_check_contract_absent_key_and_file_level_finding(tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(INCIDENT, root, symlinks=True)
    # nothing loads nf_conntrack any more: the key is absent after boot (value null) ...
    os.unlink(root / "etc/systemd/system/sysinit.target.wants/nftables.service")
    # every provider kind: autoload (a value that loads a module), unknown (a typo), interface
    (root / "etc/sysctl.d/50-more.conf").write_text(
        "net.ipv4.tcp_congestion_control = bbr\nnet.bogus.key = 1\nnet.ipv4.conf.eth0.rp_filter = 2\n")
    # ... and a file that is never read gives a finding with no key
    (root / "etc/sysctl.d/50-local.cfg").write_text("vm.swappiness = 10\n")
    doc = _json(["check", "--root", str(root), "--format", "json"], {0, 1})
    _validate_check(doc, live=False)
    be_liberal = next(k for k in doc["keys"] if k["key"] == "net.netfilter.nf_conntrack_tcp_be_liberal")
    assert be_liberal["boot"]["value"] is None and be_liberal["boot"]["applied"] is False
    assert any(f["code"] == "SD105" and f["key"] is None for f in doc["findings"])
    assert {k["provider"]["kind"] for k in doc["keys"]} == PROVIDER_KINDS
    providers = {k["key"]: k["provider"] for k in doc["keys"]}
    assert providers["net.ipv4.tcp_congestion_control"] == {"kind": "autoload", "module": "tcp_bbr"}
    assert providers["net.bogus.key"] == {"kind": "unknown", "module": None}


def test_check_contract_on_this_host() -> None:
    doc = _json(["check", "--format", "json"], {0, 1})
    if not doc["keys"]:
        pytest.skip("NEEDS a host with sysctl.d settings to validate the live fields")
    _validate_check(doc, live=True)
    assert any(isinstance(k["live"], str) for k in doc["keys"])


# --- conntrack replay ---------------------------------------------------------------------------

def test_replay_contract_on_the_seed_capture(tmp_path: Path) -> None:
    capture = tmp_path / "seed.pcap"
    packets = seed_packets()
    write_ethernet_pcap(str(capture), packets)
    doc = _json(["conntrack", "replay", str(capture), "--kernel", "5.10", "--format", "json"], {1})
    _check_fields(doc, {"packets", "flows"}, "replay")
    assert isinstance(doc["flows"], list) and len(doc["flows"]) == 1
    assert isinstance(doc["packets"], list) and len(doc["packets"]) == len(packets)
    for p in doc["packets"]:
        _check_fields(p, {"frame", "verdict", "message"}, "packet")
        assert _is_int(p["frame"]), p
        assert p["verdict"] in {"accept", "ignore", "invalid"}, p
        assert _is_str_or_none(p["message"]), p
    frames = [p["frame"] for p in doc["packets"]]
    assert frames == list(range(1, len(packets) + 1))  # 1-based index in the file
    invalid = [p for p in doc["packets"] if p["verdict"] == "invalid"]
    # the seed's spurious retransmission, 80 KB below the window: the third packet from the end
    assert [p["frame"] for p in invalid] == [len(packets) - 2]
    assert "SEQ is under the lower bound" in invalid[0]["message"]
    assert all(p["message"] is None for p in doc["packets"] if p["verdict"] == "accept")


def _strings(value: Any) -> List[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in _strings(k) + _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


@pytest.mark.parametrize("command", [["show"], ["check"], ["explain", "net.ipv4.ip_forward"]])
def test_non_utf8_file_name_is_bytes_escaped_not_a_lone_surrogate(tmp_path: Path, command: List[str]) -> None:
    # json.dumps wrote "\udcff" for such a name: strict parsers reject it and jq makes it U+FFFD
    sysctl_d = tmp_path / "etc/sysctl.d"
    sysctl_d.mkdir(parents=True)
    (sysctl_d / "a.conf").write_text("net.ipv4.ip_forward = 0\n")
    with open(os.path.join(os.fsencode(sysctl_d), b"\xff\xfe.conf"), "wb") as fh:
        fh.write(b"net.ipv4.ip_forward = 1\n")
    result = run_cli([*command, "--root", str(tmp_path), "--format", "json"])
    assert result.returncode in (0, 1), result.stderr.decode()
    assert b"\\udc" not in result.stdout
    strings = _strings(json.loads(result.stdout))
    assert not [s for s in strings if any("\udc80" <= c <= "\udcff" for c in s)]
    assert any("/etc/sysctl.d/\\xff\\xfe.conf" in s for s in strings)
    if command == ["show"]:
        doc = json.loads(result.stdout)
        assert doc["settings"][-1]["file"] == "/etc/sysctl.d/\\xff\\xfe.conf"  # sorted after a.conf: it wins


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_replay_frame_counts_every_packet_in_the_file(tmp_path: Path, fmt: str) -> None:
    # "frame" is the packet's position in the file (as tshark numbers it), not among TCP packets only
    import struct

    from conntrack.captures import write_pcapng

    def udp(i: int) -> bytes:
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, i, 0, 64, 17, 0, bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
        return ip + struct.pack("!HHHH", 53, 53, 8, 0)

    mixed = []
    for i, (t, packet) in enumerate(seed_packets(segments=3)):
        mixed += [(t, udp(i)), (t, packet)]
    capture = tmp_path / f"mixed.{fmt}"
    (write_pcapng if fmt == "pcapng" else write_ethernet_pcap)(str(capture), mixed)
    doc = _json(["conntrack", "replay", str(capture), "--kernel", "5.10", "--format", "json"], {1})
    assert [p["frame"] for p in doc["packets"]] == list(range(2, len(mixed) + 1, 2))
    assert [p["frame"] for p in doc["packets"] if p["verdict"] == "invalid"] == [len(mixed) - 4]
