"""Services that write sysctl keys themselves when they start, overriding what the sysctl step applied.

Each rule below is taken from the program's source (the version named), and each found write carries the
unit's line (and the configuration line) that makes it happen:

- dockerd (moby 20.10, Debian 12's docker.io; libnetwork/drivers/bridge): with ip-forward enabled (the default)
  `setupIPForwarding` writes net.ipv4.ip_forward = 1 when it is 0; a bridge network with inter-container
  communication off (`"icc": false` in /etc/docker/daemon.json or `--icc=false`) and iptables on runs
  `setupBridgeNetFiltering`, which writes bridge-nf-call-iptables = 1 when forwarding is on
  (setup_bridgenetfiltering.go checkBridgeNetFiltering).
- k3s / rke2 agents (k3s pkg/agent/syssetup Configure): net.ipv4.conf.{all,default}.forwarding = 1,
  net.bridge.bridge-nf-call-iptables = 1, and from the kube-proxy conntrack configuration nf_conntrack_max =
  max(min, maxPerCore x CPUs) and the TCP established/close-wait timeouts (kube-proxy defaults 24h, 1h)
  — whenever the value differs.
- kube-proxy (pkg/proxy/conntrack setSysctls): nf_conntrack_max = max(--conntrack-min, --conntrack-max-per-core x
  CPUs) (defaults 131072 and 32768; 0 per core leaves it alone), nf_conntrack_tcp_timeout_established
  (--conntrack-tcp-timeout-established, default 24h), _close_wait (default 1h), be_liberal
  (--conntrack-tcp-be-liberal), UDP timeouts when given; flags or its --config KubeProxyConfiguration file
  (conntrack: maxPerCore, min, tcpEstablishedTimeout, tcpCloseWaitTimeout, tcpBeLiberal, udpTimeout,
  udpStreamTimeout).
- firewalld (1.3, /etc/firewalld/firewalld.conf): CleanupModulesOnExit=yes unloads the netfilter modules
  when firewalld stops or restarts: keys of nf_conntrack and its helpers lose the sysctl step's values and come
  back with the kernel defaults on the next load (Debian's default is `no`).

A write happens when the service starts: after the sysctl step unless the service is ordered before it, so it
wins over the configured value.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from sysctl_doctor.boot.units import exec_words
from sysctl_doctor.root import Root

KUBE_PROXY_MAX_PER_CORE = 32768
KUBE_PROXY_MIN = 131072
KUBE_PROXY_ESTABLISHED = 86400  # 24h
KUBE_PROXY_CLOSE_WAIT = 3600  # 1h


@dataclass(frozen=True)
class ServiceWrite:
    """A key a service writes when it starts."""

    unit: str
    path: str  # slash key
    value: str  # what it writes (a formula when it depends on the CPU count)
    evidence: str  # "file:line `text`" of what makes it happen
    why: str  # the program's behaviour, with its source
    relation: str = "race"  # BEFORE | RACE | AFTER relative to the sysctl step (filled in by the timeline)
    depends_on_cpus: bool = False


@dataclass(frozen=True)
class ModuleUnload:
    """A service that unloads modules when it stops or restarts."""

    unit: str
    modules: Tuple[str, ...]
    evidence: str
    why: str


def _words(exec_text: str) -> List[str]:
    """`ExecStart=…` (or just its value) as systemd runs it."""
    return exec_words(exec_text.split("=", 1)[1] if "=" in exec_text.split(None, 1)[0] else exec_text)


def _flag(words: List[str], name: str) -> Optional[str]:
    """The last value of --name=V / --name V in a command line (None: absent)."""
    found = None
    for i, word in enumerate(words):
        if word.startswith(f"--{name}="):
            found = word.split("=", 1)[1]
        elif word == f"--{name}" and i + 1 < len(words):
            found = words[i + 1]
    return found


def _duration_seconds(text: str) -> Optional[int]:
    """A Go duration ("24h0m0s", "1h", "90s") in seconds."""
    total = 0.0
    matched = False
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s)", text.strip()):
        matched = True
        total += float(number) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[unit]
    return int(total) if matched else None


def _yaml_scalar(text: str, key: str) -> Optional[Tuple[str, int]]:
    """(value, line) of the first `key: value` in a YAML text (the KubeProxyConfiguration subset)."""
    for number, line in enumerate(text.splitlines(), 1):
        match = re.match(rf"\s*{re.escape(key)}\s*:\s*([^#]+?)\s*(#.*)?$", line)
        if match:
            return match.group(1).strip().strip("'\""), number
    return None


def _docker(root: Root, unit: str, where: str, text: str, words: List[str]) -> List[ServiceWrite]:
    out: List[ServiceWrite] = []
    config: Dict[str, object] = {}
    config_line: Dict[str, int] = {}
    path = _flag(words, "config-file") or "/etc/docker/daemon.json"
    try:
        raw = root.read_text(path)
        loaded = json.loads(raw)
        config = loaded if isinstance(loaded, dict) else {}
        for key in config:
            config_line[key] = next((n for n, line in enumerate(raw.splitlines(), 1) if f'"{key}"' in line), 0)
    except (OSError, ValueError):
        pass

    def setting(key: str, flag: str, default: bool) -> Tuple[bool, str]:
        value = _flag(words, flag)
        if value is not None:
            return value.lower() not in ("false", "0", "no"), f"{where} `{text}`"
        if key in config:
            return bool(config[key]) is True and config[key] not in ("false",), \
                f"{path}:{config_line.get(key, 0)} `\"{key}\": {json.dumps(config[key])}`"
        return default, f"{where} `{text}` (default {key}: {str(default).lower()})"

    forward, forward_where = setting("ip-forward", "ip-forward", True)
    iptables, _ = setting("iptables", "iptables", True)
    icc, icc_where = setting("icc", "icc", True)
    if forward:
        out.append(ServiceWrite(unit, "net/ipv4/ip_forward", "1", forward_where,
                                "dockerd enables IPv4 forwarding at start when it is off (moby libnetwork "
                                "bridge setupIPForwarding; \"ip-forward\": false turns it off)"))
    if forward and iptables and not icc:
        out.append(ServiceWrite(unit, "net/bridge/bridge-nf-call-iptables", "1", icc_where,
                                "with icc off and iptables on, dockerd's bridge driver writes bridge-nf-call-iptables"
                                " = 1 when forwarding is on (moby libnetwork setupBridgeNetFiltering)"))
    return out


def _kube_proxy_conntrack(root: Root, words: List[str], where: str, text: str,
                          config_flag: str = "config") -> Dict[str, Tuple[Optional[str], str]]:
    """kube-proxy's conntrack settings: name -> (value, evidence); flags beat the --config file."""
    values: Dict[str, Tuple[Optional[str], str]] = {
        "maxPerCore": (str(KUBE_PROXY_MAX_PER_CORE), f"{where} `{text}` (kube-proxy default conntrack maxPerCore)"),
        "min": (str(KUBE_PROXY_MIN), f"{where} `{text}` (kube-proxy default conntrack min)"),
        "tcpEstablishedTimeout": ("24h", f"{where} `{text}` (kube-proxy default tcpEstablishedTimeout 24h)"),
        "tcpCloseWaitTimeout": ("1h", f"{where} `{text}` (kube-proxy default tcpCloseWaitTimeout 1h)"),
        "tcpBeLiberal": (None, ""), "udpTimeout": (None, ""), "udpStreamTimeout": (None, ""),
    }
    config = _flag(words, config_flag)
    if config:
        try:
            body = root.read_text(config)
        except OSError:
            body = ""
        for key in values:
            found = _yaml_scalar(body, key)
            if found is not None:
                values[key] = (found[0], f"{config}:{found[1]} `{key}: {found[0]}`")
    flags = {"maxPerCore": "conntrack-max-per-core", "min": "conntrack-min",
             "tcpEstablishedTimeout": "conntrack-tcp-timeout-established",
             "tcpCloseWaitTimeout": "conntrack-tcp-timeout-close-wait", "tcpBeLiberal": "conntrack-tcp-be-liberal",
             "udpTimeout": "conntrack-udp-timeout", "udpStreamTimeout": "conntrack-udp-timeout-stream"}
    for key, flag in flags.items():
        value = _flag(words, flag)
        if value is None:
            value = next((w.split("=", 2)[-1] for w in words if w.startswith(f"--kube-proxy-arg={flag}=")), None)
        if value is not None:
            values[key] = (value if value != "" else "true", f"{where} `{text}`")
    return values


