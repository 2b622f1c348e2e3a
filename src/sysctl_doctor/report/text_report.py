"""`check` as text: a table of configured keys, then findings with fixes, then the boot timeline."""

from __future__ import annotations

from typing import TYPE_CHECKING, List, Optional, Tuple

from sysctl_doctor.boot.model import Verdict
from sysctl_doctor.findings.model import ERROR, INFO, WARNING
from sysctl_doctor.terminal_text import terminal_safe

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console
    from rich.table import Table

_SEVERITY_STYLE = {ERROR: "bold red", WARNING: "yellow", INFO: "cyan"}


def _value(value) -> str:
    return "(absent)" if value is None else str(value)


# Above this many keys the table is drawn plain (aligned columns, no borders): rich's Table costs
# ~0.4 ms a row (20,000 keys: 7 s), the plain one ~2 us. The README's examples stay rich.
RICH_TABLE_MAX_ROWS = 500
_COLUMNS = ("key", "configured", "provider", "after boot", "verdict")
Segment = Tuple[str, Optional[str]]


def _rows(report) -> List[Tuple[List[str], str]]:  # type: ignore[no-untyped-def]
    """Cells (printable text) and verdict style of each key's row."""
    rows = []
    for p in report.fates:
        kind = getattr(getattr(p.provider, "kind", None), "value", "unknown")
        provider = f"{kind}:{p.module}" if p.module else kind
        label, style = (p.verdict.label, p.verdict.style) if isinstance(p.verdict, Verdict) else (p.verdict, "")
        boot = _value(p.boot_value)
        if p.after_late_load != p.boot_value:
            boot += f" (later: {_value(p.after_late_load)})"
        if p.live is not None:
            boot += f" [live {p.live}]"
        rows.append(([terminal_safe(x) for x in (p.key, p.configured, provider, boot, label)], style))
    from sysctl_doctor.config.fates import LABELS

    for u in getattr(report.analysis, "unset", ()):  # set only by lines that never apply
        kind = getattr(getattr(u.provider, "kind", None), "value", "unknown")
        provider = f"{kind}:{u.provider.module}" if getattr(u.provider, "module", None) else kind
        boot = _value(u.boot_value) + (f" [live {u.live}]" if u.live is not None else "")
        label = f"NOT SET ({LABELS.get(u.fate, u.fate)})"
        rows.append(([terminal_safe(x) for x in (u.key, u.configured or "", provider, boot, label)], "red"))
    return rows


def _assignment_lines(analysis, verbose: bool) -> List[List[Segment]]:  # type: ignore[no-untyped-def]
    """The lines of the sysctl files with their fates, in apply order, then the files never read. The lines
    that apply are the table's rows: listed with -v, counted otherwise (the JSON lists every line)."""
    from sysctl_doctor.config.fates import APPLIED, EXCLUDES, INVALID, REPEAT

    every = list(getattr(analysis, "lines", ()))
    lines = every if verbose else [f for f in every if f.fate != APPLIED]
    if not lines:
        return []
    hidden = len(every) - len(lines)
    note = (" (every line of every sysctl file, in apply order, then files never read"
            + (f"; the {hidden} that apply are the table's rows, -v lists them)" if hidden else ")"))
    out: List[List[Segment]] = [[], [("Assignments", "bold"), (note, None)]]
    styles = {APPLIED: "green", REPEAT: None, EXCLUDES: "cyan", INVALID: "yellow"}
    for f in lines:
        if f.key is None:
            what = f.text
        elif f.value is None:
            what = f"-{f.key}"
        else:
            what = f"{f.key} = {f.value}"
        reason = f.reason
        out.append([(f"  {terminal_safe(f.where)}  {terminal_safe(what)}  ", None),
                    (f.fate, styles.get(f.fate, "red")), (f": {terminal_safe(reason)}", None)])
    return out


def _rich_table(rows: List[Tuple[List[str], str]]) -> "Table":
    from rich.table import Table
    from rich.text import Text

    table = Table(show_lines=False, pad_edge=False)
    for name in _COLUMNS:
        table.add_column(name, overflow="fold")
    for cells, style in rows:
        table.add_row(*(Text(c) for c in cells[:4]), Text(cells[4], style=style or ""))
    return table


