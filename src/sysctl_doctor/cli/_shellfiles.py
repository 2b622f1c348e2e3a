"""Man pages and shell completion scripts, generated from the click command tree.

    python -m sysctl_doctor.cli._shellfiles man DIR          DIR/sysctl-doctor.1, DIR/sysctl-doctor-check.1, ...
    python -m sysctl_doctor.cli._shellfiles completion DIR   DIR/sysctl-doctor.bash, .zsh, .fish

Packagers run it at build time (debian/rules does); the pages cover every command and subcommand,
because the tree is walked after every command module is registered (the lazy registration that keeps
start-up fast would otherwise hide the commands nobody named). The module name starts with `_` so that
`sysctl-doctor _shellfiles` is not a command.
"""

from __future__ import annotations

import inspect
import os
import sys
import time
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import click
from click.shell_completion import get_completion_class

PROG = "sysctl-doctor"
COMPLETE_VAR = "_SYSCTL_DOCTOR_COMPLETE"
SHELLS = ("bash", "zsh", "fish")

EXIT_STATUS = (
    ("0", "clean: nothing at error level"),
    ("1", "findings at error level (conntrack logs/replay: a packet is INVALID; lab: a run did not do "
          "what the model predicts)"),
    ("2", "usage or I/O error (the message says which file:line)"),
    ("130", "interrupted"),
)


def full_tree() -> click.Group:
    """The root group with every command registered (the lazy loader skips unnamed ones)."""
    from sysctl_doctor import cli as cli_pkg

    cli_pkg._register_all()
    return cli_pkg.cli


def walk(group: click.Group) -> Iterator[Tuple[List[str], click.Command, click.Context]]:
    """Every command under `group`, depth first, with its word path and a context for it."""

    def visit(cmd: click.Command, path: List[str], parent: Optional[click.Context]):
        ctx = click.Context(cmd, info_name=path[-1], parent=parent, **cmd.context_settings)
        yield path, cmd, ctx
        if isinstance(cmd, click.Group):
            for name in cmd.list_commands(ctx):
                sub = cmd.get_command(ctx, name)
                if sub is not None and not sub.hidden:
                    yield from visit(sub, path + [name], ctx)

    yield from visit(group, [PROG], None)


def page_name(path: List[str]) -> str:
    return "-".join(path)


def _esc(text: str) -> str:
    """Escape text for roff: backslashes, and a leading . or ' that would start a request."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    out = []
    for line in text.split("\n"):
        if line.startswith((".", "'")):
            line = "\\&" + line
        out.append(line)
    return "\n".join(out)


def _paragraphs(help_text: str) -> List[str]:
    text = inspect.cleandoc(help_text or "")
    paras = []
    for block in text.split("\n\n"):
        lines = [ln for ln in block.split("\n") if ln.strip() != "\b"]
        if lines:
            paras.append(" ".join(ln.strip() for ln in lines))
    return paras


def manpage(path: List[str], cmd: click.Command, ctx: click.Context, version: str, date: str) -> str:
    name = page_name(path)
    short = cmd.get_short_help_str(limit=200) if len(path) > 1 else _paragraphs(cmd.help or "")[0]
    pieces = cmd.collect_usage_pieces(ctx)
    lines = [
        f'.TH "{name.upper()}" "1" "{date}" "{PROG} {version}" "User Commands"',
        ".SH NAME",
        f"{_esc(name)} \\- {_esc(short)}",
        ".SH SYNOPSIS",
        f".B {_esc(' '.join(path))}",
        _esc(" ".join(pieces)),
        ".SH DESCRIPTION",
    ]
    for i, para in enumerate(_paragraphs(cmd.help or "")):
        if i:
            lines.append(".PP")
        lines.append(_esc(para))
    records = [p.get_help_record(ctx) for p in cmd.get_params(ctx)]
    records = [r for r in records if r is not None]
    if records:
        lines.append(".SH OPTIONS")
        for term, text in records:
            lines += [".TP", f"\\fB{_esc(term)}\\fR", _esc(text or "")]
    subs: List[Tuple[str, click.Command]] = []
    if isinstance(cmd, click.Group):
        for sub_name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, sub_name)
            if sub is not None and not sub.hidden:
                subs.append((sub_name, sub))
    if subs:
        lines.append(".SH COMMANDS")
        for sub_name, sub in subs:
            lines += [".TP", f"\\fB{_esc(sub_name)}\\fR", _esc(sub.get_short_help_str(limit=200)),
                      f"See \\fB{_esc(page_name(path + [sub_name]))}\\fR(1)."]
    lines.append(".SH EXIT STATUS")
    for code, meaning in EXIT_STATUS:
        lines += [".TP", f"\\fB{code}\\fR", _esc(meaning)]
    lines += [
        ".SH ENVIRONMENT",
        ".TP",
        "\\fBSYSCTL_DOCTOR_DEBUG\\fR",
        "Set to 1 to see a traceback instead of a one\\-line internal error.",
    ]
    see = [page_name(path[:-1])] if len(path) > 1 else []
    see += [page_name(path + [n]) for n, _ in subs]
    if see:
        lines += [".SH SEE ALSO", ",\n".join(f"\\fB{_esc(s)}\\fR(1)" for s in see)]
    return "\n".join(lines) + "\n"


def _date() -> str:
    # Reproducible builds: SOURCE_DATE_EPOCH when the packager sets it.
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    return time.strftime("%Y-%m-%d", time.gmtime(int(epoch) if epoch else time.time()))


def write_manpages(outdir: Path) -> List[Path]:
    from sysctl_doctor import __version__

    outdir.mkdir(parents=True, exist_ok=True)
    date, written = _date(), []
    for path, cmd, ctx in walk(full_tree()):
        target = outdir / f"{page_name(path)}.1"
        target.write_text(manpage(path, cmd, ctx, __version__, date), encoding="utf-8")
        written.append(target)
    return written


def completion_script(shell: str) -> str:
    """click's own completion script for `shell` (what `_SYSCTL_DOCTOR_COMPLETE={shell}_source` prints)."""
    cls = get_completion_class(shell)
    if cls is None:
        raise ValueError(f"no completion for {shell}")
    return cls(full_tree(), {}, PROG, COMPLETE_VAR).source()


def write_completions(outdir: Path) -> List[Path]:
    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    for shell in SHELLS:
        target = outdir / f"{PROG}.{shell}"
        target.write_text(completion_script(shell), encoding="utf-8")
        written.append(target)
    return written


def main(argv: Optional[List[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] not in ("man", "completion"):
        sys.stderr.write(__doc__.split("\n\n")[1] + "\n")
        return 2
    writer = write_manpages if args[0] == "man" else write_completions
    for path in writer(Path(args[1])):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
