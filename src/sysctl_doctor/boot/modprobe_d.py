"""What modprobe.d commands do to a module's sysctl keys (kmod 30 libkmod, systemd 252 modules-load).

- ``install M CMD``: libkmod runs CMD through ``/bin/sh -c`` instead of inserting M — for M itself and for M
  as a dependency or softdep of another module (kmod_module_probe_insert_module runs the install command of
  every module in the probe list), whoever asks: modprobe, the kernel's request_module, systemd-modules-load.
  The first install line whose pattern matches M counts. CMD loads M only if it runs ``modprobe
  --ignore-install M`` (``-i``) or ``insmod``; ``/bin/true``/``/bin/false`` or anything else leaves M out.
  The common workaround ``modprobe --ignore-install M && sysctl -w KEY=V`` (or ``sysctl -p FILE``,
  ``systemd-sysctl --prefix=…``) writes the keys right after M is inserted, whenever and by whomever it is
  loaded: the value holds with no race against the sysctl step.
- ``softdep M pre: A post: B``: libkmod loads A before M and B after M (first matching line).
- ``options M k=v``: parameters M gets when it is inserted; some set a sysctl's starting value
  (`OPTION_KEYS`).
- ``blacklist M``: only stops loads that apply the deny-list — systemd-modules-load (KMOD_PROBE_APPLY_BLACKLIST:
  the listed module itself, not its dependencies) and modprobe when the name was found through an alias
  (KMOD_PROBE_APPLY_BLACKLIST_ALIAS_ONLY: the kernel's request_module("nft-expr-ct") and friends); an explicit
  ``modprobe M`` loads it anyway.
"""

from __future__ import annotations

import fnmatch
import shlex
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

from sysctl_doctor.config.model import key_to_path

NO_OP_COMMANDS = ("true", "false")


@dataclass(frozen=True)
class SysctlWrite:
    path: str  # slash key
    value: str
    text: str  # the command part that writes it


@dataclass(frozen=True)
class InstallCommand:
    """An ``install`` line and what its command does."""

    module: str
    command: str
    where: str  # "file:line"
    loads: bool  # the command inserts the module itself (modprobe --ignore-install M / insmod)
    writes: Tuple[SysctlWrite, ...] = ()  # sysctl -w KEY=V parts, in order
    reapply: Optional[Tuple[Tuple[str, ...], Optional[frozenset]]] = None  # sysctl -p / systemd-sysctl run
    reapply_text: str = ""

    @property
    def evidence(self) -> str:
        return f"{self.where} `install {self.module} {self.command}`"

    def value_after_load(self, path: str, configured: str, covers: Callable) -> Optional[str]:
        """The value the command leaves in `path` once the module is in, or None if it does not write it.
        A re-run of the sysctl step writes the configured value (`covers(prefixes, only_keys, path)`)."""
        value = None
        if self.reapply is not None and covers(self.reapply[0], self.reapply[1], path):
            value = configured
        for write in self.writes:
            if write.path == path:
                value = write.value
        return value


_OPERATORS = {"&&", "||", ";", "|", "&", ";;", "\n"}


