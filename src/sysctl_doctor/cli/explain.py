"""`sysctl-doctor explain KEY|CODE`: everything known about one key, or one finding code.

`explain KEY` prints a list of sections; each section is produced by one function in
`KEY_SECTIONS` from the same analysis (`ExplainContext`: the key, one `Analysis` built once per run, and
the findings over it), and returns an `ExplainSection` (or None to stay silent). Finding codes (``SD``/``CT`` + 3 digits, e.g. SD101, CT001) go to `CODE_HANDLERS`: each
takes the code and returns an `ExplainSection`, or None when it does not know the code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional

import click

from sysctl_doctor.cli.show import key_tree_for_cli, printable, root_options

if TYPE_CHECKING:  # pragma: no cover
    from sysctl_doctor.analysis import Analysis
    from sysctl_doctor.config.key_story import KeyStory
    from sysctl_doctor.findings.engine import CheckReport

CODE_PATTERN = re.compile(r"^(SD|CT)\d{3}$", re.IGNORECASE)


@dataclass
class ExplainContext:
    key: str  # as typed
    analysis: "Analysis"  # built once for every section

    @cached_property
    def report(self) -> "CheckReport":
        """The finding rules over the same analysis."""
        from sysctl_doctor.findings.engine import report_for

        return report_for(self.analysis)

    @cached_property
    def story(self) -> "KeyStory":
        """Every line that sets the key, which wins and why."""
        from sysctl_doctor.config.key_story import key_story

        a = self.analysis
        return key_story(a.config, self.key, a.key_tree, a.root, a.index.aliases())


@dataclass
class ExplainSection:
    title: str
    lines: List[str]  # plain text, one per line (rendered indented under the title)
    data: Dict[str, Any] = field(default_factory=dict)  # the same, for --format json


SectionFunction = Callable[[ExplainContext], Optional[ExplainSection]]
CodeHandler = Callable[[str], Optional[ExplainSection]]


def config_section(ctx: ExplainContext) -> ExplainSection:
    """Every line that sets the key, in apply order; which wins and why."""
    from sysctl_doctor.config.key_story import WINS

    story, config = ctx.story, ctx.analysis.config
    lines = [printable(story.summary), ""]
    if story.lines:
        never = any(ln.verdict == "not applied" for ln in story.lines)
        lines.append("Lines that set it, in apply order" + ("; then lines in files never read:" if never else ":"))
    for ln in story.lines:
        mark = "=>" if ln.verdict == WINS else "  "
        what = f"-{ln.key}" if ln.value is None else f"{'-' if ln.ignore_failure else ''}{ln.key} = {ln.value}"
        lines.append(f"{mark} {ln.origin.file}:{ln.origin.line}  {printable(what)}")
        lines.append(f"     {ln.verdict}: {printable(ln.reason)}")
    if ctx.analysis.key_tree is None:
        lines.append("")
        lines.append("(no key tree: pass --proc-sys DIR to check that the key exists and expand globs)")
    elif story.exists is False:
        lines.append("")
        lines.append(f"The key does not exist under {ctx.analysis.key_tree_dir}: a write fails"
                     + (" with 'Couldn't write …, ignoring'" if config.flavor == "systemd" else " silently"))
    lines.append("")
    lines.append(_rules(config.flavor))
    return ExplainSection(
        title=f"{story.key} in sysctl.d ({config.flavor})",
        lines=lines,
        data={
            "key": printable(story.key),
            "flavor": story.flavor,
            "summary": printable(story.summary),
            "value": None if story.final_value is None else printable(story.final_value),
            "exists": story.exists,
            "winner": None if story.winner is None else {"file": story.winner.origin.file,
                                                         "line": story.winner.origin.line},
            "lines": [{"file": ln.origin.file, "line": ln.origin.line, "key": printable(ln.key),
                       "value": None if ln.value is None else printable(ln.value), "glob": ln.is_glob,
                       "verdict": ln.verdict, "reason": printable(ln.reason)} for ln in story.lines],
        },
    )


def _rules(flavor: str) -> str:
    if flavor == "systemd":
        return ("Rules (systemd-sysctl): files in /etc, /run, /usr/local/lib, /usr/lib sysctl.d; the same file name "
                "in an earlier directory wins (a /dev/null link masks); files apply sorted by name; one value per "
                "key: a later line for a key replaces it; a glob never writes a key that has its own line or "
                "'-key'; /etc/sysctl.conf is read only through the 99-sysctl.conf link.")
    return ("Rules (procps sysctl --system): files in /etc, /run, /usr/local/lib, /usr/lib, /lib sysctl.d; the "
            "first directory with a file name wins; files apply sorted by name, then /etc/sysctl.conf last; every "
            "line is written in order (the last write wins); a glob skips keys named by any line.")


def provider_section(ctx: ExplainContext) -> Optional[ExplainSection]:
    """Who makes the key exist in the kernel the root boots (sysctl_doctor.kernel)."""
    import dataclasses

    from sysctl_doctor.config.model import path_to_key
    from sysctl_doctor.kernel import describe_provider

    if any(c in ctx.key for c in "*?["):
        return None  # a glob has no single provider
    value = ctx.story.final_value
    index = ctx.analysis.index
    provider = index.provider(ctx.key, value)
    lines = describe_provider(provider, index)
    default = _default_line(provider.key, index)
    if default:
        lines.append(default)
    exact = index.exact_keys() if hasattr(index, "exact_keys") else None
    others = sorted(path_to_key(k) for k in exact.alias_group(provider.key) if k != provider.key) if exact else []
    if others:
        lines.append(f"the same kernel variable as {', '.join(others)}: the last write through any name wins")
    if index.partial:
        lines.append(f"(the index of kernel {index.kernel} is partial: {index.mode}; see `sysctl-doctor index`)")
    data = dataclasses.asdict(provider)
    data.update(kind=provider.kind.value, kernel=index.kernel, index_mode=index.mode, index_partial=index.partial)
    return ExplainSection(title=f"{path_to_key(provider.key)} in kernel {index.kernel}: {provider.kind.value}",
                          lines=lines, data=data)


def _default_line(path: str, index) -> Optional[str]:
    """`default: 60 (a real boot of Debian 6.1.0-56-amd64)`, or how a sized default is computed."""
    from sysctl_doctor.boot.kernel_defaults import default_info, kernel_default

    info = default_info(path, index.kernel)
    if info is not None and info.sized:
        return f"default: computed from RAM/CPUs: {info.formula or 'differs with the machine size'}"
    source = index.exact_keys() if hasattr(index, "exact_keys") else None
    value = kernel_default(path, index.kernel)
    if value is None:
        return None
    where = f"a real boot of Debian {source.kernel}" if source is not None and info is not None else "kernel source"
    return f"default: {value} ({where}; the value when nothing writes it)"


def boot_verdict_text(applied: bool, verdict: str) -> str:
    """`applied`/`race`/... as a phrase for the boot section: "applied by a udev rule [applied-by-udev]"."""
    from sysctl_doctor.boot.model import Verdict

    try:
        known = Verdict(verdict)
    except ValueError:
        return f"{'applied' if applied else 'not applied'} [{verdict}]" if verdict else (
            "applied" if applied else "not applied")
    return known.phrase if known.phrase == known.value else f"{known.phrase} [{known.value}]"


def boot_section(ctx: ExplainContext) -> Optional[ExplainSection]:
    """The key's fate at the next boot (sysctl_doctor.boot): value after boot, the chain, findings."""
    from sysctl_doctor.kernel.model import ProviderKind

    if any(c in ctx.key for c in "*?["):
        return _glob_boot_section(ctx)
    found = ctx.analysis.fate(ctx.key)
    if found is None:
        return _unset_section(ctx)
    report = ctx.report
    shown = "(absent)" if found.boot_value is None else found.boot_value
    later = "(absent)" if found.after_late_load is None else found.after_late_load
    status = f"after boot: {shown}  ({boot_verdict_text(found.applied, found.verdict)})"
    if getattr(found.provider, "kind", None) is ProviderKind.MODULE and found.module:
        status += f"; once {found.module} is loaded: {later}"  # built-in keys have no module to wait for
    lines = [status, ""]
    lines += [f"-> {step}" for step in found.chain]
    for finding in report.findings:
        if found.key == finding.key or found.key in finding.keys:
            lines += ["", f"{finding.severity} {finding.code}: {finding.message}", f"fix: {finding.fix}"]
    return ExplainSection(title=f"{found.key} at the next boot ({report.analysis.init_system})", lines=lines, data={
        "applied": found.applied, "value": found.boot_value, "after_late_load": found.after_late_load,
        "verdict": found.verdict, "chain": found.chain, "findings": report.codes_for(found.key)})


