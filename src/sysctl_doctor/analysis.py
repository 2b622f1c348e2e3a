"""One analysis per command: CheckInputs -> build_analysis() -> a frozen, typed Analysis.

Data flows one way: Root -> config (sysctl.d as systemd-sysctl or procps read it) -> kernel (which provider
makes each key exist) -> boot (the timeline and each key's fate) -> NAT facts. `check`, `explain`, `fix` and
every finding rule read the same Analysis; nothing downstream changes it (the rules' findings live in the
CheckReport, not in the predictions).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional

from sysctl_doctor.boot.model import Verdict
from sysctl_doctor.boot.model import BootTimeline, KeyFate
from sysctl_doctor.boot.predict import predict_keys
from sysctl_doctor.boot.timeline import build_timeline, detect_init_system
from sysctl_doctor.config.fates import LineFate, UnsetKey
from sysctl_doctor.config.model import KeyTree, SysctlConfig
from sysctl_doctor.config.sysctl_d import EffectiveSetting
from sysctl_doctor.conntrack.nat_facts import HostNat
from sysctl_doctor.errors import Diagnostic, DoctorError
from sysctl_doctor.kernel.index import ModuleIndex
from sysctl_doctor.live import LiveHost
from sysctl_doctor.root import Root


@dataclass(frozen=True)
class CheckInputs:
    """What a command asks about: the root and what to assume where the root does not say."""

    root: Root
    live: Optional[LiveHost] = None  # the running host's facts (only for the root /)
    kernel: Optional[str] = None  # kernel build to predict for (None: running / newest in the root)
    cmdline: Optional[str] = None
    init_system: Optional[str] = None
    flavor: Optional[str] = None  # "systemd" | "procps" (None: what the root's init uses)
    key_tree: Optional[KeyTree] = None  # keys that exist (None: /proc/sys on the live host, else none)
    key_tree_dir: Optional[str] = None  # where key_tree was read
    live_values: Optional[Mapping[str, str]] = None  # slash key -> value, standing in for /proc/sys
    nat_facts: Optional[Mapping[str, object]] = None  # NatFacts fields check cannot read (kube_proxy, …)


@dataclass(frozen=True)
class UnsetKeyFate:
    """A configured key that gets no value at boot (every line for it cancelled or never read, no glob
    reaching it): it keeps the kernel's default. Rows of `check` beside the KeyFates; SD116 reports them."""

    key: str  # dotted
    path: str
    unset: UnsetKey  # its lines and the decisive one
    provider: object  # kernel.model.KeyProvider
    boot_value: Optional[str]  # the kernel default (UNKNOWN_DEFAULT when not known), None: no such key
    live: Optional[str]

    @property
    def configured(self) -> Optional[str]:
        return self.unset.line.value

    @property
    def fate(self) -> str:
        return self.unset.fate


@dataclass(frozen=True)
class Analysis:
    root: Root
    init_system: str
    flavor: str
    config: SysctlConfig
    settings: List[EffectiveSetting]  # in apply order
    index: ModuleIndex
    timeline: BootTimeline
    fates: List[KeyFate]  # one per configured key, in apply order
    live: bool  # a running host (drift can be measured)
    live_values: Optional[Dict[str, Optional[str]]]
    kernel: str
    key_tree: Optional[KeyTree] = None
    key_tree_dir: Optional[str] = None
    diagnostics: List[Diagnostic] = field(default_factory=list)
    nat: Optional[HostNat] = None  # the NAT facts the CT rules read (None: not gathered)
    lines: List[LineFate] = field(default_factory=list)  # every line of every sysctl file, with its fate
    unset: List[UnsetKeyFate] = field(default_factory=list)  # configured keys that get no value at boot

    def fate(self, key: str) -> Optional[KeyFate]:
        """The fate of one concrete key (dotted or slash form)."""
        from sysctl_doctor.config.model import key_to_path

        path = key_to_path(key)
        return next((p for p in self.fates if p.path == path), None)


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


def _answer_depends_on_initramfs(fates: List[KeyFate]) -> bool:
    """Read the (large) initramfs image only when a module key's fate depends on it."""
    for p in fates:
        if p.verdict.at_risk:
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


