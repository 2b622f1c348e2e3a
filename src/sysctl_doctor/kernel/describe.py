"""Plain-text lines that say who provides a key (for `explain KEY`; renderers only print them)."""

from __future__ import annotations

from typing import List, Optional

from sysctl_doctor.kernel.model import KeyProvider, ProviderKind

MAX_LISTED = 8


def _listing(names: List[str]) -> str:
    if len(names) <= MAX_LISTED:
        return ", ".join(names)
    return ", ".join(names[:MAX_LISTED]) + f", … ({len(names)} in all)"


def _scope(p: KeyProvider) -> Optional[str]:
    if p.init_netns_only:
        return "init network namespace only (other namespaces do not have it)"
    if p.per_netns:
        return "per network namespace (a new namespace starts from the default, not the host's value)"
    return None


def describe_provider(provider: KeyProvider, index: object = None) -> List[str]:
    """Lines such as "provided by module nf_conntrack (kernel/net/netfilter/nf_conntrack.ko)".

    `index` (a ModuleIndex) adds modprobe.d facts: blacklist and install lines for the module.
    """
    p = provider
    lines: List[str] = []
    if p.kind is ProviderKind.BUILTIN:
        if p.module:
            lines.append(f"built into the kernel (module {p.module} is built in: {p.module_file or 'modules.builtin'})")
        else:
            lines.append("built into the kernel: exists from boot")
    elif p.kind is ProviderKind.MODULE:
        where = f" ({p.module_file})" if p.module_file else ""
        lines.append(f"provided by module {p.module}{where}: the key exists only once the module is loaded")
        if p.requires:
            lines.append(f"loading {p.module} first loads: {_listing(p.requires)}")
        if p.loaded_by:
            lines.append(f"also loaded as a dependency of {_listing(p.loaded_by)}")
    elif p.kind is ProviderKind.INTERFACE:
        lines.append(f"per-interface key: exists once interface {p.interface} exists (set again by udev's 99-systemd.rules when it appears)")
        if p.module:
            lines.append(f"the directory itself comes from module {p.module}")
    elif p.kind is ProviderKind.AUTOLOAD:
        where = f" ({p.module_file})" if p.module_file else ""
        if p.module:
            lines.append(f"this value needs module {p.module}{where}")
        if p.requires:
            lines.append(f"loading {p.module} first loads: {_listing(p.requires)}")
    else:
        if p.evidence.startswith("known-keys:"):
            lines.append("no known provider: not among the keys its module registers (no module files to scan: "
                         "exact list of Debian's kernels)")
        else:
            lines.append("no known provider: not in this kernel's module files, built-in keys or the curated table")
        if p.suggestion:
            lines.append(f"did you mean {p.suggestion}?")
    scope = _scope(p)
    if scope and p.kind is not ProviderKind.UNKNOWN:
        lines.append(scope)
    if p.note:
        lines.append(p.note)
    if index is not None and p.module:
        black = getattr(index, "blacklisted")(p.module)
        if black:
            lines.append(f"blacklisted at {black} (stops alias autoloading only; dependencies still load it)")
        inst = getattr(index, "install_command")(p.module)
        if inst:
            lines.append(f"modprobe runs '{inst[0]}' instead of loading it ({inst[1]})")
    lines.append(f"evidence: {p.evidence}")
    return lines