def _conntrack_writes(unit: str, values: Dict[str, Tuple[Optional[str], str]], who: str) -> List[ServiceWrite]:
    out: List[ServiceWrite] = []
    per_core = int(values["maxPerCore"][0] or 0) if (values["maxPerCore"][0] or "0").isdigit() else 0
    floor = int(values["min"][0] or 0) if (values["min"][0] or "0").isdigit() else 0
    if per_core > 0:
        out.append(ServiceWrite(unit, "net/netfilter/nf_conntrack_max", f"max({floor}, {per_core} x CPUs)",
                                values["maxPerCore"][1],
                                f"{who} sets nf_conntrack_max = max(min, maxPerCore x CPUs) at start "
                                "(kubernetes pkg/proxy/conntrack getConntrackMax)", depends_on_cpus=True))
    for key, leaf in (("tcpEstablishedTimeout", "nf_conntrack_tcp_timeout_established"),
                      ("tcpCloseWaitTimeout", "nf_conntrack_tcp_timeout_close_wait"),
                      ("udpTimeout", "nf_conntrack_udp_timeout"), ("udpStreamTimeout", "nf_conntrack_udp_timeout_stream")):
        raw, evidence = values[key]
        seconds = _duration_seconds(raw) if raw else None
        if seconds:
            out.append(ServiceWrite(unit, f"net/netfilter/{leaf}", str(seconds), evidence,
                                    f"{who} sets {leaf} from its conntrack {key} at start (pkg/proxy/conntrack)"))
    liberal, evidence = values["tcpBeLiberal"]
    if liberal is not None and liberal.lower() in ("true", "1"):
        out.append(ServiceWrite(unit, "net/netfilter/nf_conntrack_tcp_be_liberal", "1", evidence,
                                f"{who} sets nf_conntrack_tcp_be_liberal = 1 (conntrack tcpBeLiberal)"))
    return out


