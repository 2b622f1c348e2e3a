"""`sysctl-doctor conntrack …`: which packets conntrack treats as INVALID, and why."""

from __future__ import annotations

import importlib
from typing import List, Optional

import click

# subcommand name -> the module defining its `command`; a module is imported only when its
# subcommand runs (or help lists them all): `conntrack logs` on a 1 M-line log takes ~0.25 s,
# and the other three modules' imports were a tenth of it
SUBCOMMANDS = {
    "replay": "sysctl_doctor.cli.conntrack_replay",
    "logs": "sysctl_doctor.cli.conntrack_logs",
    "stats": "sysctl_doctor.cli.conntrack_stats",
    "debug": "sysctl_doctor.cli.conntrack_debug",
}


class ConntrackGroup(click.Group):
    def get_command(self, ctx: click.Context, cmd_name: str) -> Optional[click.Command]:
        found = self.commands.get(cmd_name)
        if found is None and cmd_name in SUBCOMMANDS:
            found = importlib.import_module(SUBCOMMANDS[cmd_name]).command
            self.add_command(found, cmd_name)
        return found

    def list_commands(self, ctx: click.Context) -> List[str]:
        return sorted(SUBCOMMANDS)


@click.group("conntrack", cls=ConntrackGroup)
def command() -> None:
    """Find and explain conntrack INVALID packets: replay, logs, stats, debug."""
