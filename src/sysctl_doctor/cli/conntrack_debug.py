"""`sysctl-doctor conntrack debug on|off`: make the kernel log INVALID packets, then undo it."""

from __future__ import annotations

import signal
import time
from typing import Optional

import click


def _sigterm(signum, frame):  # type: ignore[no-untyped-def]
    raise KeyboardInterrupt


@click.command("debug")
@click.argument("action", type=click.Choice(["on", "off", "status"]))
@click.option("--netns", metavar="NAME", help="Network namespace (`ip netns` name); default: the host's.")
@click.option("--for", "duration", metavar="DURATION",
              help="Stay in the foreground for DURATION (30s, 10m, 1h), then restore (Ctrl-C restores too).")
@click.option("--protocol", type=click.Choice(["all", "tcp"]), default="all", show_default=True,
              help="nf_conntrack_log_invalid=255 (all) or 6 (tcp).")
def command(action: str, netns: Optional[str], duration: Optional[str], protocol: str) -> None:
    """Switch conntrack's INVALID logging on or off, recording and restoring every value.

    `on` binds a logger (nf_log.2/10) where none is bound, sets
    nf_conntrack_log_invalid, and for a non-host namespace holds the host's
    nf_log_all_netns=1 (shared: it goes back when its last holder leaves).
    The previous values go to /run/sysctl-doctor first. Without --for the
    settings STAY until you run `sysctl-doctor conntrack debug off` (same
    --netns), which restores exactly the recorded values. With --for the
    command waits and restores by itself, also on Ctrl-C and SIGTERM.
    Every action first restores what killed runs left.
    Then read the lines with `sysctl-doctor conntrack logs`.
    """
    from sysctl_doctor import host_switches
    from sysctl_doctor.conntrack import debug
    from sysctl_doctor.errors import DoctorError

    where = f"netns {netns}" if netns else "the host namespace"
    log_invalid = "255" if protocol == "all" else "6"
    try:
        host_switches.recover(_notice)
    except DoctorError as exc:
        if action != "status":
            raise
        _notice(f"warning: {exc}")
    if action == "status":
        state = debug.read_state(netns)
        if state is None:
            click.echo(f"conntrack debug is off for {where} (no {debug.state_path(netns)})")
        else:
            click.echo(f"conntrack debug is ON for {where} since "
                       f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(state.started))}:")
            for c in state.changes:
                click.echo(f"  {c.dotted} = {c.new} (was {c.old}{', host-global' if c.scope == 'host' else ''})")
            if state.host_changes:
                holders = host_switches.holders(debug.ALL_NETNS)
                click.echo(f"  {debug.ALL_NETNS.replace('/', '.')} holders: "
                           + (", ".join(h.describe() for h in holders) or "none (not held: lines from this "
                              "namespace are dropped; run off, then on)"))
        return
    if action == "off":
        if duration:
            raise DoctorError("--for goes with `on`")
        state, diagnostics = debug.debug_off(netns, notice=_notice)
        if state is None:
            click.echo(f"conntrack debug was not on for {where}: nothing to restore")
            return
        for c in state.netns_changes:
            click.echo(f"restored {c.dotted} = {c.old}")
        for c in state.host_changes:
            others = host_switches.holders(c.key)
            if others:
                click.echo(f"left {c.dotted} = {c.new}: still held by " + ", ".join(h.describe() for h in others))
            else:
                click.echo(f"restored {c.dotted} = {c.old}")
        for d in diagnostics:
            click.echo(f"warning: {d}", err=True)
        return
    if duration is None:
        state = debug.debug_on(netns, log_invalid, notice=_notice)
        _print_changes(state)
        off = "sysctl-doctor conntrack debug off" + (f" --netns {netns}" if netns else "")
        click.echo(f"conntrack debug is ON for {where} and stays on until you run:\n  {off}\n"
                   f"(recorded in {debug.state_path(netns)}; read the lines with `sysctl-doctor conntrack logs`)")
        return
    seconds = debug.parse_duration(duration)
    old = signal.signal(signal.SIGTERM, _sigterm)
    try:
        def wait(remaining: float) -> None:
            click.echo(f"conntrack debug is ON for {where} for {duration}; Ctrl-C restores now")
            time.sleep(remaining)

        try:
            state, diagnostics = debug.debug_for(netns, seconds, wait, log_invalid, notice=_notice)
        except KeyboardInterrupt:
            click.echo("interrupted: settings restored", err=True)
            raise
    finally:
        signal.signal(signal.SIGTERM, old)
    _print_changes(state, restored=True)
    for d in diagnostics:
        click.echo(f"warning: {d}", err=True)


def _held(key: str) -> str:
    from sysctl_doctor import host_switches

    return ", ".join(h.describe() for h in host_switches.holders(key))


def _notice(message: str) -> None:
    click.echo(message, err=True)


def _print_changes(state, restored: bool = False) -> None:  # type: ignore[no-untyped-def]
    if not state.changes:
        click.echo("nothing to change: logging was already on")
    for c in state.changes:
        scope = " (host-global)" if c.scope == "host" else ""
        if restored and c.scope == "host" and _held(c.key):
            click.echo(f"set {c.dotted} = {c.new}{scope}, left at {c.new}: still held by {_held(c.key)}")
        elif restored:
            click.echo(f"set {c.dotted} = {c.new}{scope}, restored to {c.old}")
        else:
            click.echo(f"set {c.dotted} = {c.new}{scope} (was {c.old})")
