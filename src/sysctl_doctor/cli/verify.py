"""`sysctl-doctor verify`: boot an image of the root under qemu and compare `check`'s prediction with the kernel."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional, Tuple

import click

from sysctl_doctor.cli.check import kernel_release


@click.command("verify")
@click.option("--root", "root_dir", required=True, type=click.Path(file_okay=False),
              help="The root directory to boot (never changed: a copy is imaged).")
@click.option("--kernel", default=None, callback=kernel_release,
              help="Kernel build to boot and predict for (default: the one check predicts for).")
@click.option("--cmdline", default=None,
              help="Kernel command line words to assume and boot with (default: the root's own).")
@click.option("--late-load", "late_load", multiple=True, metavar="MODULE",
              help="After the boot is read, modprobe MODULE and read again (repeatable).")
@click.option("--timeout", type=click.FloatRange(min=10), default=600, show_default=True,
              help="Seconds a boot may take before qemu is killed and the boot counts as failed.")
@click.option("--boots", type=click.IntRange(1, 50), default=1, show_default=True,
              help="Boot N times: for keys check calls not guaranteed, how often each side of the race won.")
@click.option("--log-dir", type=click.Path(file_okay=False), default=None,
              help="Keep each boot's console.log and probe.log in DIR/boot-N/.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def command(root_dir: str, kernel: Optional[str], cmdline: Optional[str], late_load: Tuple[str, ...],
            timeout: float, boots: int, log_dir: Optional[str], fmt: str) -> None:
    """Boot the root once (or N times) under qemu and show, key by key, that what `check` predicts is
    what the kernel has — or where it differs and why.

    Needs qemu-system-x86_64 and mke2fs (e2fsprogs); run as root so the image keeps ownership.
    SYSCTL_DOCTOR_ACCEL=tcg|kvm picks the accelerator (default: KVM only if a bounded probe boot works).
    Exit status: 0 every key agrees, 1 a key differs, 2 the boot failed (console tail shown) or usage/I-O error.
    """
    from sysctl_doctor.cli.exit_codes import EXIT_BOOT_FAILED, EXIT_FINDINGS, EXIT_OK
    from sysctl_doctor.verify.render import render_text, to_dict
    from sysctl_doctor.verify.run import verify_root

    for module in late_load:
        if not module or not all(c.isalnum() or c in "_-" for c in module):
            raise click.BadParameter(f"{module!r} is not a module name", param_hint="--late-load")
    result = verify_root(root_dir, kernel, late_load, timeout, boots, cmdline,
                         Path(log_dir) if log_dir else None,
                         progress=lambda message: click.echo(message, err=True))
    if fmt == "json":
        sys.stdout.write(json.dumps(to_dict(result), indent=2) + "\n")
    else:
        from sysctl_doctor.terminal_text import terminal_safe

        sys.stdout.write(terminal_safe(render_text(result), keep="\n"))
    raise click.exceptions.Exit({"agree": EXIT_OK, "differ": EXIT_FINDINGS}.get(result.status, EXIT_BOOT_FAILED))