def _unset_section(ctx: ExplainContext) -> Optional[ExplainSection]:
    """A key some line sets that gets no value at boot (every line cancelled or never read): its kernel default."""
    from sysctl_doctor.config.fates import LABELS
    from sysctl_doctor.config.model import key_to_path

    path = key_to_path(ctx.key)
    unset = next((u for u in getattr(ctx.analysis, "unset", ()) if u.path == path), None)
    if unset is None:
        return None
    report = ctx.report
    shown = "(absent)" if unset.boot_value is None else unset.boot_value
    lines = [f"after boot: {shown}  (not set: {LABELS.get(unset.fate, unset.fate)})", ""]
    lines += [f"-> {line.where} {line.key} = {line.value}: {line.fate}: {line.reason}"
              for line in unset.unset.lines if line.value is not None]
    lines.append("-> no other line and no glob sets it: the sysctl step writes nothing, the kernel default stays")
    for finding in report.findings:
        if unset.key == finding.key or unset.key in finding.keys:
            lines += ["", f"{finding.severity} {finding.code}: {finding.message}", f"fix: {finding.fix}"]
    return ExplainSection(title=f"{unset.key} at the next boot ({report.analysis.init_system})", lines=lines, data={
        "applied": False, "value": unset.boot_value, "after_late_load": unset.boot_value, "verdict": "not-set",
        "fate": unset.fate, "chain": lines[2:], "findings": report.codes_for(unset.key)})
