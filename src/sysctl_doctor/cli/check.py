"""`sysctl-doctor check`: predict every configured key's value after the next boot, with coded findings."""

from __future__ import annotations

import sys
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


def run_analysis(root_dir: str, kernel: Optional[str], cmdline: Optional[str], init_system: Optional[str]):
    from sysctl_doctor.findings.engine import run_check
    from sysctl_doctor.live import LiveHost
    from sysctl_doctor.root import root_for_cli

    root = root_for_cli(root_dir)
    live = LiveHost() if root.is_live else None
    report = run_check(root, live=live, kernel=kernel, cmdline=cmdline, init_system=init_system)
    root.raise_if_unreadable()  # a directory it could not read is not a missing one: exit 2, no answer
    return report


@click.command("check")
@root_options
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("-v", "--verbose", is_flag=True, help="Explain every key, not only the ones at risk.")
def command(root_dir: str, kernel: Optional[str], cmdline: Optional[str], init_system: Optional[str], fmt: str,
            verbose: bool) -> None:
    """Predict what each configured sysctl will be after the next boot, and why.

    Exit status: 0 nothing at error level, 1 findings at error level, 2 usage or I/O error.
    """
    from sysctl_doctor.cli import EXIT_FINDINGS, EXIT_OK

    report = run_analysis(root_dir, kernel, cmdline, init_system)
    if fmt == "json":
        from sysctl_doctor.report.json_report import render_check_json

        sys.stdout.write(render_check_json(report))
    else:
        from rich.console import Console

        from sysctl_doctor.report.text_report import render_check_text

        tty = sys.stdout.isatty()
        console = Console(highlight=False, width=None if tty else 120, no_color=not tty, soft_wrap=not tty)
        render_check_text(report, console, verbose=verbose)
    raise click.exceptions.Exit(EXIT_FINDINGS if report.has_errors else EXIT_OK)