def _k3s(root: Root, unit: str, where: str, text: str, words: List[str], program: str) -> List[ServiceWrite]:
    why = f"{program} agent start (k3s pkg/agent/syssetup Configure) writes it when it differs"
    out = [ServiceWrite(unit, path, "1", f"{where} `{text}`", why)
           for path in ("net/ipv4/conf/all/forwarding", "net/ipv4/conf/default/forwarding",
                        "net/bridge/bridge-nf-call-iptables")]
    values = _kube_proxy_conntrack(root, words, where, text, config_flag="kube-proxy-config")
    out += _conntrack_writes(unit, values, f"{program} (its embedded kube-proxy conntrack settings)")
    return out


def service_writes(root: Root, unit: str, exec_where: str, exec_text: str) -> List[ServiceWrite]:
    """The keys the service a unit starts writes at start, from its ExecStart line (and its configuration)."""
    words = _words(exec_text)
    if not words:
        return []
    program = words[0].rsplit("/", 1)[-1]
    if program == "dockerd":
        return _docker(root, unit, exec_where, exec_text, words)
    if program in ("k3s", "rke2") and len(words) > 1 and words[1] in ("server", "agent"):
        return _k3s(root, unit, exec_where, exec_text, words, program)
    if program == "kube-proxy":
        return _conntrack_writes(unit, _kube_proxy_conntrack(root, words, exec_where, exec_text), "kube-proxy")
    return []


FIREWALLD_CONF = "/etc/firewalld/firewalld.conf"


def firewalld_unload(root: Root, unit: str) -> Optional[ModuleUnload]:
    """firewalld with CleanupModulesOnExit=yes: it unloads the netfilter modules when it stops or restarts."""
    try:
        text = root.read_text(FIREWALLD_CONF)
    except OSError:
        return None
    found = None
    for number, line in enumerate(text.splitlines(), 1):
        match = re.match(r"\s*CleanupModulesOnExit\s*=\s*(\S+)", line)
        if match:
            found = (match.group(1).lower(), number, line.strip())
    if found is None or found[0] not in ("yes", "true", "1"):
        return None
    return ModuleUnload(unit, ("nf_conntrack",), f"{FIREWALLD_CONF}:{found[1]} `{found[2]}`",
                        "firewalld unloads the netfilter modules on stop/restart (CleanupModulesOnExit=yes): the "
                        "sysctl step's values for their keys are lost and come back as kernel defaults on the "
                        "next load")
