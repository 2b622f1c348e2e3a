"""`sysctl-doctor show`: the effective sysctl.d settings, in apply order, with where each comes from."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

import click

from sysctl_doctor.cli.styled_lines import Segment, emit

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


def key_tree_for_cli(root: "Root", proc_sys: Optional[str]) -> Tuple[Optional["KeyTree"], Optional[str]]:
    """The keys that exist (from --proc-sys DIR, or /proc/sys on the live host) and where they were read."""
    import os

    from sysctl_doctor.config.model import KeyTree
    from sysctl_doctor.errors import DoctorError

    tree_dir = proc_sys
    if tree_dir is None and root.is_live and os.path.isdir("/proc/sys"):
        tree_dir = "/proc/sys"
    if tree_dir is None:
        return None, None
    if not os.path.isdir(tree_dir):
        raise DoctorError(f"--proc-sys {tree_dir}: not a directory")
    return KeyTree.from_dir(tree_dir), tree_dir


def load_for_cli(root_dir: str, flavor: Optional[str], proc_sys: Optional[str]
                 ) -> Tuple["Root", "SysctlConfig", Optional["KeyTree"], Optional[str]]:
    """Root, config, key tree and where the key tree came from (None: no tree)."""
    from sysctl_doctor.config.sysctl_d import boot_flavor, load_sysctl_config
    from sysctl_doctor.root import root_for_cli

    root = root_for_cli(root_dir)
    chosen = flavor or boot_flavor(root)  # the init decides, as for check
    # the settings the boot would apply: an offline root's /run is an empty tmpfs then (runtime-only files)
    config = load_sysctl_config(root, chosen, at_boot=True)  # type: ignore[arg-type]
    root.raise_if_unreadable()
    keys, tree_dir = key_tree_for_cli(root, proc_sys)
    return root, config, keys, tree_dir


def printable(text: str) -> str:
    """Undecodable bytes (kept as surrogate escapes) shown as \\xNN."""
    if text.isascii():
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def aliases_for_root(root: "Root") -> Dict[str, str]:
    """The alias map (kernel.kernel_keys) of the kernel this root runs: the running one on /, else the
    newest under /lib/modules; {} when that kernel's series has no data."""
    import os

    from sysctl_doctor.kernel import kernel_keys
    from sysctl_doctor.kernel.modules_tree import available_kernels

    if root.is_live:
        kernel: Optional[str] = os.uname().release
    else:
        kernels = available_kernels(root)
        kernel = kernels[-1] if kernels else None
    exact = kernel_keys.for_kernel(kernel)
    return exact.alias_map() if exact is not None else {}