def _segments(command: str, depth: int = 0) -> List[List[str]]:
    """The simple commands of a shell line, split at `&&`, `||`, `;`, `|` outside quotes; `sh -c 'X'` is read
    as X (nested at most 4 deep)."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    lexer.commenters = ""
    try:
        tokens = list(lexer)
    except ValueError:
        tokens = command.split()
    out: List[List[str]] = []
    words: List[str] = []
    for token in tokens + [";"]:
        if token in _OPERATORS or set(token) <= set(";&|") and token:
            if words:
                program = words[0].rsplit("/", 1)[-1]
                if program in ("sh", "bash", "dash") and "-c" in words and depth < 4:
                    index = words.index("-c")
                    if index + 1 < len(words):
                        out.extend(_segments(words[index + 1], depth + 1))
                else:
                    out.append(words)
            words = []
        else:
            words.append(token)
    return out


def parse_install(module: str, command: str, where: str, root=None) -> InstallCommand:
    """What an install command does, read as the shell would split it (``&&``, ``;``, ``||``, ``sh -c``)."""
    from sysctl_doctor.boot.udev import sysctl_command

    loads = False
    writes: List[SysctlWrite] = []
    reapply = None
    reapply_text = ""
    for words in _segments(command):
        program = words[0].rsplit("/", 1)[-1]
        names = {w.replace("-", "_") for w in words[1:] if not w.startswith("-")}
        if program == "modprobe" and any(w in ("--ignore-install", "-i") for w in words) and \
                any(fnmatch.fnmatchcase(name, module) or name == module for name in names):
            loads = True
        elif program == "insmod":
            loads = True
        elif program == "sysctl":
            args = words[1:]
            assignments = [w for w in args if "=" in w and not w.startswith("-")]
            if assignments and ("-w" in args or "--write" in args or not any(a in ("-p", "--load", "--system")
                                                                             for a in args)):
                for item in assignments:
                    key, value = item.split("=", 1)
                    writes.append(SysctlWrite(key_to_path(key.strip()), value.strip(), " ".join(words)))
                continue
        if program in ("sysctl", "systemd-sysctl") and root is not None:
            found = sysctl_command(root, " ".join(words))
            if found is not None:
                reapply, reapply_text = found, " ".join(words)
    return InstallCommand(module, command, where, loads, tuple(writes), reapply, reapply_text)


def install_commands(root) -> Dict[str, InstallCommand]:
    """Every modprobe.d install line of the root, parsed, by "file:line" (a `sysctl -p FILE` in one is read
    from the root)."""
    from sysctl_doctor.kernel.modules_tree import read_modprobe_config

    return {where: parse_install(pattern, command, where, root)
            for pattern, command, where in read_modprobe_config(root).install_lines}


# nf_tables asks for its expressions and chain types by alias (nf_tables_api.c: request_module("nft-expr-%.*s"),
# request_module("nft-chain-%u-%.*s"); nf_flow_table: "nf-flowtable-%u"): modprobe applies the deny-list to
# those. iptables asks by module name (x_tables.c: request_module("%st_%s")) and dependencies are never checked.
ALIAS_REQUESTS = {"nft_ct": "nft-expr-ct", "nft_nat": "nft-expr-nat", "nft_masq": "nft-expr-masq",
                  "nft_redir": "nft-expr-redir", "nft_chain_nat": "nft-chain-<family>-nat",
                  "nf_flow_table_inet": "nf-flowtable-1"}


def requested_by_alias(load) -> Optional[str]:
    """The alias an on-demand load asks modprobe for (nf_tables rulesets), or None."""
    if load.by in ("systemd-modules-load.service",) or load.by.startswith("initramfs"):
        return None
    return ALIAS_REQUESTS.get(load.module)


# --------------------------------------------------------------------------- options that set sysctl defaults

PAGE_SLOTS = 512  # nf_ct_alloc_hashtable rounds the table up to whole pages of 8-byte heads (4 KiB pages)


def _bool_param(value: str) -> Optional[str]:
    """kstrtobool as param_set_bool uses it: 1/y/Y/on -> 1, 0/n/N/off -> 0."""
    v = value.strip().lower()
    if v in ("1", "y", "yes", "on", "true") or v.startswith("y"):
        return "1"
    if v in ("0", "n", "no", "off", "false") or v.startswith("n"):
        return "0"
    return None


def _uint(value: str) -> Optional[int]:
    try:
        number = int(value, 0)
    except ValueError:
        return None
    return number if number > 0 else None


def _conntrack(params: Dict[str, str]) -> Dict[str, Tuple[str, str]]:
    """nf_conntrack's parameters -> (key default, formula): nf_conntrack_core.c nf_conntrack_init_start (a
    given hashsize: buckets = hashsize rounded up to whole pages, max = 8 x buckets), nf_conntrack_expect.c
    (expect_max = 4 x expect_hashsize, which defaults to buckets / 256), nf_conntrack_acct.c (acct),
    nf_conntrack_timestamp.c (tstamp)."""
    out: Dict[str, Tuple[str, str]] = {}
    size = _uint(params.get("hashsize", ""))
    buckets = None
    if size is not None:
        buckets = -(-size // PAGE_SLOTS) * PAGE_SLOTS
        out["net/netfilter/nf_conntrack_buckets"] = (str(buckets), f"hashsize={size} rounded up to {buckets}")
        out["net/netfilter/nf_conntrack_max"] = (str(8 * buckets), f"8 x buckets ({buckets}) when hashsize is given")
    expect = _uint(params.get("expect_hashsize", ""))
    if expect is not None:
        out["net/netfilter/nf_conntrack_expect_max"] = (str(4 * expect), f"4 x expect_hashsize ({expect})")
    elif buckets is not None:
        hsize = max(1, buckets // 256)
        out["net/netfilter/nf_conntrack_expect_max"] = (str(4 * hsize), f"4 x (buckets {buckets} / 256)")
    for param, key in (("acct", "net/netfilter/nf_conntrack_acct"), ("tstamp", "net/netfilter/nf_conntrack_timestamp")):
        if param in params and _bool_param(params[param]) is not None:
            out[key] = (_bool_param(params[param]), f"{param}={params[param]}")
    return out


OPTION_KEYS: Dict[str, Callable[[Dict[str, str]], Dict[str, Tuple[str, str]]]] = {"nf_conntrack": _conntrack}


def parse_options(text: str) -> Dict[str, str]:
    """``k=v k2 k3="a b"`` as the kernel's parse_args splits it (a bare name is a boolean set to 1); a later
    value of the same parameter replaces the earlier one."""
    out: Dict[str, str] = {}
    try:
        words = shlex.split(text)
    except ValueError:
        words = text.split()
    for word in words:
        name, sep, value = word.partition("=")
        out[name.replace("-", "_")] = value if sep else "1"
    return out


def cmdline_options(cmdline, module: str) -> List[Tuple[str, str]]:
    """``module.param=value`` words of the kernel command line, as (options text, source): libkmod reads
    them from /proc/cmdline after the modprobe.d files (kmod_config_parse_kcmdline), so they come last."""
    if cmdline is None:
        return []
    out = []
    for word in getattr(cmdline, "words", []) or []:
        name, dot, rest = word.partition(".")
        if dot and "=" in rest and name.replace("-", "_") == module:
            out.append((rest, f"kernel command line ({getattr(cmdline, 'source', '') or 'cmdline'})"))
    return out


def option_default(index, module: str, path: str, cmdline=None) -> Optional[Tuple[str, str]]:
    """(starting value, evidence) of `path` when modprobe.d ``options`` for `module` (or ``module.param=`` on
    the kernel command line, which libkmod appends after them: the last value of a parameter wins) set it."""
    rule = OPTION_KEYS.get(module)
    if rule is None or index is None or not hasattr(index, "module_options"):
        return None
    lines = [(text, where) for text, where in index.module_options(module)] + cmdline_options(cmdline, module)
    if not lines:
        return None
    params: Dict[str, str] = {}
    for text, _where in lines:
        params.update(parse_options(text))
    found = rule(params).get(path)
    if found is None:
        return None
    value, formula = found
    where = "; ".join(f"{w} `options {module} {t}`" for t, w in lines)
    return value, f"{formula} ({where})"
