"""Differential tests: the model against the REAL systemd-sysctl 252 and procps 4.0.2.

All cases x flavours run in one private mount namespace (tests/config/oracle.py); each
test compares the final value of every fake key file with what the model predicts.
"""

from __future__ import annotations

import pytest

from tests.config.corpus import CASES
from tests.config.oracle import (
    build_key_dir,
    build_root,
    host_snapshot,
    model_final,
    model_trace,
    prefixes_of,
    real_trace,
    run_real,
    runs_sorted,
    why_not_runnable,
)

JOBS = [(case, flavor) for case in CASES for flavor in case.flavors]


@pytest.fixture(scope="module")
def real_results():
    reason = why_not_runnable()
    if reason:
        pytest.skip(reason)
    before = host_snapshot()
    results = run_real(JOBS)
    assert host_snapshot() == before, "the oracle changed something on the host"
    return {(case.name, flavor): r for (case, flavor), r in zip(JOBS, results)}


def test_corpus_is_big_enough():
    assert len(CASES) >= 40
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case,flavor", JOBS, ids=[f"{c.name}-{f}" for c, f in JOBS])
def test_model_agrees_with_real_program(case, flavor, real_results, tmp_path):
    real = real_results[(case.name, flavor)]
    root = build_root(case, tmp_path / "root")
    keys = build_key_dir(case.keys, tmp_path / "proc-sys")
    predicted = model_final(root, flavor, keys, prefixes_of(case.args))
    assert predicted == real["written"], f"{case.why}\nreal stderr:\n{real['stderr'][-3000:]}"


@pytest.mark.parametrize("case,flavor", JOBS, ids=[f"{c.name}-{f}" for c, f in JOBS])
def test_model_opens_and_writes_in_the_real_order(case, flavor, real_results, tmp_path):
    """The files opened, in order, and the successful writes, in order, match the real
    program's own log (systemd debug log / procps stdout)."""
    real_opened, real_writes = real_trace(flavor, real_results[(case.name, flavor)])
    root = build_root(case, tmp_path / "root")
    keys = build_key_dir(case.keys, tmp_path / "proc-sys")
    opened, writes = model_trace(root, flavor, keys, prefixes_of(case.args))
    assert opened == real_opened
    assert runs_sorted(writes) == runs_sorted(real_writes)


def test_oracle_leaves_no_mounts(real_results):
    with open("/proc/self/mountinfo") as fh:
        assert "sysctl-doctor-oracle" not in fh.read()


@pytest.mark.parametrize("case,flavor", [j for j in JOBS if not j[0].args],
                         ids=[f"{c.name}-{f}" for c, f in JOBS if not c.args])
def test_explain_names_the_value_the_real_program_wrote(case, flavor, real_results, tmp_path):
    """`explain KEY`'s verdict (the winning line's value, or none) for every key of the case
    equals what the real program left in that key."""
    from sysctl_doctor.config.key_story import key_story
    from sysctl_doctor.config.sysctl_d import load_sysctl_config
    from sysctl_doctor.root import Root

    real = real_results[(case.name, flavor)]["written"]
    root = build_root(case, tmp_path / "root")
    keys = build_key_dir(case.keys, tmp_path / "proc-sys")
    config = load_sysctl_config(Root(root), flavor)
    for key in case.keys:
        if key.endswith("/"):
            continue
        story = key_story(config, key, keys)
        assert story.final_value == real.get(key), (key, story.summary)


@pytest.mark.parametrize("case", [c for c in CASES if "systemd" in c.flavors], ids=lambda c: c.name)
def test_lines_that_are_not_assignments_fail_the_systemd_unit(case, real_results, tmp_path):
    from sysctl_doctor.config.sysctl_d import load_sysctl_config
    from sysctl_doctor.root import Root

    config = load_sysctl_config(Root(build_root(case, tmp_path / "root")), "systemd")
    if any("not an assignment" in d.message for d in config.diagnostics):
        assert real_results[(case.name, "systemd")]["rc"] != 0
