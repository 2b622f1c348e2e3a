"""`sysctl-doctor lab`: the incident reproduced on this kernel, and each mitigation tried."""

from __future__ import annotations

import json
from typing import Optional

import click

from sysctl_doctor.cli.exit_codes import EXIT_FINDINGS

SCENARIO_NAMES = ("all", "seq-over-upper-bound", "seq-under-lower-bound")
MITIGATION_NAMES = ("all", "none", "be-liberal", "drop-invalid-input", "drop-invalid-forward")


@click.command("lab")
@click.option("--scenario", type=click.Choice(SCENARIO_NAMES), default="all", show_default=True,
              help="Which out-of-window segment to inject from the server side.")
@click.option("--mitigation", type=click.Choice(MITIGATION_NAMES), default="all", show_default=True,
              help="Mitigation on the NAT box (all = none and each one).")
@click.option("--capture-dir", type=click.Path(file_okay=False), default=None,
              help="Keep one pcap per run here (the NAT box's outside link).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def command(scenario: str, mitigation: str, capture_dir: Optional[str], fmt: str) -> None:
    """Reproduce the conntrack reset in network namespaces (pod ↔ NAT ↔ server), as root.

    Streams data, injects an out-of-window segment from the server, and shows
    the kernel's log line, the NAT box's RST and what each end saw — then the
    same under each mitigation. Needs the `lab` extra (pyroute2) and nft.
    Exit 0 when every run did what the model predicts for this kernel, 1 otherwise.
    """
    from sysctl_doctor.lab.mitigations import select_mitigations
    from sysctl_doctor.lab.runner import run_lab
    from sysctl_doctor.lab.scenarios import select_scenarios

    progress = None if fmt == "json" else _print_outcome
    report = run_lab(select_scenarios(scenario), select_mitigations(mitigation), capture_dir, progress,
                     notice=lambda message: click.echo(message, err=True))
    if fmt == "json":
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        _print_table(report)
    if not report.all_as_expected:
        raise click.exceptions.Exit(EXIT_FINDINGS)


def _console():  # type: ignore[no-untyped-def]
    from sysctl_doctor.cli.console import make_console

    return make_console(piped_width=160)


def _safe(text: object) -> str:
    """Kernel log text and error messages: terminal-safe and not read as rich markup."""
    from rich.markup import escape

    from sysctl_doctor.terminal_text import terminal_safe

    return escape(terminal_safe(str(text)))


def _print_outcome(outcome) -> None:  # type: ignore[no-untyped-def]
    from sysctl_doctor.conntrack.nflog import parse_nflog_line

    console = _console()
    verdict = "[green]survived[/]" if outcome.survived else "[red]broken[/]"
    console.print(f"[bold]{outcome.scenario}[/] with mitigation [bold]{outcome.mitigation}[/]: {verdict}"
                  f" ({outcome.seconds:.1f} s)")
    if outcome.error:
        console.print(f"  [red]run failed[/]: {_safe(outcome.error)}")
        return
    inj = outcome.injected
    if inj is not None:
        console.print(f"  injected {inj.src}:{inj.sport} > {inj.dst}:{inj.dport} seq={inj.seq} ack={inj.ack} "
                      f"len={inj.payload} (server's next seq {inj.server_next}, offset "
                      f"{(inj.seq - inj.server_next + (1 << 31)) % (1 << 32) - (1 << 31):+d})")
    if outcome.kernel_lines:
        for line, verdict_word in zip(outcome.kernel_lines, outcome.kernel_verdicts):
            rec = parse_nflog_line(line)
            text = f"{rec.logger}: {rec.message}" if rec else line
            console.print(f"  kernel: {_safe(text)}  → {verdict_word}")
    else:
        console.print("  kernel: no conntrack line (nothing was out of window for conntrack, or be_liberal)")
    console.print(f"  NAT box sent RST to the server: {'yes' if outcome.nat_rst else 'no'}; "
                  "conntrack counters in the NAT netns: " +
                  (", ".join(f"{k} +{v}" for k, v in outcome.counters.items() if v) or "no change"))
    console.print(f"  client (pod): {outcome.client.state}, {outcome.client.bytes_received} bytes; "
                  f"server: {outcome.server.state}")
    if outcome.capture:
        console.print(f"  capture: {_safe(outcome.capture)} ({outcome.capture_frames} frames)")


def _print_table(report) -> None:  # type: ignore[no-untyped-def]
    from rich.table import Table

    console = _console()
    mitigations = []
    scenarios = []
    for o in report.outcomes:
        if o.mitigation not in mitigations:
            mitigations.append(o.mitigation)
        if o.scenario not in scenarios:
            scenarios.append(o.scenario)
    table = Table(title=f"kernel {report.kernel}: does the connection survive?")
    table.add_column("scenario")
    for m in mitigations:
        table.add_column(m)
    for s in scenarios:
        row = [s]
        for m in mitigations:
            o = next((x for x in report.outcomes if x.scenario == s and x.mitigation == m), None)
            if o is None:
                row.append("")
                continue
            word = "[green]survived[/]" if o.survived else "[red]broken[/]"
            if o.survived != o.expected_survived or o.error:
                word += " [bold yellow](unexpected)[/]"
            row.append(word)
        table.add_row(*row)
    console.print(table)
    if report.host_changes:
        from sysctl_doctor.host_switches import holders

        parts = []
        for key, original in report.host_changes.items():
            others = holders(key.replace(".", "/"))
            parts.append(f"{key} back to {original}" if not others else
                         f"{key} left on for " + ", ".join(h.describe() for h in others))
        console.print("host settings set for the run (so the NAT netns can log): " + ", ".join(parts))
    if report.kernel_log:
        console.print(f"note: {_safe(report.kernel_log)}")
