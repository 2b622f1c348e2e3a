"""`sysctl-doctor conntrack …`: which packets conntrack treats as INVALID, and why."""

from __future__ import annotations

import click


@click.group("conntrack")
def command() -> None:
    """Find and explain conntrack INVALID packets: replay, logs, stats, debug."""


def _register() -> None:
    # One import per subcommand module; each defines `command`.
    from sysctl_doctor.cli import conntrack_debug, conntrack_logs, conntrack_replay, conntrack_stats

    subcommands: tuple = (conntrack_replay, conntrack_logs, conntrack_stats, conntrack_debug)
    for module in subcommands:
        command.add_command(module.command)


_register()
