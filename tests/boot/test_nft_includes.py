"""Issue 16 item 15: a missing or looping nft `include` was ignored, while the real `nft -f` fails the whole
ruleset (it loads all or nothing): nothing of it is loaded at boot, no module, no rule.

The model's verdict on each ruleset is checked against the real nft binary (`nft -c -f`, check mode, in a
fresh network namespace)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Dict, Optional

import pytest

from boot.rootfs import copy_incident
from sysctl_doctor.boot.loaders import nft_ruleset_failure
from sysctl_doctor.root import Root

TABLE = "table inet t{n} {{\n  chain c {{\n    type filter hook input priority 0;\n  }}\n}}\n"


def _cases(d: Path) -> Dict[str, Optional[str]]:
    """name -> text of <d>/<name>.nft; what the model must say is in the test."""
    unique = f"sd-no-such-{uuid.uuid4().hex}.nft"  # relative: searched in /etc, where it is not
    return {
        "ok": TABLE.format(n=1) + f'include "{d}/part.nft"\n',
        "part": TABLE.format(n=2),
        "glob-none": TABLE.format(n=3) + f'include "{d}/nothing-*.nft"\n',
        "missing": TABLE.format(n=4) + f'include "{d}/missing.nft"\n',
        "nested-missing": TABLE.format(n=5) + f'include "{d}/missing-inside.nft"\n',
        "missing-inside": f'include "{d}/gone.nft"\n',
        "loop": TABLE.format(n=6) + f'include "{d}/loop-a.nft"\n',
        "loop-a": f'include "{d}/loop-b.nft"\n',
        "loop-b": f'include "{d}/loop-a.nft"\n',
        "relative-beside": TABLE.format(n=7) + f'include "{unique}"\n',
        unique[:-4]: TABLE.format(n=8),  # next to the including file: nft does not look there
    }


EXPECTED_FAILS = {"ok": False, "glob-none": False, "missing": True, "nested-missing": True, "loop": True,
                  "relative-beside": True}


@pytest.fixture(scope="module")
def rulesets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("nft")
    for name, text in _cases(d).items():
        (d / f"{name}.nft").write_text(text)
    return d


@pytest.mark.parametrize("name", sorted(EXPECTED_FAILS))
def test_model_matches_the_real_nft(rulesets: Path, name: str) -> None:
    path = str(rulesets / f"{name}.nft")
    failure = nft_ruleset_failure(Root("/"), path)
    assert (failure is not None) is EXPECTED_FAILS[name], failure
    if os.geteuid() != 0 or shutil.which("nft") is None or shutil.which("unshare") is None:
        pytest.skip("NEEDS root, nft and unshare to compare with the real nft")
    real = subprocess.run(["unshare", "--net", "nft", "-c", "-f", path], capture_output=True, text=True,
                          timeout=60, cwd="/")
    assert (real.returncode != 0) is EXPECTED_FAILS[name], (real.returncode, real.stderr)


def test_check_counts_nothing_from_a_failing_ruleset(tmp_path: Path) -> None:
    root = copy_incident(tmp_path / "r")
    with open(root / "etc/nftables.conf", "a") as conf:
        conf.write('include "/etc/nftables.d/missing.nft"\n')
    proc = subprocess.run([sys.executable, "-m", "sysctl_doctor", "check", "--root", str(root), "--format", "json"],
                          capture_output=True, text=True)
    data = json.loads(proc.stdout)
    entry = next(e for e in data["keys"] if e["key"] == "net.netfilter.nf_conntrack_tcp_be_liberal")
    assert "SD101" not in entry["findings"] and "SD102" in entry["findings"]  # nftables.service loads nothing
    text = subprocess.run([sys.executable, "-m", "sysctl_doctor", "check", "--root", str(root)],
                          capture_output=True, text=True, env={**os.environ, "COLUMNS": "250"}).stdout
    assert "nft -f /etc/nftables.conf fails at boot" in text
    assert 'include "/etc/nftables.d/missing.nft": file not found' in text
    assert "masquerade" not in text.split("Notes", 1)[1]  # no NAT facts from a ruleset that is not loaded
