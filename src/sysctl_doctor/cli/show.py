"""`sysctl-doctor show`: the effective sysctl.d settings, in apply order, with where each comes from."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

import click

if TYPE_CHECKING:  # pragma: no cover
    from sysctl_doctor.config.model import KeyTree, SysctlConfig
    from sysctl_doctor.root import Root

FLAVOR_NAMES = {"systemd": "systemd-sysctl 252", "procps": "procps sysctl --system 4.0.2"}


def root_options(func):  # type: ignore[no-untyped-def]
    """--root / --flavor / --proc-sys, shared by show and explain."""
    func = click.option("--proc-sys", "proc_sys", type=click.Path(file_okay=False), default=None,
                        help="A directory laid out like /proc/sys: globs are expanded against it and each "
                             "setting says whether its key exists. Default: /proc/sys when --root is /.")(func)
    func = click.option("--flavor", type=click.Choice(["systemd", "procps"]), default=None,
                        help="Whose rules apply: systemd-sysctl or procps `sysctl --system`. "
                             "Default: systemd if the root has systemd-sysctl, else procps.")(func)
    func = click.option("--root", "root_dir", type=click.Path(file_okay=False), default="/", show_default=True,
                        help="The filesystem to read: / (this host) or an image directory.")(func)
    return func


def load_for_cli(root_dir: str, flavor: Optional[str], proc_sys: Optional[str]
                 ) -> Tuple["Root", "SysctlConfig", Optional["KeyTree"], Optional[str]]:
    """Root, config, key tree and where the key tree came from (None: no tree)."""
    import os

    from sysctl_doctor.config.model import KeyTree
    from sysctl_doctor.config.sysctl_d import default_flavor, load_sysctl_config
    from sysctl_doctor.errors import DoctorError
    from sysctl_doctor.root import Root

    root = Root(root_dir)
    chosen = flavor or default_flavor(root)
    config = load_sysctl_config(root, chosen)  # type: ignore[arg-type]
    tree_dir = proc_sys
    if tree_dir is None and root.is_live and os.path.isdir("/proc/sys"):
        tree_dir = "/proc/sys"
    keys = None
    if tree_dir is not None:
        if not os.path.isdir(tree_dir):
            raise DoctorError(f"--proc-sys {tree_dir}: not a directory")
        keys = KeyTree.from_dir(tree_dir)
    return root, config, keys, tree_dir


def printable(text: str) -> str:
    """Undecodable bytes (kept as surrogate escapes) shown as \\xNN."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def show_document(config: "SysctlConfig", keys: Optional["KeyTree"], tree_dir: Optional[str],
                  root_dir: str, prefixes: Tuple[str, ...] = ()) -> Dict[str, Any]:
    """The JSON contract of `show --format json` (also what the text renderer reads)."""
    from sysctl_doctor.config.sysctl_d import effective_settings

    settings: List[Dict[str, Any]] = []
    for s in effective_settings(config, keys, prefixes):
        a = s.assignment
        settings.append({
            "key": printable(s.key),
            "value": printable(s.value),
            "exists": s.exists,
            "file": a.origin.file,
            "line": a.origin.line,
            "ignore_failure": a.ignore_failure,
            "overrides": [{"file": o.file, "line": o.line, "value": printable(o.value)} for o in s.overrides],
            "glob": printable(a.key) if a.is_glob else None,
            "final": s.final,
        })
    return {
        "flavor": config.flavor,
        "root": root_dir,
        "key_tree": tree_dir,
        "files": list(config.files),
        "settings": settings,
        "exclusions": [{"key": printable(e.pattern), "file": e.origin.file, "line": e.origin.line}
                       for e in config.exclusions],
        "ignored_files": [{"file": i.file, "reason": i.reason} for i in config.ignored_files],
        "diagnostics": [{"file": d.file, "line": d.line, "message": printable(d.message)}
                        for d in config.diagnostics],
    }