def _be_liberal_void(p: Optional[KeyFate]) -> Optional[str]:
    """Why a configured be_liberal=1 does not hold after boot, from the key's own prediction."""
    if p is None or p.configured.strip() == "0" or p.boot_value not in (None, "0"):
        return None
    how = "not guaranteed" if p.verdict is Verdict.RACE_LOST else "not applied"
    code = p.verdict.code or ("SD114" if p.blocked else None)
    see = f"; see {code}" if code else ""
    return f"configured ({p.file}:{p.line}) but {how} at boot ({p.verdict}{see})"


def _host_nat(root: Root, live: Optional[LiveHost], timeline: BootTimeline, fates: List[KeyFate],
              kernel: str,
              live_values: Optional[Dict[str, Optional[str]]], overrides: Optional[Dict[str, object]]):
    """The host's NAT facts for the CT rules: the running rules on `/`, the persisted rulesets offline."""
    import dataclasses
    import os

    from sysctl_doctor.conntrack.nat_facts import facts_of
    from sysctl_doctor.kernel_version import UNKNOWN, version_or_unknown
    from sysctl_doctor.conntrack.nat_facts import HostNat

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
    prediction = next((p for p in fates if p.path == BE_LIBERAL_PATH), None)
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


def _flavor(root: Root, system: str, asked: Optional[str], explicit_init: bool):
    """The sysctl flavour and, when it is not what the root's own sysctl programs suggest, a note saying why.

    The init system decides: systemd boots run systemd-sysctl.service, whatever else the tree holds (a
    config-only tree or a partial image may lack the binary; procps' `sysctl --system` is then not what
    runs at boot, and /etc/sysctl.conf counts only through /etc/sysctl.d/99-sysctl.conf)."""
    from sysctl_doctor.config.sysctl_d import default_flavor, systemd_signs

    if asked is not None:
        return asked, None
    if system != "systemd":
        return "procps", None
    found = default_flavor(root)
    if found == "systemd":
        return "systemd", None
    signs = systemd_signs(root)
    if not signs and not explicit_init:
        return found, None  # no sign of systemd at all: the init system was only a guess
    why = f"--init {system}" if explicit_init else ", ".join(signs[:3])
    return "systemd", Diagnostic(
        f"sysctl flavour systemd although the root has no systemd-sysctl binary or unit: the init system is "
        f"systemd ({why}), and a systemd boot applies sysctl.d with systemd-sysctl (so /etc/sysctl.conf counts "
        f"only through /etc/sysctl.d/99-sysctl.conf, never by itself)")


def config_notes(config: SysctlConfig) -> List[Diagnostic]:
    """The sysctl.d reader's remarks that are not about a line's syntax (SD111 reports those)."""
    from sysctl_doctor.config.sysctl_lines import INVALID_LINE

    return [d for d in config.diagnostics if getattr(d, "kind", None) != INVALID_LINE]


def _globs_at_boot(config: SysctlConfig, settings: List[EffectiveSetting], timeline: BootTimeline,
                   index: ModuleIndex) -> List[EffectiveSetting]:
    """No /proc/sys to expand globs against (an offline root): each glob also writes the interface keys of
    `all`, `default`, `lo` and the interfaces the root's network configuration names (boot.network)."""
    from sysctl_doctor.boot.network import INTERFACE_DIRS, glob_candidates
    from sysctl_doctor.config.sysctl_d import expand_globs_over

    globs = [a for a in config.assignments if a.is_glob]
    if not globs:
        return settings
    known: Dict[str, set] = {}
    for path in index.known_keys():
        for base in INTERFACE_DIRS:
            if path.startswith(base + "/all/") or path.startswith(base + "/default/"):
                known.setdefault(base, set()).add(path.rsplit("/", 1)[1])
    names = timeline.network.names()
    braces = config.flavor == "systemd"
    candidates = {a.path: glob_candidates(a.path, braces, names, known) for a in globs}
    return expand_globs_over(config, settings, candidates)


