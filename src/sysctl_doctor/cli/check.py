"""`sysctl-doctor check`: predict every configured key's value after the next boot, with coded findings."""

from __future__ import annotations

import re
import sys
import time
from typing import Optional

import click

INIT_CHOICES = ("systemd", "sysvinit", "openrc")


def kernel_release(_ctx: click.Context, _param: click.Parameter, value: Optional[str]) -> Optional[str]:
    """--kernel names a directory under /lib/modules: one plain path component ("6.1.0-56-amd64")."""
    if value is None:
        return None
    if value in ("", ".", "..") or "/" in value or not value.isprintable() or value != value.strip():
        raise click.BadParameter(f"{value!r} is not a kernel release (a directory name under /lib/modules, "
                                 "e.g. 6.1.0-56-amd64)")
    return value


def root_options(func):
    func = click.option("--root", "root_dir", default="/", show_default=True, type=click.Path(file_okay=False),
                        help="The root to read: / (this host) or an image directory.")(func)
    func = click.option("--kernel", default=None, callback=kernel_release,
                        help="Kernel build to predict for (default: running / newest in the root).")(func)
    func = click.option("--cmdline", default=None, help="Kernel command line to assume (default: /etc/kernel/cmdline, /etc/default/grub, /proc/cmdline).")(func)
    func = click.option("--init", "init_system", type=click.Choice(INIT_CHOICES), default=None,
                        help="Init system (default: detected from the root).")(func)
    return func


def run_analysis(root_dir: str, kernel: Optional[str], cmdline: Optional[str], init_system: Optional[str],
                 live_mount: bool = False):
    from sysctl_doctor.findings.engine import run_check
    from sysctl_doctor.live import LiveHost
    from sysctl_doctor.root import root_for_cli

    root = root_for_cli(root_dir, live=live_mount)
    live = LiveHost() if root.is_live else None
    report = run_check(root, live=live, kernel=kernel, cmdline=cmdline, init_system=init_system)
    root.raise_if_unreadable()  # a directory it could not read is not a missing one: exit 2, no answer
    return report


FORMATS = ("text", "json", "prometheus", "npd", "sarif")


@click.command("check")
@root_options
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True,
              help="text, json (the contract), prometheus (node_exporter textfile), npd "
                   "(node-problem-detector plugin line), sarif (SARIF 2.1.0 for code scanning).")
@click.option("-v", "--verbose", is_flag=True, help="Explain every key, not only the ones at risk.")
@click.option("--textfile-dir", default=None, type=click.Path(file_okay=False),
              help="With --format prometheus: write DIR/sysctl_doctor.prom atomically (node_exporter's "
                   "textfile collector) instead of stdout; a failed run still writes last_run_success 0.")
@click.option("--live", "live_mount", is_flag=True,
              help="The --root DIR is this running host's / mounted elsewhere (a container with the node's / "
                   "at /host): read live values, drift, the running kernel and rules from this /proc.")
@click.option("--sarif-srcroot", default=None, type=click.Path(file_okay=False),
              help="With --format sarif: the repository the root lives in; result paths are made relative to it.")
@click.option("--sarif-help-uri", default=None, metavar="URL",
              help="With --format sarif: the absolute URL of docs/findings.md in your copy of the repository; "
                   "each rule's helpUri is URL#<code>.")
def command(root_dir: str, kernel: Optional[str], cmdline: Optional[str], init_system: Optional[str], fmt: str,
            verbose: bool, textfile_dir: Optional[str], sarif_srcroot: Optional[str],
            sarif_help_uri: Optional[str], live_mount: bool) -> None:
    """Predict what each configured sysctl will be after the next boot, and why.

    Exit status: 0 nothing at error level, 1 findings at error level, 2 usage or I/O error
    (with --format npd, node-problem-detector reads 0 OK, 1 problem, 2 unknown).
    """
    from sysctl_doctor.cli.exit_codes import EXIT_FINDINGS, EXIT_OK
    from sysctl_doctor.errors import DoctorError

    if textfile_dir is not None and fmt != "prometheus":
        raise click.UsageError("--textfile-dir goes with --format prometheus")
    if (sarif_srcroot is not None or sarif_help_uri is not None) and fmt != "sarif":
        raise click.UsageError("--sarif-srcroot and --sarif-help-uri go with --format sarif")
    if sarif_help_uri is not None and not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://\S+$", sarif_help_uri):
        raise click.BadParameter("an absolute URL (https://…/docs/findings.md)", param_hint="--sarif-help-uri")
    started, clock = time.time(), time.monotonic()
    try:
        report = run_analysis(root_dir, kernel, cmdline, init_system, live_mount)
    except DoctorError as exc:
        if fmt == "prometheus":  # a failing check is a series too, or the fleet reads silence as clean
            from sysctl_doctor import __version__
            from sysctl_doctor.report.prometheus import failure_text

            _emit_prometheus(failure_text(__version__, started, time.monotonic() - clock), textfile_dir)
        elif fmt == "npd":
            from sysctl_doctor.report.npd import cut

            sys.stdout.write(cut(f"unknown: {exc}") + "\n")
        raise
    if fmt == "json":
        from sysctl_doctor.report.json_report import render_check_json

        sys.stdout.write(render_check_json(report))
    elif fmt == "prometheus":
        from sysctl_doctor import __version__
        from sysctl_doctor.findings.registry import all_rules
        from sysctl_doctor.report.prometheus import check_metrics, render

        metrics = check_metrics(report, all_rules(), __version__, started, time.monotonic() - clock)
        _emit_prometheus(render(metrics), textfile_dir)
    elif fmt == "npd":
        from sysctl_doctor.report.npd import summary

        status, line = summary(report)
        sys.stdout.write(line + "\n")
        raise click.exceptions.Exit(status)
    elif fmt == "sarif":
        from sysctl_doctor import __version__
        from sysctl_doctor.findings.registry import all_rules
        from sysctl_doctor.report.json_report import json_text
        from sysctl_doctor.report.sarif import to_sarif

        doc = to_sarif(report, all_rules(), __version__, root_dir, sarif_srcroot, sarif_help_uri)
        sys.stdout.write(json_text(doc, indent=2) + "\n")
    else:
        from sysctl_doctor.cli.console import report_console
        from sysctl_doctor.report.text_report import render_check_text

        render_check_text(report, report_console(piped_width=120), verbose=verbose)
    raise click.exceptions.Exit(EXIT_FINDINGS if report.has_errors else EXIT_OK)


def _emit_prometheus(text: str, textfile_dir: Optional[str]) -> None:
    if textfile_dir is None:
        sys.stdout.write(text)
        return
    from sysctl_doctor.fleet.textfile import write_textfile

    write_textfile(textfile_dir, text)
