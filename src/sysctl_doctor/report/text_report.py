"""`check` as text: a table of configured keys, then findings with fixes, then the boot timeline."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape as _rich_escape
from rich.table import Table

from sysctl_doctor.boot.model import Verdict
from sysctl_doctor.findings.model import ERROR, INFO, WARNING
from sysctl_doctor.terminal_text import terminal_safe

_SEVERITY_STYLE = {ERROR: "bold red", WARNING: "yellow", INFO: "cyan"}


def escape(text: str) -> str:
    """Terminal-safe (control characters and undecodable bytes escaped), then rich markup escaped."""
    return _rich_escape(terminal_safe(str(text)))


def _value(value) -> str:
    return "(absent)" if value is None else str(value)


def render_check_text(report, console: Console, verbose: bool = False) -> None:
    analysis = report.analysis
    timeline = analysis.timeline
    console.print(
        f"[bold]sysctl-doctor check[/bold] {escape(str(analysis.root.path))}: init {analysis.init_system}, "
        f"sysctl flavour {analysis.flavor}, kernel {escape(str(analysis.kernel))}"
    )
    table = Table(show_lines=False, pad_edge=False)
    table.add_column("key", overflow="fold")
    table.add_column("configured", overflow="fold")
    table.add_column("provider", overflow="fold")
    table.add_column("after boot", overflow="fold")
    table.add_column("verdict", overflow="fold")
    for p in report.predictions:
        kind = getattr(getattr(p.provider, "kind", None), "value", "unknown")
        provider = f"{kind}:{p.module}" if p.module else kind
        label, style = (p.verdict.label, p.verdict.style) if isinstance(p.verdict, Verdict) else (p.verdict, "")
        boot = _value(p.boot_value)
        if p.after_late_load != p.boot_value:
            boot += f" (later: {_value(p.after_late_load)})"
        if p.live is not None:
            boot += f" [live {p.live}]"
        table.add_row(escape(p.key), escape(p.configured), escape(provider), escape(boot), f"[{style}]{escape(label)}[/]")
    console.print(table)
    explained = [p for p in report.predictions if verbose or not p.applied]
    if explained:
        console.print("\n[bold]Why[/bold]")
        for p in explained:
            console.print(f"  {escape(p.key)}:")
            for step in p.chain:
                console.print(f"    → {escape(step)}")
    if report.findings:
        console.print("\n[bold]Findings[/bold]")
        shown_fixes = set()
        for f in report.findings:
            where = f" {f.where()}" if f.where() and f.where() not in f.message else ""
            console.print(f"  [{_SEVERITY_STYLE.get(f.severity, '')}]{f.severity} {f.code}[/]{escape(where)}: {escape(f.message)}")
            if (f.code, f.fix) in shown_fixes:
                continue
            shown_fixes.add((f.code, f.fix))
            console.print(f"    fix: {escape(f.fix)}")
    console.print("\n[bold]Boot timeline[/bold]")
    for event in timeline.events():
        console.print(f"  • {escape(event)}")
    if analysis.diagnostics:
        console.print("\n[bold]Notes[/bold]")
        for d in analysis.diagnostics:
            console.print(f"  {escape(str(d))}")
    errors = sum(1 for f in report.findings if f.severity == ERROR)
    warnings = sum(1 for f in report.findings if f.severity == WARNING)
    not_applied = sum(1 for p in report.predictions if not p.applied)
    console.print(
        f"\n{len(report.predictions)} keys, {not_applied} not guaranteed after boot; "
        f"{errors} errors, {warnings} warnings"
    )