def build_analysis(inputs: CheckInputs) -> Analysis:
    """Every fact the rules, `check`, `explain` and `fix` read, gathered once: Root -> config -> kernel -> boot."""
    from sysctl_doctor.boot.initrd import timeline_with_image
    from sysctl_doctor.config.sysctl_d import effective_settings, load_sysctl_config

    root, live = inputs.root, inputs.live
    if live is not None and not root.is_live:
        live = None  # live facts describe `/`, never another root
    system = inputs.init_system or detect_init_system(root)
    chosen_flavor, flavor_note = _flavor(root, system, inputs.flavor, explicit_init=inputs.init_system is not None)
    config = load_sysctl_config(root, chosen_flavor, at_boot=True)  # type: ignore[arg-type]
    key_tree, key_tree_dir = inputs.key_tree, inputs.key_tree_dir
    if key_tree is None and live is not None:
        # on the running host globs expand against the keys that exist now (as systemd-sysctl would)
        key_tree, key_tree_dir = KeyTree.from_dir(live.proc_sys), str(live.proc_sys)
    index = _index(root, inputs.kernel, live)
    settings = effective_settings(config, key_tree, aliases=index.aliases())
    timeline = build_timeline(
        root, system, inputs.cmdline, live.proc_sys.parent / "cmdline" if live is not None else None
    )
    if key_tree is None:
        settings = _globs_at_boot(config, settings, timeline, index)
    values: Optional[Dict[str, Optional[str]]] = None
    if inputs.live_values is not None:
        values = dict(inputs.live_values)
    elif live is not None:
        values = {s.path: _read_live(live, s.path) for s in settings}
    fates = predict_keys(settings, index, timeline, values, index.kernel)
    if _answer_depends_on_initramfs(fates):
        refined = timeline_with_image(root, timeline, index.kernel)
        if refined is not timeline:
            timeline = refined
            fates = predict_keys(settings, index, timeline, values, index.kernel)
    lines, unset = _line_fates(config, root, key_tree, settings, index, values, live)  # may note a cap in config
    diagnostics = ([flavor_note] if flavor_note else []) + list(index.diagnostics) + list(timeline.diagnostics)
    diagnostics += config_notes(config)
    nat, nat_diagnostics = _host_nat(root, live, timeline, fates, index.kernel, values, inputs.nat_facts)
    diagnostics += nat_diagnostics
    diagnostics += root.unreadable_file_diagnostics()  # every reader's skipped files, once each
    return Analysis(
        root=root, init_system=system, flavor=chosen_flavor, config=config, settings=settings, index=index,
        timeline=timeline, fates=fates, live=values is not None, live_values=values,
        kernel=index.kernel, key_tree=key_tree, key_tree_dir=key_tree_dir, diagnostics=diagnostics, nat=nat,
        lines=lines, unset=unset,
    )


def _alias_fates(lines, settings):  # type: ignore[no-untyped-def]
    """A line written through one name of a kernel variable that a later line writes through another name
    (an alias, kernel.kernel_keys) is overridden by that line, not applied."""
    import dataclasses

    from sysctl_doctor.config.fates import APPLIED, OVERRIDDEN

    final = {s.path: s for s in settings if s.final}
    beaten = {}
    for s in settings:
        winner = final.get(s.alias_winner or "")
        if winner is not None and not s.assignment.is_glob:
            beaten[s.assignment.origin] = winner
    if not beaten:
        return lines
    out = []
    for f in lines:
        winner = beaten.get(f.origin)
        if winner is not None and f.fate == APPLIED:
            won = winner.assignment.origin
            f = dataclasses.replace(f, fate=OVERRIDDEN, by=won, reason=(
                f"{winner.key} is the same kernel variable, written later at {won.file}:{won.line}: the last "
                "write through either name wins"))
        out.append(f)
    return out


def _line_fates(config: SysctlConfig, root: Root, key_tree: Optional[KeyTree], settings: List[EffectiveSetting],
                index: ModuleIndex, values: Optional[Dict[str, Optional[str]]], live: Optional[LiveHost]):
    """Every line's fate, and the value after boot of each key that no line applies (its kernel default)."""
    from sysctl_doctor.boot.kernel_defaults import UNKNOWN_DEFAULT, kernel_default
    from sysctl_doctor.config.fates import line_fates, unset_keys
    from sysctl_doctor.kernel.model import ProviderKind

    lines = _alias_fates(line_fates(config, root, key_tree, settings if key_tree is not None else None), settings)
    out: List[UnsetKeyFate] = []
    for unset in unset_keys(config, lines, key_tree):
        provider = index.provider(unset.key, unset.line.value or "")
        exists = provider.kind is not ProviderKind.UNKNOWN
        now = None
        if values is not None and unset.path in values:
            now = values[unset.path]
        elif live is not None:
            now = _read_live(live, unset.path)
        out.append(UnsetKeyFate(unset.key, unset.path, unset, provider,
                                (kernel_default(unset.path, index.kernel) or UNKNOWN_DEFAULT) if exists else None, now))
    return lines, out
