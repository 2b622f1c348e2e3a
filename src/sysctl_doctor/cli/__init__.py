"""The command-line layer: parse arguments, call the pipeline, render.

Nothing below this package prints or exits. Every command module under
`sysctl_doctor.cli` registers one click command (or group); `main()` turns
`DoctorError` into ``error: …`` and exit 2, and never lets a traceback reach
the user (set SYSCTL_DOCTOR_DEBUG=1 to see one).

Exit codes: 0 clean, 1 findings (at error level), 2 usage or I/O error,
130 interrupted.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import List, Optional

import click

from sysctl_doctor import __version__
from sysctl_doctor.errors import DoctorError

from sysctl_doctor.cli.exit_codes import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK


class DefaultCommandGroup(click.Group):
    """A group whose bare invocation runs its default command (`check`)."""

    default_command = "check"

    def parse_args(self, ctx: click.Context, args: List[str]) -> List[str]:
        # Shell completion parses resiliently: with no words yet the user is completing a command
        # name, not check's options, so the default command is not inserted then.
        if (not args and not ctx.resilient_parsing) or (
            args and args[0].startswith("-") and args[0] not in ("--help", "-h", "--version")
        ):
            if self.get_command(ctx, self.default_command) is not None:
                args = [self.default_command, *args]
        return super().parse_args(ctx, args)

    # Command modules are imported when their command is named, not at start-up (which is
    # benchmarked): `show` need not import `check`, `explain`, `conntrack`, ... A command
    # named like its module loads alone; any other name, and --help, registers them all.
    def get_command(self, ctx: click.Context, cmd_name: str) -> Optional[click.Command]:
        found = self.commands.get(cmd_name)
        if found is None and not _registered:
            found = _load_command(cmd_name)
        return found

    def list_commands(self, ctx: click.Context) -> List[str]:
        _register_all()
        return super().list_commands(ctx)

    def invoke(self, ctx: click.Context):  # type: ignore[no-untyped-def]
        try:
            return super().invoke(ctx)
        except BrokenPipeError as exc:
            # click would swallow it and exit 1 ("findings"); main() makes it a quiet exit 0.
            raise _OutputClosed() from exc


class _OutputClosed(Exception):
    """stdout was closed by the reader (`sysctl-doctor … | head`)."""


def _print_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from sysctl_doctor.compiled import accelerator_status

    click.echo(f"sysctl-doctor, version {__version__}")
    click.echo(f"compiled accelerators: {accelerator_status()}")
    ctx.exit()


@click.group(cls=DefaultCommandGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Show the version (and which compiled accelerators run) and exit.")
def cli() -> None:
    """Will your kernel settings be in effect after the next boot?

    A bare `sysctl-doctor` runs `check` on this host.

    Exit status: 0 clean, 1 findings at error level (an INVALID packet for
    conntrack logs/replay), 2 usage or I/O error, 130 interrupted.
    """


def _register() -> None:
    # One import per command module; each module defines `command`.
    from sysctl_doctor.cli import conntrack
    from sysctl_doctor.cli import check, explain, fix, fleet, index, lab, show, verify

    modules: tuple = (check, show, explain, fix, index, conntrack, lab, fleet, verify)
    for module in modules:
        cli.add_command(module.command)


_registered = False


def _register_all() -> None:
    global _registered
    if not _registered:
        _register()
        _registered = True


def _load_command(name: str) -> Optional[click.Command]:
    if name.isidentifier() and not name.startswith("_"):
        import importlib.util

        if importlib.util.find_spec(f"sysctl_doctor.cli.{name}") is not None:
            command = getattr(importlib.import_module(f"sysctl_doctor.cli.{name}"), "command", None)
            if isinstance(command, click.Command) and command.name == name:
                cli.add_command(command)
                return command
    _register_all()
    return cli.commands.get(name)


def _safe(message: str) -> str:
    """An error message may name a file from the root: its control characters are shown escaped."""
    from sysctl_doctor.terminal_text import terminal_safe

    return terminal_safe(message, keep="\n")


def _stdout_identity() -> Optional[tuple]:
    try:
        st = os.fstat(sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        return None
    return (st.st_dev, st.st_ino)


def _devnull_identity() -> Optional[tuple]:
    try:
        st = os.stat(os.devnull)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _closed_by_reader(exc: SystemExit, stdout_at_start: Optional[tuple]) -> bool:
    """rich's answer to a broken pipe: /dev/null dup'ed over stdout, then SystemExit(1) (Console.on_broken_pipe).

    Told apart from any other exit by stdout having become /dev/null during the run."""
    now = _stdout_identity()
    return exc.code == 1 and now is not None and now == _devnull_identity() and now != stdout_at_start


def main(argv: Optional[List[str]] = None) -> None:
    """Console-script entry point."""
    debug = os.environ.get("SYSCTL_DOCTOR_DEBUG") == "1"
    if sys.stdout is None:  # started with stdout closed (`>&-`): Python gives no stream at all
        click.echo("error: standard output is closed: nothing can be written (redirect it to /dev/null "
                   "to discard the output)", err=True)
        sys.exit(EXIT_ERROR)
    stdout_at_start = _stdout_identity()
    try:
        code = cli.main(args=argv, prog_name="sysctl-doctor", standalone_mode=False)
    except SystemExit as exc:
        if not _closed_by_reader(exc, stdout_at_start):
            raise
        code = EXIT_OK  # output closed early (`| head`): a quiet 0, as for every other command
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.ClickException as exc:
        import io

        shown = io.StringIO()
        exc.show(file=shown)  # the usage error may quote an argument: shown escaped like any other text
        sys.stderr.write(_safe(shown.getvalue()))
        code = EXIT_ERROR
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)
        code = EXIT_INTERRUPTED
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        code = EXIT_INTERRUPTED
    except DoctorError as exc:
        click.echo(f"error: {_safe(str(exc))}", err=True)
        code = EXIT_ERROR
    except (_OutputClosed, BrokenPipeError):
        # Output piped into `head` and closed: not an error of ours. Point stdout at /dev/null so
        # that the interpreter's final flush does not fail (and turn the exit status into 120).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = EXIT_OK
    except OSError as exc:  # an I/O error that no command turned into a DoctorError (e.g. a full disk)
        if debug:
            raise
        where = f"{exc.filename}: " if exc.filename else ("writing the output: " if exc.errno == errno.ENOSPC else "")
        click.echo(_safe(f"error: {where}{exc.strerror or exc}"), err=True)
        code = EXIT_ERROR
    except Exception as exc:  # noqa: BLE001 - the last line of defence
        if debug:
            raise
        click.echo(
            f"internal error: {type(exc).__name__}: {_safe(str(exc))}\n"
            "(this is a bug in sysctl-doctor; rerun with SYSCTL_DOCTOR_DEBUG=1 for a traceback)",
            err=True,
        )
        code = EXIT_ERROR
    sys.exit(code if isinstance(code, int) else EXIT_OK)
