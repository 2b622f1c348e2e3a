"""`sysctl-doctor fix`: make module keys survive boot (modules-load.d or a udev rule), atomically."""

from __future__ import annotations

import sys
from typing import Optional

import click

from sysctl_doctor.cli.check import root_options


@click.command("fix")
@root_options
@click.option("--method", type=click.Choice(["modules-load", "udev"]), default="modules-load", show_default=True,
              help="Load the module before the sysctl step, or re-apply its keys when it loads (sysctl.d(5)).")
@click.option("--dry-run", is_flag=True, help="Show the diff, write nothing.")
@click.option("--now", is_flag=True, help="Live host only: also load the modules and set the values now.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="json: the plan (each file's path, before, after), what was written and each key's state after.")
def command(root_dir: str, kernel: Optional[str], cmdline: Optional[str], init_system: Optional[str], method: str,
            dry_run: bool, now: bool, fmt: str) -> None:
    """Plan the edits that make every module key apply at boot, show the diff, then write them.

    Writes are atomic (temporary file, fsync, rename, directory fsync), keep mode and owner, back up
    what they replace under <root>/var/backups/sysctl-doctor/, and never leave the root. A second run
    changes nothing.
    """
    from sysctl_doctor.boot.model import Verdict
    from sysctl_doctor.cli.exit_codes import EXIT_FINDINGS, EXIT_OK
    from sysctl_doctor.cli.check import run_analysis
    from sysctl_doctor.errors import DoctorError
    from sysctl_doctor.fix import apply_now, apply_plan, plan_fix
    from sysctl_doctor.root import root_for_cli

    root = root_for_cli(root_dir)
    if now and not root.is_live:
        raise DoctorError("--now acts on the running host: it needs --root /")
    report = run_analysis(root_dir, kernel, cmdline, init_system)
    plan = plan_fix(root, report, method)
    if fmt == "json":
        _json_run(root, plan, report, dry_run, now, lambda: run_analysis(root_dir, kernel, cmdline, init_system))
    from sysctl_doctor.terminal_text import terminal_safe

    def out(text: str) -> None:  # file names and contents from the root: shown escaped
        click.echo(terminal_safe(text))

    for note in plan.notes:
        out(f"note: {note}")
    pending = [p for p in report.fates if not p.applied and (p.module or p.verdict == Verdict.NOT_RUN)]
    if plan.empty and pending:
        out(f"nothing this method can change, but {len(pending)} key(s) still do not apply at boot:")
    elif plan.empty:
        out("nothing to change: every module key already applies at boot with this method")
    else:
        sys.stdout.write("\n".join(terminal_safe(line, keep="\t") for line in plan.diff().split("\n")))
        if dry_run:
            out("(dry run: nothing written)")
        else:
            for applied in apply_plan(root, plan):
                backup = f" (backup: {applied.backup})" if applied.backup else ""
                out(f"wrote {applied.written}{backup}")
    if now and not dry_run:
        for line in apply_now(plan):
            out(f"now: {line}")
    if dry_run:
        raise click.exceptions.Exit(EXIT_OK)
    after = run_analysis(root_dir, kernel, cmdline, init_system)
    for p in after.fates:
        if (p.module or p.verdict == Verdict.NOT_RUN) and any(p.key == q.key for q in pending):
            state = "applied at boot" if p.applied else (
                f"still not guaranteed ({p.verdict})" if p.verdict in (Verdict.RACE_LOST, Verdict.UDEV_RACE)
                else f"still not applied at boot ({p.verdict})")
            out(f"{p.key}: {state}")
    raise click.exceptions.Exit(EXIT_FINDINGS if after.has_errors else EXIT_OK)


def _json_run(root, plan, report, dry_run: bool, now: bool, analyse) -> None:  # type: ignore[no-untyped-def]
    """`fix --format json`: one JSON document on stdout, the same exit codes as the text form."""
    import json

    from sysctl_doctor.boot.model import Verdict
    from sysctl_doctor.cli.exit_codes import EXIT_FINDINGS, EXIT_OK
    from sysctl_doctor.fix import apply_now, apply_plan

    doc: dict = {
        "method": plan.method,
        "dry_run": dry_run,
        "edits": [{"path": e.path, "before": e.old, "after": e.new, "reason": e.reason} for e in plan.edits],
        "notes": list(plan.notes),
        "written": [],
        "now": [],
        "keys": [],
    }
    code = EXIT_OK
    if not dry_run:
        doc["written"] = [{"path": a.path, "written": a.written, "backup": a.backup} for a in apply_plan(root, plan)]
        if now:
            doc["now"] = list(apply_now(plan))
        after = analyse()
        lost = {q.key for q in report.fates if not q.applied and (q.module or q.verdict == Verdict.NOT_RUN)}
        doc["keys"] = [{"key": p.key, "applied": bool(p.applied), "verdict": p.verdict}
                       for p in after.fates if p.key in lost]
        code = EXIT_FINDINGS if after.has_errors else EXIT_OK
    sys.stdout.write(json.dumps(doc, indent=1) + "\n")
    raise click.exceptions.Exit(code)
