"""The `check` pipeline: Root -> config -> kernel -> boot -> findings, as one plain result.

`analyze()` gathers every fact; `run_check()` adds the coded findings. Nothing here
prints; renderers in `sysctl_doctor.report` only render a `CheckReport`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

from sysctl_doctor.boot.predict import KeyPrediction, predict_keys
from sysctl_doctor.boot.timeline import BootTimeline, build_timeline, detect_init_system
from sysctl_doctor.errors import Diagnostic, DoctorError
from sysctl_doctor.findings.model import ERROR, Finding
from sysctl_doctor.live import LiveHost
from sysctl_doctor.root import Root


@dataclass
class Analysis:
    root: Root
    init_system: str
    flavor: str
    config: object  # sysctl_doctor.config.SysctlConfig
    settings: list  # EffectiveSetting, in apply order
    index: object  # sysctl_doctor.kernel.ModuleIndex
    timeline: BootTimeline
    predictions: List[KeyPrediction]
    live: bool  # a running host (drift can be measured)
    live_values: Optional[Dict[str, Optional[str]]]
    kernel: str
    diagnostics: List[Diagnostic] = field(default_factory=list)
    nat: Optional[object] = None  # sysctl_doctor.findings.nat_advice.HostNat: the NAT facts (CT rules)


@dataclass
class CheckReport:
    analysis: Analysis
    findings: List[Finding]

    @property
    def predictions(self) -> List[KeyPrediction]:
        return self.analysis.predictions

    @property
    def has_errors(self) -> bool:
        return any(f.severity == ERROR for f in self.findings)


def _index(root: Root, kernel: Optional[str], live: Optional[LiveHost]):
    from sysctl_doctor.kernel import available_kernels, load_module_index

    if kernel is None and not (root.is_live and live is not None) and not available_kernels(root):
        # A root without any /lib/modules tree (a container image, a minimal debootstrap):
        # providers come from the kernel helper's curated table only.
        from sysctl_doctor.kernel.build import build_index_data
        from sysctl_doctor.kernel.index import ModuleIndex
        from sysctl_doctor.kernel.modules_tree import read_modprobe_config

        data, _ = build_index_data(root, "unknown", None)
        data.diagnostics.append(Diagnostic(
            f"no kernel modules tree in {root.path}/lib/modules: module providers come from the curated table "
            "(pass --kernel VER for a root that has one)"))
        return ModuleIndex(data, read_modprobe_config(root))
    return load_module_index(root, kernel, live)


_AT_RISK = ("race", "loaded-late", "never-loaded", "udev-race")


def _answer_depends_on_initramfs(predictions: List[KeyPrediction]) -> bool:
    """Read the (large) initramfs image only when a module key's fate depends on it."""
    for p in predictions:
        if p.verdict in _AT_RISK:
            return True
        if p.early and all(load.by.startswith("initramfs") for load in p.early):
            return True
    return False


def _read_live(live: LiveHost, path: str) -> Optional[str]:
    try:
        return (live.proc_sys / path).read_text().strip()
    except OSError:
        return None


BE_LIBERAL_PATH = "net/netfilter/nf_conntrack_tcp_be_liberal"
_SD_CODE_OF_VERDICT = {"race": "SD101", "loaded-late": "SD101", "never-loaded": "SD102", "udev-race": "SD103"}


def _be_liberal_void(p: Optional[KeyPrediction]) -> Optional[str]:
    """Why a configured be_liberal=1 does not hold after boot, from the key's own prediction."""
    if p is None or p.configured.strip() == "0" or p.boot_value not in (None, "0"):
        return None
    how = "not guaranteed" if p.verdict == "race" else "not applied"
    code = _SD_CODE_OF_VERDICT.get(p.verdict) or ("SD114" if p.blocked else None)
    see = f"; see {code}" if code else ""
    return f"configured ({p.file}:{p.line}) but {how} at boot ({p.verdict}{see})"


