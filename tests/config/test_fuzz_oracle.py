"""Randomised differential test: seeded random sysctl.d trees, real programs vs the model.

Complements the hand-written corpus with combinations nobody thought of. The seed is
fixed (and in the test id), so a failure is reproducible: rebuild it with `random_case(seed)`.
"""

from __future__ import annotations

import random

import pytest

from sysctl_doctor.config.key_story import key_story
from sysctl_doctor.config.sysctl_d import load_sysctl_config
from sysctl_doctor.root import Root

from tests.config.oracle import (
    Case,
    build_key_dir,
    build_root,
    model_final,
    model_trace,
    real_trace,
    run_real,
    runs_sorted,
    why_not_runnable,
)

N_CASES = 120
DIRS = ["/etc/sysctl.d", "/run/sysctl.d", "/usr/local/lib/sysctl.d", "/usr/lib/sysctl.d"]
NAMES = ["10-a.conf", "20-b.conf", "20-b.conf", "99-sysctl.conf", ".hidden.conf", "30-c.cfg", "A.conf"]
KEYS = ["k/x", "k/y", "k/a.1/v", "k/b/v", "k/c/v", "k/a/w"]
KEY_TEXT = ["k.x", "k/x", "k.y", "k.a/1.v", "k/a.1/v", "k.*.v", "k.[ab].v", "k.?.w", "k..x", "k.x.", "k.c.v",
            "k.b.v", "k.*", "k.missing", "k.a/1.*", " k.x", "k.{a,b}.*", "k.[xy]", "-k.y"]
VALUES = ["1", "2", "two words", "", "x=y", "3 ", "\xe9"]
ENDINGS = ["\n", "\n", "\n", "\r\n", "\r"]


def random_line(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.08:
        return rng.choice(["# comment", "; k.x = 9", "", "   ", "garbage"])
    key = rng.choice(KEY_TEXT)
    if roll < 0.2:
        return "-" + key
    dash = "-" if rng.random() < 0.15 else ""
    sep = rng.choice([" = ", "=", "\t=\t", " ="])
    return f"{dash}{key}{sep}{rng.choice(VALUES)}"


def random_case(seed: int) -> Case:
    rng = random.Random(seed)
    files = {}
    for _ in range(rng.randint(1, 5)):
        path = f"{rng.choice(DIRS)}/{rng.choice(NAMES)}"
        lines = [random_line(rng) for _ in range(rng.randint(0, 6))]
        body = "".join(line + rng.choice(ENDINGS) for line in lines)
        files[path] = ("null",) if rng.random() < 0.07 else body
    if rng.random() < 0.4:
        files["/etc/sysctl.conf"] = "".join(random_line(rng) + "\n" for _ in range(rng.randint(1, 3)))
        if rng.random() < 0.5:
            files["/etc/sysctl.d/99-sysctl.conf"] = ("link", "../sysctl.conf")
    return Case(f"fuzz-{seed}", files, KEYS)


CASES = [random_case(seed) for seed in range(N_CASES)]
JOBS = [(case, flavor) for case in CASES for flavor in ("systemd", "procps")]


@pytest.fixture(scope="module")
def real_results():
    reason = why_not_runnable()
    if reason:
        pytest.skip(reason)
    return {(case.name, flavor): r for (case, flavor), r in zip(JOBS, run_real(JOBS))}


@pytest.mark.parametrize("case,flavor", JOBS, ids=[f"{c.name}-{f}" for c, f in JOBS])
def test_random_tree_agrees_with_real_program(case, flavor, real_results, tmp_path):
    real = real_results[(case.name, flavor)]
    root = build_root(case, tmp_path / "root")
    keys = build_key_dir(case.keys, tmp_path / "proc-sys")
    assert model_final(root, flavor, keys) == real["written"], (case.files, real["stderr"][-2000:])
    real_opened, real_writes = real_trace(flavor, real)
    opened, writes = model_trace(root, flavor, keys)
    assert opened == real_opened
    assert runs_sorted(writes) == runs_sorted(real_writes)
    # and `explain` names, for every key, the value the real program left there
    config = load_sysctl_config(Root(root), flavor)
    for key in case.keys:
        assert key_story(config, key, keys).final_value == real["written"].get(key), key


def test_fuzz_cases_are_not_trivial(real_results):
    # Guard against a generator that writes nothing: most cases must change some key.
    changed = sum(1 for r in real_results.values() if r["written"])
    assert changed > len(real_results) // 2
