"""Differential test of the line fates (`check`'s "assignments") against the REAL systemd-sysctl 252 and procps
4.0.2: for every key of every layout, the value of the line our fates call "applied" (an explicit line, or a
glob line that names the key among the keys it writes) is exactly what the real program left in the key, and
a key with no applied line is one the real program did not write.

Layouts: the hand corpus (tests/config/corpus.py), the 120 seeded random trees of test_fuzz_oracle.py, and the
cases below (same names across /etc, /run, /usr/lib; /dev/null masks; `-key`; invalid lines; globs). The runtime
directory: the same layouts with /run emptied, as a boot sees it, against the fates of the offline root
(`at_boot=True`, where /run/sysctl.d is runtime-only).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional

import pytest

from sysctl_doctor.config.fates import APPLIED, CANCELLED, RUNTIME_ONLY, line_fates, unset_keys
from sysctl_doctor.config.model import KeyTree, key_to_path
from sysctl_doctor.config.sysctl_d import load_sysctl_config
from sysctl_doctor.root import Root
from tests.config import test_fuzz_oracle
from tests.config.corpus import CASES as CORPUS
from tests.config.oracle import Case, build_key_dir, build_root, run_real, why_not_runnable

E, R, UL, L = "/etc/sysctl.d", "/run/sysctl.d", "/usr/local/lib/sysctl.d", "/usr/lib/sysctl.d"
KEYS = ["k/a", "k/b", "k/c", "k/d", "net/ipv4/conf/all/rp_filter", "net/ipv4/conf/lo/rp_filter",
        "net/ipv4/conf/eth0/rp_filter", "net/ipv4/conf/eth0.100/rp_filter"]

FATE_CASES = [
    Case("fates-shadowed-across-etc-run-usr",
         {f"{E}/50-x.conf": "k.a = etc\n", f"{R}/50-x.conf": "k.a = run\nk.b = run\n",
          f"{L}/50-x.conf": "k.a = lib\nk.c = lib\n", f"{R}/60-y.conf": "k.d = run-only\n",
          f"{L}/60-y.conf": "k.d = lib\n"}, KEYS,
         why="one name in three directories: /etc wins, the /run and /usr/lib copies are shadowed (k.b, k.c unset)"),
    Case("fates-masked-by-dev-null",
         {f"{E}/50-x.conf": ("null",), f"{L}/50-x.conf": "k.a = lib\n", f"{R}/50-x.conf": "k.b = run\n",
          f"{L}/60-y.conf": "k.c = y\n"}, KEYS),
    Case("fates-minus-key-cancels",
         {f"{L}/10-a.conf": "k.a = 1\nk.b = 1\nk.c = 1\n", f"{E}/50-x.conf": "-k.a\nk.b = 2\n-k.b\nk.b = 3\n",
          f"{E}/90-z.conf": "k.c = 1\n-k.c\n"}, KEYS,
         why="systemd: a later -key replaces the assignment (nothing written); an assignment after it wins again; "
             "procps writes every assignment"),
    Case("fates-minus-key-and-globs",
         {f"{E}/10-g.conf": "net.ipv4.conf.*.rp_filter = 2\n-net.ipv4.conf.lo.rp_filter\n",
          f"{L}/20-h.conf": "net.ipv4.conf.eth0/100.rp_filter = 0\nnet.ipv4.conf.*.rp_filter = 1\n"}, KEYS,
         why="a glob skips excluded and explicitly set keys; the later glob line replaces the earlier (systemd)"),
    Case("fates-invalid-lines",
         {f"{E}/50-x.conf": "k.a 1\nk.b = 1\n= 3\nk.c\n-\n   k.d   =   4   \n"}, KEYS),
    Case("fates-repeat-and-override",
         {f"{L}/10-a.conf": "k.a = 1\nk.b = 1\n", f"{E}/20-b.conf": "k.a = 1\nk.b = 2\n",
          f"{UL}/30-c.conf": "k.b = 1\n"}, KEYS),
    Case("fates-sysctl-conf-with-and-without-link",
         {"/etc/sysctl.conf": "k.a = conf\nk.b = conf\n", f"{E}/50-x.conf": "k.b = x\n"}, KEYS,
         why="systemd never reads /etc/sysctl.conf itself (k.a unset); procps reads it last"),
    Case("fates-runtime-file-hides-vendor-file",
         {f"{R}/50-x.conf": "k.a = run\n", f"{L}/50-x.conf": "k.a = lib\nk.b = lib\n", f"{R}/70-r.conf": "k.c = r\n"},
         KEYS, why="live: /run shadows /usr/lib; at boot /run is empty, so /usr/lib's file is read"),
]

CASES = [c for c in CORPUS if not c.args] + FATE_CASES + test_fuzz_oracle.CASES
JOBS = [(case, flavor) for case in CASES for flavor in case.flavors]


def _without_run(case: Case) -> Case:
    return Case(case.name + "-boot", {p: e for p, e in case.files.items() if not p.startswith("/run/")}, case.keys,
                case.flavors)


BOOT_CASES = [c for c in CASES if any(p.startswith("/run/") for p in c.files) and c.name.startswith("fates-")] + [
    c for c in CORPUS if not c.args and any(p.startswith("/run/") for p in c.files)]
BOOT_JOBS = [(_without_run(case), flavor) for case in BOOT_CASES for flavor in case.flavors]


@pytest.fixture(scope="module")
def real_results() -> Dict[tuple, dict]:
    reason = why_not_runnable()
    if reason:
        pytest.skip(reason)
    jobs = JOBS + BOOT_JOBS
    return {(case.name, flavor): r for (case, flavor), r in zip(jobs, run_real(jobs))}


def fates_final(root: Root, flavor: str, keys: KeyTree, at_boot: bool = False) -> Dict[str, Optional[str]]:
    """key (slash) -> the value of the line whose fate is "applied" for it, from the fates alone."""
    config = load_sysctl_config(root, flavor, at_boot=at_boot)  # type: ignore[arg-type]
    fates = line_fates(config, root, keys)
    out: Dict[str, Optional[str]] = {}
    for f in fates:
        if f.fate != APPLIED:
            continue
        targets: List[str] = ([key_to_path(k) for k in (f.keys or ())] if f.is_glob
                              else ["/".join(c for c in (f.path or "").split("/") if c not in ("", "."))])
        for target in targets:
            assert target not in out, f"two applied lines for {target}: {f.where}"
            out[target] = f.value
    return {k: v for k, v in out.items() if k in keys.paths}


def _check(case: Case, flavor: str, real: dict, tmp_path: Path, at_boot: bool = False) -> None:
    root_dir = build_root(case, tmp_path / "root")
    keys = build_key_dir(case.keys, tmp_path / "proc-sys")
    root = Root(root_dir)
    predicted = fates_final(root, flavor, keys, at_boot)
    written = real["written"]
    assert predicted == written, (case.why, case.files, real["stderr"][-2000:])
    # a key some line sets that the fates call unset is one the real program left alone
    config = load_sysctl_config(root, flavor, at_boot=at_boot)  # type: ignore[arg-type]
    for unset in unset_keys(config, line_fates(config, root, keys), keys):
        assert unset.path not in written, (unset.key, unset.fate)


@pytest.mark.parametrize("case,flavor", JOBS, ids=[f"{c.name}-{f}" for c, f in JOBS])
def test_applied_fates_are_what_the_real_program_writes(case, flavor, real_results, tmp_path) -> None:
    _check(case, flavor, real_results[(case.name, flavor)], tmp_path)


@pytest.mark.parametrize("case,flavor", [(c, f) for c in BOOT_CASES for f in c.flavors],
                         ids=[f"{c.name}-{f}" for c in BOOT_CASES for f in c.flavors])
def test_at_boot_run_is_empty(case, flavor, real_results, tmp_path) -> None:
    """The offline root read `at_boot`: /run/sysctl.d is runtime-only, and what the fates apply is what the real
    program writes with /run emptied (as the next boot finds it)."""
    _check(case, flavor, real_results[(case.name + "-boot", flavor)], tmp_path, at_boot=True)
    root = Root(tmp_path / "root")
    config = load_sysctl_config(root, flavor, at_boot=True)  # type: ignore[arg-type]
    run_lines = [f for f in line_fates(config, root) if f.origin.file.startswith("/run/")]
    assert all(f.fate == RUNTIME_ONLY for f in run_lines), run_lines
    with_lines = [p for p, e in case.files.items() if p.startswith("/run/") and isinstance(e, str) and "=" in e]
    assert {f.origin.file for f in run_lines} == set(with_lines)  # every /run file's lines are there to see


def test_the_cases_exercise_every_fate(tmp_path) -> None:
    """Guard: the hand layouts really produce cancelled, shadowed, masked, invalid, never-read lines."""
    seen = set()
    for case in FATE_CASES:
        root_dir = build_root(case, tmp_path / case.name)
        config = load_sysctl_config(Root(root_dir), "systemd", at_boot=True)
        seen |= {f.fate for f in line_fates(config, Root(root_dir), KeyTree.of(set(KEYS)))}
    assert {APPLIED, CANCELLED, RUNTIME_ONLY, "shadowed", "masked", "invalid", "never-read", "overridden", "repeat",
            "excludes"} <= seen, seen
