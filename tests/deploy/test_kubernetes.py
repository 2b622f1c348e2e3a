"""The DaemonSet manifests validate against the Kubernetes schemas, keep the audit profile, and the image
run under podman with the DaemonSet's own mounts and flags gives the host's `check` result."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

from cli.console import run_cli
from deploy.image import REPO, built_image, run_container

K8S = REPO / "deploy" / "kubernetes"
AUDIT = K8S / "base" / "sysctl-doctor.yaml"
DEBUG = K8S / "debug" / "sysctl-doctor-debug.yaml"
KUBERNETES_VERSIONS = ("1.29.0", "1.33.0")


def _validator() -> str:
    exe = Path(sys.executable).parent / "kubernetes-validate"
    if not exe.exists():
        pytest.skip("NEEDS kubernetes-validate: pip install -e '.[deploy]'")
    return str(exe)


def _validate(path: Path, version: str) -> subprocess.CompletedProcess:
    return subprocess.run([_validator(), "--strict", "-k", version, str(path)], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, timeout=300)


def _docs(path: Path) -> List[dict]:
    yaml = pytest.importorskip("yaml", reason="NEEDS PyYAML (the [deploy] extra): pip install -e '.[deploy]'")
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _daemonset(path: Path, name: str) -> dict:
    return next(d for d in _docs(path) if d["kind"] == "DaemonSet" and d["metadata"]["name"] == name)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_validate_strictly(version: str) -> None:
    for path in (AUDIT, DEBUG):
        done = _validate(path, version)
        out = done.stdout.decode()
        assert done.returncode == 0, out
        assert "did not validate" not in out and "passed for resource daemonset" in out, out


def test_the_validator_rejects_a_misspelt_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(AUDIT.read_text().replace("hostNetwork:", "hostNetwrok:"))
    done = _validate(bad, KUBERNETES_VERSIONS[0])
    assert done.returncode != 0 and "hostNetwrok" in done.stdout.decode()


def test_kustomize_renders_the_profiles(tmp_path: Path) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None or subprocess.run([kubectl, "kustomize", "--help"], capture_output=True).returncode != 0:
        pytest.skip("NEEDS kubectl with kustomize (Debian: kubernetes-client)")
    for overlay, names in (("base", {"sysctl-doctor"}), ("debug", {"sysctl-doctor", "sysctl-doctor-debug"})):
        done = subprocess.run([kubectl, "kustomize", str(K8S / overlay)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=120)
        assert done.returncode == 0, done.stderr.decode()
        rendered = tmp_path / f"{overlay}.yaml"
        rendered.write_bytes(done.stdout)
        assert {d["metadata"]["name"] for d in _docs(rendered) if d["kind"] == "DaemonSet"} == names
        checked = _validate(rendered, KUBERNETES_VERSIONS[0])
        assert checked.returncode == 0, checked.stdout.decode()


def test_the_audit_profile_is_the_least_privileged_one() -> None:
    spec = _daemonset(AUDIT, "sysctl-doctor")["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    ctx = container["securityContext"]
    assert spec["hostNetwork"] is True and spec["hostPID"] is True
    # uid 0 for the textfile directory's owner bits, with no capability at all
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert ctx["readOnlyRootFilesystem"] is True and ctx["allowPrivilegeEscalation"] is False
    assert "privileged" not in ctx and spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert mounts["/host"]["readOnly"] is True and volumes[mounts["/host"]["name"]]["hostPath"]["path"] == "/"
    writable = [p for p, m in mounts.items() if "hostPath" in volumes[m["name"]] and not m.get("readOnly")]
    assert writable == ["/textfile"]
    assert volumes[mounts["/textfile"]["name"]]["hostPath"]["path"] == "/var/lib/prometheus/node-exporter"
    assert spec["automountServiceAccountToken"] is False
    debug = _daemonset(DEBUG, "sysctl-doctor-debug")["spec"]["template"]["spec"]["containers"][0]
    assert debug["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN", "SYSLOG"]}


def _host_check() -> dict:
    host = run_cli(["check", "--format", "json"])
    assert host.returncode in (0, 1), host.stderr.decode()
    return {"exit": host.returncode, **json.loads(host.stdout)}


def _one_run(path: Path, name: str, tmp_path: Path) -> dict:
    ds = _daemonset(path, name)
    spec = ds["spec"]["template"]["spec"]
    done = run_container(built_image(), spec, spec["containers"][0], tmp_path, env={"SYSCTL_DOCTOR_INTERVAL": "0"})
    lines = done.stdout.decode().splitlines()
    assert len(lines) == 1, done.stdout.decode() + done.stderr.decode()
    result = json.loads(lines[0])
    assert done.returncode == result["exit"], done.stderr.decode()
    return result


def _metrics(text: str) -> dict:
    """Series -> value, without the run's own time and duration."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            if not series.startswith(("sysctl_doctor_last_run_timestamp", "sysctl_doctor_last_run_duration")):
                out[series] = value
    return out


def test_the_image_under_the_audit_profile_gives_the_hosts_check(tmp_path: Path) -> None:
    """All but the conntrack rules: without CAP_NET_ADMIN the running rules cannot be read (see below).
    The textfile lands in the hostPath (here a scratch directory) as `check --format prometheus` writes it."""
    pod = _one_run(AUDIT, "sysctl-doctor", tmp_path)
    host = _host_check()
    host["findings"] = [f for f in host["findings"] if not f["code"].startswith("CT")]
    host["exit"] = int(any(f["severity"] == "error" for f in host["findings"]))
    assert [f for f in pod["findings"] if f["code"].startswith("CT")] == []
    assert pod == host
    written = (tmp_path / "var_lib_prometheus_node-exporter" / "sysctl_doctor.prom").read_text()
    expected = run_cli(["check", "--format", "prometheus"]).stdout.decode()
    ours = {k: v for k, v in _metrics(written).items() if 'code="CT' not in k}
    theirs = {k: v for k, v in _metrics(expected).items() if 'code="CT' not in k}
    assert ours == theirs and ours["sysctl_doctor_last_run_success"] == "1"


def test_the_image_under_the_debug_profile_gives_the_hosts_check(tmp_path: Path) -> None:
    assert _one_run(DEBUG, "sysctl-doctor-debug", tmp_path) == _host_check()


def test_only_the_debug_profile_reads_the_running_rules(tmp_path: Path) -> None:
    """CAP_NET_ADMIN is what `nft list ruleset` needs: without it the CT rules are skipped, with a note."""
    if shutil.which("nft") is None:
        pytest.skip("NEEDS nft on the host for the comparison")
    skipped = "NAT recommendations (CT rules) skipped: cannot read the running rules"
    args = ["check", "--root", "/host", "--live"]
    for path, name, expect_skip in ((AUDIT, "sysctl-doctor", True), (DEBUG, "sysctl-doctor-debug", False)):
        spec = _daemonset(path, name)["spec"]["template"]["spec"]
        done = run_container(built_image(), spec, spec["containers"][0], tmp_path, args=args)
        text = done.stdout.decode()
        assert done.returncode in (0, 1), text + done.stderr.decode()
        assert (skipped in text) is expect_skip, text
    host = run_cli(["check"]).stdout.decode()
    assert skipped not in host
