#!/usr/bin/env python3
"""Regenerate, or check, src/sysctl_doctor/data/known_keys/<series>.tsv from Debian's kernel packages.

    .venv/bin/python tools/gen_known_keys.py 5.10 6.1 6.12     regenerate from what the archive serves now
    .venv/bin/python tools/gen_known_keys.py --check [SERIES…]  is a newer kernel package served? what would change?
    .venv/bin/python tools/gen_known_keys.py 6.1=/path/to/root  regenerate from an unpacked tree

Regenerating fetches the package linux-image-amd64 depends on today in that series' suite (bullseye,
bookworm + security, bookworm-backports; tests/kernel_trees.py, private apt state, cached under
$SYSCTL_DOCTOR_TEST_CACHE or .cache), scans its module files with the project's own ELF reader and writes
every module whose sysctl tables were all tied to a directory, with a `# source` line naming the exact
package=version: the tests fetch that same package, so a newer kernel in the archive never breaks them.

--check refreshes the apt lists and compares each committed source with the current package; where they
differ it scans the new one and prints the keys that would appear (+) or go away (-). Exit 0: every list is
current; 1: a newer package is served (run the first form, review the diff, commit); 2: error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "src"))

from sysctl_doctor.errors import DoctorError  # noqa: E402
from sysctl_doctor.kernel import known_keys  # noqa: E402
from sysctl_doctor.kernel.known_keys_scan import module_keys_of_tree  # noqa: E402

OUT_DIR = REPO / "src/sysctl_doctor/data/known_keys"


def _current_tree(series: str):
    """(tree, kver, package pin) of what linux-image-amd64 depends on now in `series`' suite."""
    import kernel_trees

    opts = kernel_trees.apt_options(series, update=True)
    pkg = kernel_trees.current_package(opts)
    base = kernel_trees.cache_root()
    base.mkdir(parents=True, exist_ok=True)
    tree = kernel_trees._tree_for(base, pkg, opts)
    kver = (tree / ".complete").read_text().split("\n", 1)[0].strip()
    return tree, kver, pkg


def regenerate(arg: str) -> None:
    series, _, path = arg.partition("=")
    source = ""
    if path:
        tree = Path(path)
        kver = sorted(p.name for p in (tree / "lib/modules").iterdir())[-1]
    else:
        tree, kver, pkg = _current_tree(series)
        source = str(pkg)
    kernel, package, keys = module_keys_of_tree(tree, kver)
    text = known_keys.render(series, kernel, package, keys, source)
    out = OUT_DIR / f"{series}.tsv"
    old = known_keys.parse(out.read_text(encoding="utf-8"), out.name) if out.exists() else None
    out.write_text(text, encoding="utf-8")
    changes = known_keys.key_changes(old.by_module if old else {}, keys)
    print(f"{series}: {sum(len(v) for v in keys.values())} keys of {len(keys)} modules from "
          f"{source or kernel}; {len(changes)} key changes")
    for line in changes:
        print(f"  {line}")


def check(series_list) -> int:
    import kernel_trees

    drift = 0
    for series in series_list or sorted(kernel_trees.SERIES):
        committed = known_keys.parse((OUT_DIR / f"{series}.tsv").read_text(encoding="utf-8"), f"{series}.tsv")
        tree, kver, pkg = _current_tree(series)
        if committed.source == str(pkg):
            print(f"{series}: current ({pkg})")
            continue
        drift = 1
        _, _, keys = module_keys_of_tree(tree, kver)
        changes = known_keys.key_changes(committed.by_module, keys)
        print(f"{series}: committed {committed.source or committed.kernel}; the archive now serves {pkg}: "
              + (f"{len(changes)} key changes" if changes else "the same keys"))
        for line in changes:
            print(f"  {line}")
        print(f"  regenerate: .venv/bin/python tools/gen_known_keys.py {series}")
    return drift


def main(argv) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--check", action="store_true", help="report drift, write nothing (exit 0 current, 1 drift)")
    ap.add_argument("series", nargs="*", help="5.10, 6.1, 6.12, or SERIES=/path/to/unpacked/root")
    args = ap.parse_args(argv)
    try:
        if args.check:
            return check(args.series)
        if not args.series:
            ap.print_usage(sys.stderr)
            return 2
        for arg in args.series:
            regenerate(arg)
        return 0
    except (DoctorError, OSError) as exc:
        print(f"gen_known_keys: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # kernel_trees.KernelTreeUnavailable: no apt, no mirror
        if type(exc).__name__ == "KernelTreeUnavailable":
            print(f"gen_known_keys: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