def _box_table(rows: List[Tuple[List[str], str]], width: int) -> Optional[str]:
    """The table as rich draws it for output that is not a terminal (box HEAVY_HEAD, no padding at the
    edges, no styles), without rich: importing rich is ~20 ms of a `check` that must take 0.15 s. None where
    only rich knows the layout: a cell not plain printable ASCII (its width is rich's to measure), or a
    table wider than `width` (rich folds cells). tests/cli/test_box_table.py holds it to rich's own output."""
    table = [list(_COLUMNS)] + [cells[:5] for cells, _ in rows]
    for row in table:
        for cell in row:
            if not cell.isascii() or not cell.isprintable():
                return None
    widths = [max(len(row[i]) for row in table) for i in range(len(_COLUMNS))]
    last = len(widths) - 1
    spans = [w + (0 if i in (0, last) else 1) + 1 for i, w in enumerate(widths)]  # no padding at the edges
    if sum(spans) + len(spans) + 1 > width:
        return None

    def line(cells: List[str], left: str, mid: str, right: str) -> str:
        padded = [(" " if i else "") + c.ljust(w) + (" " if i < last else "") for i, (c, w) in enumerate(zip(cells, widths))]
        return left + mid.join(padded) + right

    out = ["┏" + "┳".join("━" * s for s in spans) + "┓", line(table[0], "┃", "┃", "┃"),
           "┡" + "╇".join("━" * s for s in spans) + "┩"]
    out += [line(row, "│", "│", "│") for row in table[1:]]
    out.append("└" + "┴".join("─" * s for s in spans) + "┘")
    return "\n".join(out) + "\n"


def _plain_table(rows: List[Tuple[List[str], str]]) -> List[List[Segment]]:
    """The table as aligned text lines: linear in the rows, cheap per row."""
    widths = [min(60, max([len(name)] + [len(cells[i]) for cells, _ in rows])) for i, name in enumerate(_COLUMNS)]
    out: List[List[Segment]] = [[("  ".join(n.ljust(w) for n, w in zip(_COLUMNS, widths)).rstrip(), "bold")],
                                [("  ".join("-" * w for w in widths), None)]]
    for cells, style in rows:
        out.append([("  ".join(c.ljust(w) for c, w in zip(cells[:4], widths)) + "  ", None), (cells[4], style or None)])
    return out


def _emit(console: "Console", lines: List[List[Segment]], soft_wrap: bool = False) -> None:
    """Styled lines in one write: one rich Text on a terminal (no markup parsing), plain text when piped."""
    if not console.is_terminal:
        console.file.write("".join("".join(t for t, _ in line) + "\n" for line in lines))
        return
    from rich.text import Text

    text = Text()
    for line in lines:
        for chunk, style in line:
            text.append(chunk, style=style or "")
        text.append("\n")
    console.print(text, end="", soft_wrap=soft_wrap)


def render_check_text(report, console: "Console", verbose: bool = False) -> None:
    analysis = report.analysis
    timeline = analysis.timeline
    rows = _rows(report)
    head: List[List[Segment]] = [[("sysctl-doctor check", "bold"), (
        f" {terminal_safe(str(analysis.root.path))}: init {analysis.init_system}, "
        f"sysctl flavour {analysis.flavor}, kernel {terminal_safe(str(analysis.kernel))}", None)]]
    if len(rows) > RICH_TABLE_MAX_ROWS:
        _emit(console, head + _plain_table(rows), soft_wrap=True)  # table rows are not word-wrapped
    else:
        _emit(console, head)
        drawn = None if console.is_terminal else _box_table(rows, console.width)
        if drawn is not None:
            console.file.write(drawn)
        else:
            console.print(_rich_table(rows))
    lines: List[List[Segment]] = _assignment_lines(analysis, verbose)
    say = lines.append
    explained = [p for p in report.fates if verbose or not p.applied]
    if explained:
        say([])
        say([("Why", "bold")])
        for p in explained:
            say([(f"  {terminal_safe(p.key)}:", None)])
            for step in p.chain:
                say([(f"    → {terminal_safe(step)}", None)])
    if report.findings:
        say([])
        say([("Findings", "bold")])
        shown_fixes = set()
        for f in report.findings:
            where = f" {f.where()}" if f.where() and f.where() not in f.message else ""
            say([("  ", None), (f"{f.severity} {f.code}", _SEVERITY_STYLE.get(f.severity) or None),
                 (f"{terminal_safe(where)}: {terminal_safe(f.message)}", None)])
            if (f.code, f.fix) in shown_fixes:
                continue
            shown_fixes.add((f.code, f.fix))
            say([(f"    fix: {terminal_safe(f.fix)}", None)])
    say([])
    say([("Boot timeline", "bold")])
    for event in timeline.events():
        say([(f"  • {terminal_safe(event)}", None)])
    if analysis.diagnostics:
        say([])
        say([("Notes", "bold")])
        for d in analysis.diagnostics:
            say([(f"  {terminal_safe(str(d))}", None)])
    errors = sum(1 for f in report.findings if f.severity == ERROR)
    warnings = sum(1 for f in report.findings if f.severity == WARNING)
    not_applied = sum(1 for p in report.fates if not p.applied)
    unset = len(getattr(analysis, "unset", ()))
    never = f", {unset} set only by lines that never apply" if unset else ""
    say([])
    say([(f"{len(report.fates)} keys, {not_applied} not guaranteed after boot{never}; "
          f"{errors} errors, {warnings} warnings", None)])
    _emit(console, lines)
