"""A bounded sample of bench/fuzz.py (issue 16): every parser fed generated inputs — random bytes
and mutations of real samples — with no crash (an exception other than DoctorError) and no hang.
The million-input run and its figures are in the README's reliability section."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

FUZZ = Path(__file__).resolve().parent.parent / "bench" / "fuzz.py"


def _fuzz():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("bench_fuzz", FUZZ)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("seed", [11, 12])
def test_fuzz_sample_has_no_crash_and_no_hang(seed: int) -> None:
    fuzz = _fuzz()
    result = fuzz.run(2500, seed=seed, timeout=5.0, quiet=True)
    assert sum(st["inputs"] for st in result["targets"].values()) == 2500
    assert all(st["inputs"] == 250 for st in result["targets"].values())
    assert result["failures"] == [], result["failures"][:5]
