"""`sysctl-doctor fleet`: the files a fleet's engines use (units, alert rules, NPD monitors), and installing them."""

from __future__ import annotations

import sys
from typing import Optional

import click


@click.group("fleet")
def command() -> None:
    """Files for Prometheus/node_exporter, systemd and node-problem-detector."""


@command.command("path")
def path_command() -> None:
    """Print the directory holding the shipped fleet files (units, alert rules, NPD monitor configs)."""
    from sysctl_doctor.fleet.shipped import shipped_dir

    click.echo(shipped_dir())


@command.command("show")
@click.argument("name")
def show_command(name: str) -> None:
    """Print one shipped file (e.g. sysctl-doctor.rules.yml, npd-custom-plugin-monitor.json)."""
    from sysctl_doctor.fleet.shipped import shipped_text

    sys.stdout.write(shipped_text(name))


@command.command("install-units")
@click.option("--root", "root_dir", default="/", show_default=True, type=click.Path(file_okay=False),
              help="The root to install into: / (this host) or an image directory.")
@click.option("--textfile-dir", default=None, help="node_exporter's textfile directory "
              "(default: /var/lib/prometheus/node-exporter, Debian's).")
@click.option("--binary", default=None, help="The sysctl-doctor the service runs (default: this one).")
@click.option("--dry-run", is_flag=True, help="Print what would be written, write nothing.")
def install_units_command(root_dir: str, textfile_dir: Optional[str], binary: Optional[str], dry_run: bool) -> None:
    """Install the hardened oneshot service and its 15-minute timer into ROOT/etc/systemd/system.

    Then: systemctl daemon-reload && systemctl enable --now sysctl-doctor-textfile.timer
    """
    from sysctl_doctor.fix.apply import write_atomic
    from sysctl_doctor.fleet.shipped import DEFAULT_TEXTFILE_DIR, default_binary, install_plan
    from sysctl_doctor.root import Root

    plan = install_plan(binary or default_binary(), textfile_dir or DEFAULT_TEXTFILE_DIR)
    root = Root(root_dir)
    for inside, data in plan:
        if dry_run:
            click.echo(f"would write {inside}:")
            sys.stdout.write(data.decode())
            continue
        write_atomic(root, inside, data)
        click.echo(f"wrote {inside}")
    if not dry_run:
        click.echo("next: systemctl daemon-reload && systemctl enable --now sysctl-doctor-textfile.timer")
