"""check --format npd under node-problem-detector's custom-plugin protocol, and the shipped monitor configs
checked against NPD's own validation rules (pkg/custompluginmonitor/types/config.go, systemlogmonitor)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

from fleet.tools import REPO

EXAMPLE = REPO / "examples" / "incident"
FLEET = REPO / "src/sysctl_doctor/data/fleet"


def _duration(text: str) -> float:
    """A Go duration ("30m", "2m", "10s") in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text):
        total += float(number) * units[unit]
    assert re.fullmatch(r"(\d+(?:\.\d+)?(ms|s|m|h))+", text), text
    return total


def run_like_npd(config: dict, rule: dict, root) -> tuple:
    """What NPD does with one rule: run it with the rule's timeout, keep max_output_length bytes of stdout,
    trim it, map the exit status (0 OK, 1 NonOK, other Unknown)."""
    args = [a.replace("/host", str(root)) for a in rule["args"]]
    try:
        proc = subprocess.run([sys.executable, "-m", "sysctl_doctor", *args], capture_output=True,
                              timeout=_duration(rule.get("timeout", config["pluginConfig"]["timeout"])))
    except subprocess.TimeoutExpired:
        return "Unknown", "timeout"
    out = proc.stdout[: config["pluginConfig"]["max_output_length"]].decode("utf-8", "replace").strip()
    status = {0: "OK", 1: "NonOK"}.get(proc.returncode, "Unknown")
    return status, out


def test_custom_plugin_config_follows_npd_rules():
    config = json.loads((FLEET / "npd-custom-plugin-monitor.json").read_text())
    plugin = config["pluginConfig"]
    assert config["plugin"] == "custom"
    assert _duration(plugin["timeout"]) <= _duration(plugin["invoke_interval"])
    assert plugin["max_output_length"] == 80
    conditions = {c["type"] for c in config["conditions"]}
    for rule in config["rules"]:
        assert rule["type"] in ("temporary", "permanent")
        if rule["type"] == "permanent":
            assert rule["condition"] in conditions, "a permanent rule needs a default condition"
        assert _duration(rule["timeout"]) <= _duration(plugin["timeout"]), "rule timeout <= global timeout"
        assert rule["path"].startswith("/") and rule["args"][-2:] == ["--format", "npd"]


def test_plugin_answers_ok_problem_and_unknown_on_real_roots(tmp_path):
    config = json.loads((FLEET / "npd-custom-plugin-monitor.json").read_text())
    [rule] = config["rules"]
    status, message = run_like_npd(config, rule, EXAMPLE)
    assert (status, message) == ("NonOK", "1 sysctl lost at boot: net.netfilter.nf_conntrack_tcp_be_liberal")

    fixed = tmp_path / "fixed"
    shutil.copytree(EXAMPLE, fixed, symlinks=True)
    subprocess.run([sys.executable, "-m", "sysctl_doctor", "fix", "--root", str(fixed)], capture_output=True, timeout=300)
    status, message = run_like_npd(config, rule, fixed)
    assert status == "OK" and message.startswith("OK: ") and len(message) <= 80

    status, message = run_like_npd(config, rule, tmp_path / "missing")
    assert status == "Unknown" and message.startswith("unknown: ")


def test_line_is_one_printable_line_within_80_bytes(tmp_path):
    root = tmp_path / "many"
    shutil.copytree(EXAMPLE, root, symlinks=True)
    extra = "".join(f"net.netfilter.nf_conntrack_tcp_timeout_{n} = 1\n" for n in ("close", "close_wait", "fin_wait",
                                                                                  "last_ack", "syn_recv", "syn_sent"))
    (root / "etc/sysctl.d/90-many\x1b]0;x\x07.conf").write_text(extra)
    proc = subprocess.run([sys.executable, "-m", "sysctl_doctor", "check", "--root", str(root), "--format", "npd"],
                          capture_output=True, timeout=300)
    assert proc.returncode == 1
    line = proc.stdout.decode()
    assert line.endswith("\n") and line.count("\n") == 1
    assert len(line.rstrip("\n").encode()) <= 80 and line.rstrip("\n").endswith("...")
    assert all(32 <= b < 127 for b in line.rstrip("\n").encode())
    assert line.startswith("7 sysctls lost at boot: ")


def test_kmsg_rule_matches_conntrack_lines_only():
    config = json.loads((FLEET / "npd-kmsg-monitor.json").read_text())
    assert config["plugin"] == "kmsg" and config["conditions"] == []
    [rule] = config["rules"]
    assert rule["type"] == "temporary"
    pattern = re.compile(rule["pattern"] + r"\Z")  # NPD anchors a rule at the end of the buffered log
    invalid = ("nf_ct_proto_6: SEQ is under lower bound (already ACKed data retransmitted) IN=eth0 OUT= "
               "MAC= SRC=10.0.0.2 DST=10.0.0.1 LEN=52 TOS=0x00 PREC=0x00 TTL=64 ID=0 DF PROTO=TCP SPT=80 DPT=4000")
    assert pattern.search(invalid)
    assert pattern.search("nf_ct_tcp: invalid rst IN=eth0 OUT= SRC=1.2.3.4")
    assert not pattern.search("e1000e: eth0 NIC Link is Up 1000 Mbps Full Duplex")
