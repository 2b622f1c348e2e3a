"""The boot timeline of a root: which modules are loaded, by whom, relative to the sysctl step.

One timeline per init system, read from the root itself:
- systemd: initramfs lists and ``rd.modules_load=`` (dracut) → systemd-modules-load
  (modules-load.d, /etc/modules via its link, ``modules_load=``) → systemd-sysctl →
  services that load modules on demand, each placed *before*, *after* or in a *race*
  with systemd-sysctl by the ordering its unit files and drop-ins really declare; plus
  udev rules that re-run systemd-sysctl when a module or interface appears;
- sysvinit: the kmod script (/etc/modules, modules-load.d) and procps (``sysctl
  --system``), ordered by their LSB headers;
- OpenRC: the ``modules`` and ``sysctl`` services, ordered by depend() and conf.d.

Every load carries its evidence (file:line and text) and the ordering that places it.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Set

from sysctl_doctor.boot.cmdline import KernelCmdline, read_cmdline
from sysctl_doctor.boot.initramfs import load_initramfs_modules
from sysctl_doctor.boot.initscripts import InitOrder, conf_d_word_lists, load_openrc, load_sysvinit
from sysctl_doctor.boot.loaders import OnDemandLoader, detect_script_loader, find_loaders
from sysctl_doctor.boot.model import AFTER, BEFORE, RACE, BootTimeline, ModuleLoad, ReapplyStep
from sysctl_doctor.boot.modprobe_d import install_commands
from sysctl_doctor.boot.network import NETWORKD_UNIT, network_interfaces
from sysctl_doctor.boot.modules_load import (
    ModuleRequest,
    debian_etc_modules,
    load_modules_load,
    module_name,
)
from sysctl_doctor.boot.tolerant_root import TolerantRoot
from sysctl_doctor.boot.udev import sysctl_command, sysctl_reruns
from sysctl_doctor.boot.units import MODULES_LOAD_UNIT, SYSCTL_UNIT, SystemdUnits
from sysctl_doctor.errors import Diagnostic
from sysctl_doctor.root import PathKind, Root

def detect_init_system(root: Root) -> str:
    """systemd, sysvinit or openrc, from what /sbin/init is and what the root holds."""
    init = root.chase("/sbin/init")
    if init.kind is PathKind.FILE:
        name = init.resolved.rsplit("/", 1)[-1]
        if "systemd" in name:
            return "systemd"
        if "openrc" in name:
            return "openrc"
    if root.kind("/sbin/openrc") is PathKind.FILE or root.kind("/etc/runlevels") is PathKind.DIR:
        return "openrc"
    for path in ("/usr/lib/systemd/system/systemd-sysctl.service", "/lib/systemd/system/systemd-sysctl.service"):
        if root.kind(path) is PathKind.FILE:
            return "systemd"
    if init.kind is PathKind.FILE or root.kind("/etc/inittab") is PathKind.FILE:
        return "sysvinit"
    return "systemd"


def build_timeline(
    root: Root,
    init_system: Optional[str] = None,
    cmdline: Optional[str] = None,
    live_proc_cmdline: Optional[Path] = None,
) -> BootTimeline:
    root = root if isinstance(root, TolerantRoot) else TolerantRoot(root)
    system = init_system or detect_init_system(root)
    kernel_cmdline = read_cmdline(root, cmdline, live_proc_cmdline)
    initramfs = load_initramfs_modules(root)
    if system == "systemd":
        timeline = _systemd(root, kernel_cmdline)
    elif system == "sysvinit":
        timeline = _scripts(root, load_sysvinit(root), "procps", "kmod")
    elif system == "openrc":
        timeline = _scripts(root, load_openrc(root), "sysctl", "modules")
    else:
        raise ValueError(f"unknown init system {system!r}")
    timeline.cmdline = kernel_cmdline
    timeline.initramfs = initramfs
    timeline.diagnostics.extend(initramfs.diagnostics)
    early = [
        ModuleLoad(r.module, "initramfs", BEFORE, r.source, "listed for the initramfs, which loads it before init starts",
                   "the initramfs runs before the real root's init")
        for r in initramfs.loaded
    ]
    for request in kernel_cmdline.module_requests():
        if request.source.startswith("kernel command line rd."):
            if initramfs.builder == "dracut" or system == "systemd" and initramfs.builder is None:
                early.append(ModuleLoad(request.module, "initramfs (rd.modules_load=)", BEFORE, request.source,
                                        "the systemd initrd's systemd-modules-load reads rd.modules_load=",
                                        "the initramfs runs before the real root's init"))
            else:
                timeline.diagnostics.append(Diagnostic(
                    f"rd.modules_load={request.module} is ignored by {initramfs.builder}'s initramfs "
                    "(only a systemd-based initrd reads it)", kernel_cmdline.source or None))
    timeline.loads[:0] = early
    timeline.reruns = sysctl_reruns(root)
    timeline.diagnostics.extend(_runtime_only_notes(root))
    timeline.installs = install_commands(root)
    timeline.diagnostics.extend(Diagnostic(f"skipped: {problem}") for problem in root.problems)
    return timeline


def _runtime_only_notes(root: Root) -> List[Diagnostic]:
    """Files an offline root holds under /run for the boot readers: a tmpfs at boot, so never read."""
    from sysctl_doctor.boot.conf_dirs import runtime_only_files
    from sysctl_doctor.boot.modules_load import MODULES_LOAD_DIRS
    from sysctl_doctor.boot.udev import UDEV_RULES_DIRS
    from sysctl_doctor.boot.units import UNIT_PATH

    notes = []
    for dirs, suffix, what in ((MODULES_LOAD_DIRS, ".conf", "module list"), (UDEV_RULES_DIRS, ".rules", "udev rules"),
                               (UNIT_PATH, "", "unit")):
        for path in runtime_only_files(root, dirs, suffix):
            notes.append(Diagnostic(f"runtime-only {what} file: /run is an empty tmpfs at boot, so the boot never "
                                    "reads it (not used for the prediction)", path))
    return notes


def _chain_text(edges) -> str:
    return "; ".join(edge.because for edge in edges)


def _systemd(root: Root, cmdline: KernelCmdline) -> BootTimeline:
    units = SystemdUnits(root)
    transaction = units.boot_transaction()
    sysctl_unit = units.unit(SYSCTL_UNIT)
    modules_unit = units.unit(MODULES_LOAD_UNIT)
    sysctl_runs = not sysctl_unit.masked and SYSCTL_UNIT in transaction
    if sysctl_unit.masked:
        sysctl_note = f"masked: {sysctl_unit.masked_by}"
    elif not sysctl_runs:
        sysctl_note = "no unit pulls it into the boot (its sysinit.target.wants link is missing)"
    elif sysctl_unit.fragment is None:
        sysctl_note = "no unit file in the root (assumed as shipped by systemd: After=systemd-modules-load.service)"
    else:
        sysctl_note = f"{sysctl_unit.fragment}" + (f" + {', '.join(sysctl_unit.dropins)}" if sysctl_unit.dropins else "")
    timeline = BootTimeline(
        init_system="systemd",
        sysctl_step=SYSCTL_UNIT,
        sysctl_runs=sysctl_runs,
        sysctl_note=sysctl_note,
        modules_step=MODULES_LOAD_UNIT,
        modules_step_relation=BEFORE,
        modules_step_note="",
    )
    # systemd-modules-load and its place against systemd-sysctl
    if modules_unit.masked:
        timeline.modules_step_relation = "masked"
        timeline.modules_step_note = f"masked: {modules_unit.masked_by}"
    elif MODULES_LOAD_UNIT not in transaction:
        timeline.modules_step_relation = "disabled"
        timeline.modules_step_note = "no unit pulls it into the boot (its sysinit.target.wants link is missing)"
    elif sysctl_unit.fragment is None and modules_unit.fragment is None:
        timeline.modules_step_note = "no unit files in the root: systemd's shipped ordering assumed"
    else:
        chain = transaction.order_path(MODULES_LOAD_UNIT, SYSCTL_UNIT)
        if chain is not None:
            timeline.modules_step_note = _chain_text(chain)
        else:
            reverse = transaction.order_path(SYSCTL_UNIT, MODULES_LOAD_UNIT)
            timeline.modules_step_relation = AFTER if reverse is not None else RACE
            timeline.modules_step_note = (
                _chain_text(reverse) if reverse is not None
                else f"no After=/Before= between {MODULES_LOAD_UNIT} and {SYSCTL_UNIT} in "
                     f"{', '.join([p for p in [sysctl_unit.fragment, *sysctl_unit.dropins] if p]) or 'the unit files'}"
            )
    modules_load = load_modules_load(root)
    timeline.modules_load = modules_load
    timeline.diagnostics.extend(modules_load.diagnostics)
    requests: List[ModuleRequest] = list(modules_load.requests)
    requests.extend(r for r in cmdline.module_requests() if not r.source.startswith("kernel command line rd."))
    if timeline.modules_step_relation not in ("masked", "disabled"):
        for request in requests:
            evidence = request.source + (f" (via {request.via})" if request.via else "")
            timeline.loads.append(ModuleLoad(request.module, MODULES_LOAD_UNIT, timeline.modules_step_relation,
                                             evidence, "listed for systemd-modules-load", timeline.modules_step_note))
    # services that load modules on demand
    timeline.loaders = find_loaders(root, transaction, skip=lambda name: name in (SYSCTL_UNIT, MODULES_LOAD_UNIT))
    for loader in timeline.loaders:
        timeline.diagnostics.extend(Diagnostic(failure) for failure in loader.failures)
        chain = transaction.order_path(loader.unit, SYSCTL_UNIT)
        if chain is not None:
            relation, ordering = BEFORE, _chain_text(chain)
        else:
            chain = transaction.order_path(SYSCTL_UNIT, loader.unit)
            if chain is not None:
                relation, ordering = AFTER, _chain_text(chain)
            else:
                relation = RACE
                files = ", ".join(p for p in [loader.unit_file, *transaction.members[loader.unit].dropins] if p)
                ordering = (f"{loader.unit} is started at boot ({transaction.why_member(loader.unit)}) and neither "
                            f"its unit file nor its drop-ins ({files or 'none found'}) order it against {SYSCTL_UNIT}")
        for module, evidence in loader.modules.items():
            timeline.loads.append(ModuleLoad(module, loader.unit, relation, f"{evidence.where} `{evidence.text}`",
                                             evidence.why, ordering))
    timeline.reapply = _reapply_steps(root, transaction, timeline.loaders)
    timeline.service_writes, timeline.unloads = _service_writes(root, transaction)
    timeline.network = network_interfaces(root, networkd_runs=NETWORKD_UNIT in transaction,
                                          ifupdown_runs="networking.service" in transaction)
    return timeline


def _reapply_steps(root: Root, transaction, loaders: List[OnDemandLoader]) -> List[ReapplyStep]:
    """Units that run the sysctl step again (a common workaround), with the loaders they follow."""
    from sysctl_doctor.boot.loaders import _exec_words

    out: List[ReapplyStep] = []
    for name in sorted(transaction.members):
        if name in (SYSCTL_UNIT, MODULES_LOAD_UNIT) or not name.endswith(".service"):
            continue
        unit = transaction.members[name]
        for item in unit.exec_lines("ExecStartPre") + unit.exec_lines("ExecStart") + unit.exec_lines("ExecStartPost"):
            words = _exec_words(item)
            if not words:
                continue
            found = sysctl_command(root, " ".join(words))
            if found is None:
                continue
            after = frozenset(ldr.unit for ldr in loaders if transaction.order_path(ldr.unit, name) is not None)
            out.append(ReapplyStep(name, f"{item.file}:{item.line} {item.key}={item.value}", found[0], found[1], after))
    return out


def _service_writes(root: Root, transaction):
    """Keys the services a boot starts write themselves (dockerd, k3s/rke2, kube-proxy), each placed against
    the sysctl step; services that unload modules on restart (firewalld)."""
    import dataclasses

    from sysctl_doctor.boot.loaders import _exec_words
    from sysctl_doctor.boot.service_writes import firewalld_unload, service_writes

    writes, unloads = [], []
    for name in sorted(transaction.members):
        if name in (SYSCTL_UNIT, MODULES_LOAD_UNIT) or not name.endswith(".service"):
            continue
        unit = transaction.members[name]
        found = []
        for item in unit.exec_lines("ExecStart"):
            if _exec_words(item):
                found += service_writes(root, name, f"{item.file}:{item.line}", f"{item.key}={item.value}")
            words = _exec_words(item)
            if words and words[0].rsplit("/", 1)[-1] == "firewalld":
                unload = firewalld_unload(root, name)
                if unload is not None:
                    unloads.append(unload)
        if not found:
            continue
        if transaction.order_path(name, SYSCTL_UNIT) is not None:
            relation = BEFORE
        elif transaction.order_path(SYSCTL_UNIT, name) is not None:
            relation = AFTER
        else:
            relation = RACE
        writes += [dataclasses.replace(w, relation=relation) for w in found]
    return writes, unloads


def _openrc_conf_modules(root: Root) -> List[ModuleRequest]:
    path = "/etc/conf.d/modules"
    return [ModuleRequest(module_name(word), f"{path}:{number}", path, number)
            for number, _variable, words in conf_d_word_lists(root, path, r"modules(?:_[\w.-]+)?")
            for word in words]


def _scripts(root: Root, order: InitOrder, sysctl_name: str, modules_name: str) -> BootTimeline:
    sysctl_runs = order.enabled(sysctl_name)
    sysctl_script = order.scripts.get(sysctl_name)
    note = sysctl_script.enabled_by if sysctl_runs and sysctl_script else f"/etc/init.d/{sysctl_name} is not started at boot"
    timeline = BootTimeline(
        init_system=order.system,
        sysctl_step=f"{sysctl_name} ({order.system})",
        sysctl_runs=sysctl_runs,
        sysctl_note=f"sysctl --system; {note}",
        modules_step=f"{modules_name} ({order.system})",
        modules_step_relation="disabled",
        modules_step_note=f"/etc/init.d/{modules_name} is not started at boot",
    )
    if order.enabled(modules_name):
        relation = order.relation(modules_name, sysctl_name)
        path = order.order_path(modules_name, sysctl_name) or order.order_path(sysctl_name, modules_name)
        timeline.modules_step_relation = {"before": BEFORE, "after": AFTER}.get(relation, RACE)
        timeline.modules_step_note = "; ".join(path) if path else (
            f"no dependency between {modules_name} and {sysctl_name} in their headers: they may run in parallel")
    modules_load = load_modules_load(root)
    requests = list(modules_load.requests)
    if order.system == "sysvinit":
        seen: Set[str] = {r.module for r in requests}
        requests.extend(r for r in debian_etc_modules(root).requests if r.module not in seen)
    else:
        requests.extend(_openrc_conf_modules(root))
    timeline.modules_load = modules_load
    timeline.diagnostics.extend(modules_load.diagnostics)
    if timeline.modules_step_relation != "disabled":
        for request in requests:
            timeline.loads.append(ModuleLoad(request.module, timeline.modules_step, timeline.modules_step_relation,
                                             request.source, f"listed for the {modules_name} script",
                                             timeline.modules_step_note))
    for name, script in sorted(order.scripts.items()):
        if name in (sysctl_name, modules_name) or script.enabled_by is None:
            continue
        loader = detect_script_loader(root, name, script.file)
        if loader is None:
            continue
        timeline.loaders.append(loader)
        timeline.diagnostics.extend(Diagnostic(failure) for failure in loader.failures)
        relation = order.relation(name, sysctl_name)
        mapped = {"before": BEFORE, "after": AFTER}.get(relation, RACE)
        path = order.order_path(name, sysctl_name) or order.order_path(sysctl_name, name)
        ordering = "; ".join(path) if path else f"no dependency between {name} and {sysctl_name}"
        for module, evidence in loader.modules.items():
            timeline.loads.append(ModuleLoad(module, f"{name} ({order.system})", mapped,
                                             f"{evidence.where} `{evidence.text}`", evidence.why, ordering))
    timeline.network = network_interfaces(root, networkd_runs=order.enabled("systemd-networkd"),
                                          ifupdown_runs=order.enabled("networking"))
    return timeline


