"""`sysctl-doctor index`: the raw kernel index — which module registers which sysctl keys."""

from __future__ import annotations

import json
import sys
from typing import Optional

import click

from sysctl_doctor.cli.check import kernel_release


@click.command("index")
@click.option("--root", "root_dir", type=click.Path(file_okay=False), default="/", show_default=True,
              help="Root directory (an image or chroot); / is the live host.")
@click.option("--kernel", "kernel", default=None, metavar="VER", callback=kernel_release,
              help="Kernel release under <root>/lib/modules (default: running kernel on /, else the newest).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--no-cache", is_flag=True, help="Rebuild instead of using the cached index.")
def command(root_dir: str, kernel: Optional[str], fmt: str, no_cache: bool) -> None:
    """Print the kernel index: the sysctl keys each module registers, built-in modules, diagnostics."""
    from rich.markup import escape

    from sysctl_doctor.cli.console import make_console
    from sysctl_doctor.terminal_text import terminal_safe

    from sysctl_doctor.config.model import path_to_key
    from sysctl_doctor.kernel import load_module_index
    from sysctl_doctor.live import LiveHost
    from sysctl_doctor.root import root_for_cli

    root = root_for_cli(root_dir)
    live = LiveHost() if root.is_live else None
    err = make_console(stderr=True)
    progress_bar = None
    task = None

    def progress(done: int, total: int) -> None:
        nonlocal progress_bar, task
        if progress_bar is None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            progress_bar = Progress(TextColumn("scanning modules"), BarColumn(), MofNCompleteColumn(),
                                    TimeElapsedColumn(), console=err, transient=True)
            progress_bar.start()
            task = progress_bar.add_task("scan", total=total)
        progress_bar.update(task, completed=done)

    try:
        index = load_module_index(root, kernel, live, progress=progress if err.is_terminal else None,
                                  use_cache=not no_cache)
    finally:
        if progress_bar is not None:
            progress_bar.stop()
    root.raise_if_unreadable()
    data = index.to_json()
    if fmt == "json":
        click.echo(json.dumps(data, indent=2))
        return
    out = make_console()

    def safe(text: object) -> str:  # names and paths from the root's module files
        return escape(terminal_safe(str(text)))

    state = "partial" if index.partial else "complete"
    source = {"elf": "module files", "metadata": "modules.* metadata + curated table",
              "none": "no modules tree: " + ("/proc/sys + curated table" if index.proc_keys is not None else "curated table")}
    out.print(f"[bold]kernel {safe(index.kernel)}[/bold] — index from {source.get(index.mode, index.mode)}, {state}; "
              f"{data['modules_scanned']} module files, {len(data['modules'])} register sysctls, "
              f"{len(data['builtin_modules'])} built-in modules"
              + (f", {len(index.proc_keys)} keys in /proc/sys" if index.proc_keys is not None else "")
              + (" (cached)" if index.from_cache else ""))
    for name, mod in data["modules"].items():
        out.print(f"\n[bold]{safe(name)}[/bold] {safe(mod['file'])}")
        if mod["requires"]:
            out.print(f"  requires: {safe(', '.join(mod['requires']))}")
        for key in mod["keys"]:
            scope = " (init netns only)" if key in mod["init_netns_only"] else (" (per netns)" if key in mod["per_netns"] else "")
            out.print(f"  {safe(path_to_key(key))}{scope}")
    for diag in index.diagnostics:
        click.echo(terminal_safe(f"warning: {diag}"), err=True)
    sys.stdout.flush()