def _host_nat(root: Root, live: Optional[LiveHost], timeline: BootTimeline, predictions: List[KeyPrediction],
              kernel: str,
              live_values: Optional[Dict[str, Optional[str]]], overrides: Optional[Dict[str, object]]):
    """The host's NAT facts for the CT rules: the running rules on `/`, the persisted rulesets offline."""
    import dataclasses
    import os

    from sysctl_doctor.conntrack.nat_facts import facts_of
    from sysctl_doctor.kernel_version import UNKNOWN, version_or_unknown
    from sysctl_doctor.findings.nat_advice import HostNat

    diagnostics: List[Diagnostic] = []
    be_now: Optional[bool] = None
    if live is not None:
        import subprocess

        from sysctl_doctor.conntrack.nat_facts import read_live_be_liberal, read_live_rules

        try:
            rules = read_live_rules(None)
        except (DoctorError, OSError, subprocess.SubprocessError) as exc:
            return None, [Diagnostic(f"NAT recommendations (CT rules) skipped: cannot read the running rules ({exc})")]
        source = "running rules (nft, iptables-save)"
        be_now = read_live_be_liberal(None)
    else:
        from sysctl_doctor.conntrack.persisted_rules import read_persisted_rules

        persisted = read_persisted_rules(root, [r for loader in timeline.loaders for r in loader.rulesets])
        rules, diagnostics = persisted.rules, list(persisted.diagnostics)
        source = ", ".join(persisted.files) or "no ruleset loaded at boot"
        if live_values and live_values.get(BE_LIBERAL_PATH) is not None:
            be_now = live_values[BE_LIBERAL_PATH] != "0"
    version = version_or_unknown(kernel)
    if version == UNKNOWN and live is not None:
        version = version_or_unknown(os.uname().release)
    prediction = next((p for p in predictions if p.path == BE_LIBERAL_PATH), None)
    after_boot = None if prediction is None else prediction.boot_value not in (None, "0")
    facts = dataclasses.replace(facts_of(rules, version, be_now), be_liberal_after_boot=after_boot,
                                be_liberal_void=_be_liberal_void(prediction))
    if overrides:
        facts = dataclasses.replace(facts, **overrides)
    nat = HostNat(facts, source, [f"{r.where} `{r.text}`" if r.text else r.where for r in rules.snat],
                  [f"{r.where} `{r.text}`" if r.text else r.where for r in rules.dnat], dict(rules.invalid_dropped))
    if nat.does_nat:
        diagnostics.append(Diagnostic(f"NAT facts for the CT rules: {nat.summary()}"))
    return nat, diagnostics


def analyze(
    root: Root,
    live: Optional[LiveHost] = None,
    kernel: Optional[str] = None,
    cmdline: Optional[str] = None,
    init_system: Optional[str] = None,
    flavor: Optional[str] = None,
    live_values: Optional[Dict[str, str]] = None,
    nat_facts: Optional[Dict[str, object]] = None,
) -> Analysis:
    """`nat_facts`: NAT facts check cannot read itself (kube_proxy, logged_reasons), as NatFacts fields."""
    from sysctl_doctor.config.sysctl_d import default_flavor, effective_settings, load_sysctl_config

    if live is not None and not root.is_live:
        live = None  # live facts describe `/`, never another root
    system = init_system or detect_init_system(root)
    chosen_flavor = flavor or ("systemd" if system == "systemd" else "procps")
    if flavor is None and system == "systemd":
        chosen_flavor = default_flavor(root)
    config = load_sysctl_config(root, chosen_flavor)
    key_tree = None
    if live is not None:
        # on the running host globs expand against the keys that exist now (as systemd-sysctl would)
        from sysctl_doctor.config.model import KeyTree

        key_tree = KeyTree.from_dir(live.proc_sys)
    settings = effective_settings(config, key_tree)
    index = _index(root, kernel, live)
    timeline = build_timeline(
        root, system, cmdline, live.proc_sys.parent / "cmdline" if live is not None else None
    )
    values: Optional[Dict[str, Optional[str]]] = None
    if live_values is not None:
        values = dict(live_values)
    elif live is not None:
        values = {s.path: _read_live(live, s.path) for s in settings}
    predictions = predict_keys(settings, index, timeline, values, getattr(index, "kernel", None))
    if _answer_depends_on_initramfs(predictions):
        from sysctl_doctor.boot.initrd import refine_timeline_with_image

        if refine_timeline_with_image(root, timeline, getattr(index, "kernel", None)) is not None:
            predictions = predict_keys(settings, index, timeline, values, getattr(index, "kernel", None))
    diagnostics = list(getattr(index, "diagnostics", [])) + list(timeline.diagnostics)
    nat, nat_diagnostics = _host_nat(root, live, timeline, predictions, getattr(index, "kernel", "unknown"), values,
                                     nat_facts)
    diagnostics += nat_diagnostics
    return Analysis(
        root=root, init_system=system, flavor=chosen_flavor, config=config, settings=settings, index=index,
        timeline=timeline, predictions=predictions, live=values is not None, live_values=values,
        kernel=getattr(index, "kernel", "unknown"), diagnostics=diagnostics, nat=nat,
    )


def run_check(root: Root, **options) -> CheckReport:
    from sysctl_doctor.findings.registry import run_rules

    analysis = analyze(root, **options)
    findings = run_rules(analysis)
    by_key: Dict[str, List[str]] = {}
    for finding in findings:
        if finding.key:
            codes = by_key.setdefault(finding.key, [])
            if finding.code not in codes:
                codes.append(finding.code)
    for prediction in analysis.predictions:
        prediction.findings = by_key.get(prediction.key, [])
    return CheckReport(analysis, findings)


__all__ = ["Analysis", "CheckReport", "DoctorError", "analyze", "run_check"]