def show_document(config: "SysctlConfig", keys: Optional["KeyTree"], tree_dir: Optional[str],
                  root_dir: str, prefixes: Tuple[str, ...] = (),
                  aliases: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """The JSON contract of `show --format json` (also what the text renderer reads)."""
    from sysctl_doctor.config.model import path_to_key
    from sysctl_doctor.config.sysctl_d import effective_settings

    settings: List[Dict[str, Any]] = []
    for s in effective_settings(config, keys, prefixes, aliases):
        a = s.assignment
        key, value = s.key, s.value  # printable() inline for the usual ASCII text (10,000 settings)
        settings.append({
            "key": key if key.isascii() else printable(key),
            "value": value if value.isascii() else printable(value),
            "exists": s.exists,
            "file": a.origin.file,
            "line": a.origin.line,
            "ignore_failure": a.ignore_failure,
            "overrides": [{"file": o.file, "line": o.line, "value": printable(o.value)} for o in s.overrides]
            if s.overrides else [],
            "glob": printable(a.key) if a.is_glob else None,
            "final": s.final,
            # a later write through another name of the same kernel variable won (None: no alias involved)
            "alias_winner": path_to_key(s.alias_winner) if s.alias_winner else None,
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




def render_text(doc: Dict[str, Any]) -> List[List[Segment]]:
    """The text report of `show` as styled lines (renderers only render)."""
    lines: List[List[Segment]] = []
    add = lines.append
    tree = doc["key_tree"] or "none (pass --proc-sys DIR to expand globs and check keys)"
    add([("flavour ", "bold"), (f"{doc['flavor']} ({FLAVOR_NAMES[doc['flavor']]})   ", None),
         ("root ", "bold"), (f"{doc['root']}   ", None), ("key tree ", "bold"), (tree, None)])
    add([])
    add([("Files read, in apply order", "bold"), (" (sorted by file name across directories):", None)])
    for i, f in enumerate(doc["files"], 1):
        add([(f"  {i:>2}. {f}", None)])
    if not doc["files"]:
        add([("  (none)", None)])
    add([])
    add([("Settings, in apply order", "bold"), (" (for a key written twice, the last write wins):", None)])
    width = min(max((len(s["key"]) + len(s["value"]) + 3 for s in doc["settings"]), default=0), 60)
    for s in doc["settings"]:
        assign = f"{s['key']} = {s['value']}"
        style = "dim" if not s["final"] or s["exists"] is False else "bold"
        add([("  ", None), (assign, style), (" " * max(2, width - len(assign) + 2) + f"{s['file']}:{s['line']}", None)])
        if s["glob"] and s["glob"] == s["key"]:
            add([("      a glob: expanded against /proc/sys when applied; keys with their own line are skipped",
                  None)])
        elif s["glob"]:
            add([(f"      from the glob {s['glob']}", None)])
        for o in s["overrides"]:
            add([(f"      beats {o['file']}:{o['line']} (= {o['value']})", None)])
        if not s["final"] and s.get("alias_winner"):
            add([(f"      replaced: {s['alias_winner']} is the same kernel variable and is written later", "yellow")])
        elif not s["final"]:
            add([("      replaced: a later write to this key wins", "yellow")])
        if s["exists"] is False:
            add([("      key does not exist", "red"), (" in the key tree: the write fails"
                                                     + (" (failure ignored: '-' prefix)" if s["ignore_failure"]
                                                        else ""), None)])
        elif s["ignore_failure"]:
            add([("      '-' prefix: a failure to write is ignored", None)])
    if not doc["settings"]:
        add([("  (none)", None)])
    if doc["exclusions"]:
        add([])
        add([("Exclusions", "bold"), (" ('-key' lines: globs do not write these keys):", None)])
        for e in doc["exclusions"]:
            add([(f"  -{e['key']}   {e['file']}:{e['line']}", None)])
    if doc["ignored_files"]:
        add([])
        add([("Not read:", "bold")])
        for i in doc["ignored_files"]:
            add([(f"  {i['file']}: {i['reason']}", None)])
    if doc["diagnostics"]:
        add([])
        add([("Warnings:", "bold yellow")])
        for d in doc["diagnostics"]:
            where = (d["file"] + (f":{d['line']}" if d["line"] else "")) if d["file"] else ""
            add([(f"  {where}: {d['message']}" if where else f"  {d['message']}", None)])
    add([])
    add([("Why does a line win? ", None), ("sysctl-doctor explain KEY", "bold")])
    return lines


def dump_json(doc: Dict[str, Any]) -> None:
    """Pure JSON on stdout: indented on a terminal, compact (and fast) when piped."""
    import sys

    from sysctl_doctor.report.json_report import json_text

    if sys.stdout.isatty():
        sys.stdout.write(json_text(doc, indent=2) + "\n")
    else:
        sys.stdout.write(json_text(doc, separators=(",", ":")) + "\n")


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
    root, config, keys, tree_dir = load_for_cli(root_dir, flavor, proc_sys)
    doc = show_document(config, keys, tree_dir, root_dir, prefixes, aliases_for_root(root))
    if fmt == "json":
        dump_json(doc)
    else:
        emit(render_text(doc))