def _render_text(doc: Dict[str, Any]) -> None:
    from rich.console import Console
    from rich.markup import escape

    out = Console(highlight=False, soft_wrap=True)
    tree = doc["key_tree"] or "none (pass --proc-sys DIR to expand globs and check keys)"
    out.print(f"[bold]flavour[/] {doc['flavor']} ({FLAVOR_NAMES[doc['flavor']]})   [bold]root[/] "
              f"{escape(doc['root'])}   [bold]key tree[/] {escape(tree)}")
    out.print()
    out.print("[bold]Files read, in apply order[/] (sorted by file name across directories):")
    for i, f in enumerate(doc["files"], 1):
        out.print(f"  {i:>2}. {escape(f)}")
    if not doc["files"]:
        out.print("  (none)")
    out.print()
    out.print("[bold]Settings, in apply order[/] (for a key written twice, the last write wins):")
    width = min(max((len(s["key"]) + len(s["value"]) for s in doc["settings"]), default=0) + 3, 60)
    for s in doc["settings"]:
        assign = f"{s['key']} = {s['value']}"
        style = "dim" if not s["final"] or s["exists"] is False else "bold"
        out.print(f"  [{style}]{escape(assign)}[/]{' ' * max(1, width - len(assign))} "
                  f"{escape(s['file'])}:{s['line']}")
        notes = []
        if s["glob"]:
            notes.append(f"from the glob {s['glob']}")
        for o in s["overrides"]:
            notes.append(f"beats {o['file']}:{o['line']} (= {o['value']})")
        if not s["final"]:
            notes.append("replaced: a later write to this key wins")
        if s["exists"] is False:
            notes.append("[red]key does not exist[/red] in the key tree: the write fails"
                         + (" (failure ignored: '-' prefix)" if s["ignore_failure"] else ""))
        elif s["ignore_failure"]:
            notes.append("'-' prefix: a failure to write is ignored")
        for n in notes:
            out.print(f"      {n if n.startswith('[red]') else escape(n)}")
    if not doc["settings"]:
        out.print("  (none)")
    if doc["exclusions"]:
        out.print()
        out.print("[bold]Exclusions[/] ('-key' lines: globs do not write these keys):")
        for e in doc["exclusions"]:
            out.print(f"  -{escape(e['key'])}   {escape(e['file'])}:{e['line']}")
    if doc["ignored_files"]:
        out.print()
        out.print("[bold]Not read[/]:")
        for i in doc["ignored_files"]:
            out.print(f"  {escape(i['file'])}: {escape(i['reason'])}")
    if doc["diagnostics"]:
        out.print()
        out.print("[bold yellow]Warnings[/]:")
        for d in doc["diagnostics"]:
            where = d["file"] + (f":{d['line']}" if d["line"] else "") if d["file"] else ""
            out.print(f"  {escape(where)}: {escape(d['message'])}" if where else f"  {escape(d['message'])}")
    out.print()
    out.print("Why does a line win? [bold]sysctl-doctor explain KEY[/]")


@click.command("show")
@root_options
@click.option("--prefix", "prefixes", multiple=True,
              help="Only keys under this prefix, like systemd-sysctl --prefix (repeatable; dotted or slash).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def command(root_dir: str, flavor: Optional[str], proc_sys: Optional[str], prefixes: Tuple[str, ...],
            fmt: str) -> None:
    """Effective sysctl.d settings in apply order: value, origin file:line, the lines each beat.

    Files are read exactly as systemd-sysctl 252 or procps `sysctl --system` 4.0.2 reads them.
    """
    _root, config, keys, tree_dir = load_for_cli(root_dir, flavor, proc_sys)
    doc = show_document(config, keys, tree_dir, root_dir, prefixes)
    if fmt == "json":
        import json

        click.echo(json.dumps(doc, indent=2))
    else:
        _render_text(doc)