def _glob_boot_section(ctx: ExplainContext) -> Optional[ExplainSection]:
    """A glob at the next boot: the keys it is predicted to write (all, default, lo, the interfaces the root's
    network configuration names) and what it cannot know (boot.network)."""
    glob = ctx.analysis.fate(ctx.key)
    if glob is None:
        return None
    line = getattr(glob.setting, "assignment", None)
    concrete = [p for p in ctx.analysis.fates
                if getattr(p.setting, "assignment", None) is line and p.key != glob.key]
    lines = [f"-> {step}" for step in glob.chain]
    if concrete:
        lines += ["", "keys it is predicted to write:"]
        for p in concrete:
            shown = "(absent)" if p.boot_value is None else p.boot_value
            lines.append(f"  {p.key} = {shown}  ({boot_verdict_text(p.applied, p.verdict)})")
    return ExplainSection(title=f"{glob.key} at the next boot ({ctx.report.analysis.init_system})", lines=lines,
                          data={"chain": glob.chain, "keys": {p.key: {"applied": p.applied, "value": p.boot_value,
                                                                      "verdict": p.verdict} for p in concrete}})


# Sections of `explain KEY`, in order. Other branches append theirs (see module docstring).
KEY_SECTIONS: List[SectionFunction] = [config_section, boot_section, provider_section]


def finding_section(code: str) -> Optional[ExplainSection]:
    """A finding rule's documentation (sysctl_doctor.findings), generated from the rule itself."""
    from sysctl_doctor.findings import get_rule, is_code, rule_doc

    if not is_code(code):
        return None
    rule = get_rule(code)
    lines = rule_doc(code).rstrip("\n").splitlines()
    return ExplainSection(title=lines[0], lines=lines[1:], data={
        "code": rule.code, "name": rule.name, "severity": rule.severity, "title": rule.title,
        "rationale": rule.rationale, "fix": rule.fix})


# Handlers for `explain CODE` (SD/CT + 3 digits). Other branches append theirs.
CODE_HANDLERS: List[CodeHandler] = [finding_section]


def explain_key(ctx: ExplainContext) -> List[ExplainSection]:
    sections = []
    for section in KEY_SECTIONS:
        result = section(ctx)
        if result is not None:
            sections.append(result)
    return sections


def explain_code(code: str) -> ExplainSection:
    from sysctl_doctor.errors import DoctorError

    for handler in CODE_HANDLERS:
        result = handler(code)
        if result is not None:
            return result
    raise DoctorError(f"unknown finding code {code}")


def _render(sections: List[ExplainSection]) -> None:
    from sysctl_doctor.cli.styled_lines import emit

    lines: List[list] = []
    for i, s in enumerate(sections):
        if i:
            lines.append([])
        lines.append([(s.title, "bold")])
        for line in s.lines:
            style = "bold" if line.startswith("=>") else None
            lines.append([(f"  {line}" if line else "", style)])
    emit(lines)


@click.command("explain")
@click.argument("subject")
@root_options
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def command(subject: str, root_dir: str, flavor: Optional[str], proc_sys: Optional[str], fmt: str) -> None:
    """Explain a KEY (every line that sets it, which wins and why) or a finding CODE (e.g. SD101)."""
    subject = subject.strip()
    if not subject or "=" in subject:
        raise click.UsageError(f"explain {subject!r}: give a key (net.ipv4.ip_forward) or a finding code (SD101)")
    if CODE_PATTERN.match(subject.upper()):
        subject = subject.upper()
        sections = [explain_code(subject)]
    else:
        from sysctl_doctor.analysis import CheckInputs, build_analysis
        from sysctl_doctor.live import LiveHost
        from sysctl_doctor.root import root_for_cli

        root = root_for_cli(root_dir)
        keys, tree_dir = key_tree_for_cli(root, proc_sys)
        analysis = build_analysis(CheckInputs(root, live=LiveHost() if root.is_live else None, flavor=flavor,
                                              key_tree=keys, key_tree_dir=tree_dir))
        root.raise_if_unreadable()
        sections = explain_key(ExplainContext(subject, analysis))
        root.raise_if_unreadable()
    if fmt == "json":
        from sysctl_doctor.cli.show import dump_json

        dump_json({"subject": subject, "sections": [
            {"title": s.title, "lines": s.lines, "data": s.data} for s in sections]})
    else:
        _render(sections)
