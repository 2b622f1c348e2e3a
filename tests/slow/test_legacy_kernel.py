"""The legacy ("≤ 6.0") conntrack profile against a real Debian 11 kernel 5.10 booted under qemu.

One boot: `sysctl-doctor lab --format json --capture-dir …` runs in the guest (every scenario ×
mitigation), its JSON and pcaps come back over the serial port (legacy_lab.py). Asserted:
- what the real 5.10 kernel does: the "SEQ under lower bound" segment is logged with the old
  wording "SEQ is under the lower bound" as INVALID, the NAT box answers RST and the connection
  breaks without mitigation; be_liberal (and dropping INVALID in INPUT) saves it;
- that the project's models agree with that kernel: the lab's expectation for kernel < 6.1, and
  `conntrack replay` of the guest's own captures with the 5.10 profile gives the injected segment
  the kernel's verdict and message — while the ≥ 6.1 profile would (wrongly, for this kernel) IGNORE it.

Opt-in: `pytest --run-slow tests/slow -k legacy` (or scripts/test-slow.sh -k legacy).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from . import base_root as base_root_module
from .conftest import skip_unless_qemu_can_boot
from .real_boot import BOOT_TIMEOUT

pytestmark = pytest.mark.slow

UNDER = "seq-under-lower-bound"
OVER = "seq-over-upper-bound"


@pytest.fixture(scope="module")
def legacy_run():  # type: ignore[no-untyped-def]
    skip_unless_qemu_can_boot()
    from .legacy_lab import run_legacy_lab
    from .legacy_root import ensure_legacy_root

    try:
        legacy = ensure_legacy_root()
    except Exception as exc:  # kernel_trees.KernelTreeUnavailable: no apt/dpkg-deb, or no Debian mirror
        if type(exc).__name__ in ("KernelTreeUnavailable", "MirrorUnreachable"):
            pytest.skip(f"NEEDS Debian 11's linux-image-5.10 (bullseye, fetched with apt-get download): {exc}")
        raise
    cache = base_root_module.cache_dir()
    workdir = Path(tempfile.mkdtemp(prefix="run-", dir=cache))
    try:
        yield run_legacy_lab(legacy, workdir, cache / "logs", timeout=max(BOOT_TIMEOUT, 900))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _report(run):  # type: ignore[no-untyped-def]
    assert run.boot.exit_code == 0 and run.complete, (
        "the guest did not power off after a complete probe (timeout or crash):\n" + run.explain())
    assert run.uname and run.uname.startswith("5.10."), run.explain()
    assert run.report is not None, "the lab printed no JSON:\n" + run.explain()
    return run.report


def test_the_guest_runs_debian_11_kernel_5_10(legacy_run):
    report = _report(legacy_run)
    assert report["kernel"] == legacy_run.uname
    # Everything was a module on Debian's 5.10 and the lab got it loaded without help from the probe.
    for module in ("nf_conntrack", "nf_nat", "nft_masq", "nf_log_ipv4", "veth"):
        assert legacy_run.modules.get(module) == "loaded", legacy_run.explain()
    assert all(o["error"] is None for o in report["outcomes"]), legacy_run.explain()


def test_seq_under_lower_bound_breaks_the_connection_on_5_10(legacy_run):
    report = _report(legacy_run)
    bare = next(o for o in report["outcomes"] if o["scenario"] == UNDER and o["mitigation"] == "none")
    assert any("SEQ is under the lower bound (already ACKed data retransmitted)" in line
               for line in bare["kernel_lines"]), bare
    assert not any("SEQ is under lower bound" in line for line in bare["kernel_lines"]), bare  # 6.1+ wording
    assert bare["kernel_verdicts"] and set(bare["kernel_verdicts"]) == {"INVALID"}, bare
    assert bare["nat_rst"] and not bare["survived"], bare
    assert bare["counters"].get("invalid", 0) >= 1, bare


def test_mitigations_on_5_10(legacy_run):
    report = _report(legacy_run)
    got = {(o["scenario"], o["mitigation"]): o["survived"] for o in report["outcomes"]}
    assert got == {
        (OVER, "none"): False, (OVER, "be-liberal"): True,
        (OVER, "drop-invalid-input"): True, (OVER, "drop-invalid-forward"): False,
        (UNDER, "none"): False, (UNDER, "be-liberal"): True,
        (UNDER, "drop-invalid-input"): True, (UNDER, "drop-invalid-forward"): False,
    }, legacy_run.explain()
    # ... which is what the lab's model expects for a kernel before 6.1 (exit 0 = every run as expected)
    assert all(o["as_expected"] for o in report["outcomes"]) and legacy_run.rc == 0, legacy_run.explain()


def test_replay_with_the_legacy_profile_agrees_with_the_5_10_kernel(legacy_run):
    pytest.importorskip("sysctl_doctor.conntrack.replay", reason="NEEDS the tcp branch's conntrack replay")
    from sysctl_doctor.conntrack.kernel_log import parse_kernel_log
    from sysctl_doctor.conntrack.profiles import profile_for
    from sysctl_doctor.conntrack.replay import replay_capture
    from sysctl_doctor.lab.mitigations import BY_NAME

    report = _report(legacy_run)
    legacy, modern = profile_for(legacy_run.uname), profile_for("6.1.0")
    checked = 0
    for o in report["outcomes"]:
        name = Path(o["capture"]).name
        assert name in legacy_run.pcaps, (name, sorted(legacy_run.pcaps))
        pcap, injected = str(legacy_run.pcaps[name]), o["injected"]
        sysctls = {k.rsplit("/", 1)[1]: v for k, v in BY_NAME[o["mitigation"]].netns_sysctls.items()}

        def verdict_of(profile):  # type: ignore[no-untyped-def]
            found = [v for v in replay_capture(pcap, profile, sysctls)
                     if v.seq == injected["seq"] and v.length == injected["payload"]]
            assert len(found) == 1, (name, [v.to_json() for v in found])
            return found[0]

        model = verdict_of(legacy)
        logs = parse_kernel_log("".join(line + "\n" for line in o["kernel_lines"]).encode(), "guest")
        kernel = [r for r in logs.records if r.record.int_field("SEQ") == injected["seq"]]
        if model.verdict == "accept":
            assert kernel == [] and model.message is None, (name, o["kernel_lines"])
        else:
            assert len(kernel) == 1, (name, o["kernel_lines"])
            assert kernel[0].reason.verdict == model.verdict.upper(), (name, model.to_json())
            assert kernel[0].record.message == model.message, (name, model.to_json())
        if o["scenario"] == UNDER and o["mitigation"] == "none":
            assert model.verdict == "invalid", model.to_json()
            assert verdict_of(modern).verdict == "ignore"   # the 6.1+ profile would miss this reset
        checked += 1
    assert checked == 8


def test_the_replay_command_with_kernel_5_10_names_the_reset(legacy_run):
    """The same through the command an operator runs on the guest's capture: --kernel 5.10 vs 6.1."""
    import json
    import subprocess
    import sys

    pytest.importorskip("sysctl_doctor.conntrack.replay", reason="NEEDS the tcp branch's conntrack replay")
    report = _report(legacy_run)
    bare = next(o for o in report["outcomes"] if o["scenario"] == UNDER and o["mitigation"] == "none")
    pcap = str(legacy_run.pcaps[Path(bare["capture"]).name])

    def injected(kernel: str):  # type: ignore[no-untyped-def]
        proc = subprocess.run([sys.executable, "-m", "sysctl_doctor", "conntrack", "replay", pcap,
                               "--kernel", kernel, "--format", "json"], capture_output=True, text=True, timeout=120)
        assert proc.returncode in (0, 1), proc.stderr
        found = [p for p in json.loads(proc.stdout)["packets"] if p.get("seq") == bare["injected"]["seq"]]
        assert len(found) == 1, found
        return proc.returncode, found[0]

    rc, legacy = injected("5.10")
    assert rc == 1 and legacy["verdict"] == "invalid", legacy
    assert legacy["message"] == "SEQ is under the lower bound (already ACKed data retransmitted)", legacy
    assert any(legacy["message"] in line for line in bare["kernel_lines"]), bare["kernel_lines"]
    rc, modern = injected("6.1")   # the ≥ 6.1 model would find nothing INVALID in a capture of a reset
    assert rc == 0 and modern["verdict"] == "ignore", modern
