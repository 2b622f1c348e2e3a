"""The collection's module and role, run by the real ansible-playbook -c local against scratch roots."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict

import pytest

from cli.console import INCIDENT, console_script
from deploy.ansible_run import COLLECTION, REPO, ansible_env, playbook, recap, result_file, tool

FIX_PLAY = """
- name: Fix a root
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Make module keys survive boot
      sysctl_doctor.core.sysctl_doctor:
        root: "{root}"
        method: "{method}"
        executable: "{exe}"
      register: fixed
    - name: Keep the result for the test
      ansible.builtin.copy:
        content: "{{{{ fixed | to_nice_json }}}}"
        dest: "{out}"
        mode: "0644"
      check_mode: false
      changed_when: false
"""


def _tree(root: Path) -> Dict[str, bytes]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() and not p.is_symlink() else b"<dir or link>")
            for p in sorted(root.rglob("*"))}


def _fix(tmp: Path, root: Path, method: str = "modules-load", *flags: str) -> subprocess.CompletedProcess:
    text = FIX_PLAY.format(root=root, method=method, exe=console_script(), out=tmp / "result.json")
    return playbook(tmp, text, list(flags))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    target = tmp_path / "incident"
    shutil.copytree(INCIDENT, target, symlinks=True)
    return target


def test_check_diff_shows_the_plan_and_writes_nothing(tmp_path: Path, root: Path) -> None:
    before = _tree(root)
    done = _fix(tmp_path, root, "modules-load", "--check", "--diff")
    out = done.stdout.decode()
    assert done.returncode == 0, out + done.stderr.decode()
    assert _tree(root) == before
    assert "--- before: /etc/modules-load.d/sysctl-doctor.conf" in out
    assert "+++ after: /etc/modules-load.d/sysctl-doctor.conf" in out
    assert "\n+nf_conntrack\n" in out
    assert recap(out)["changed"] == 1
    result = result_file(tmp_path)
    assert result["changed"] is True and result["written"] == []
    assert "SD101" in {f["code"] for f in result["findings"]}  # nothing was fixed: the race is still there


def test_a_real_run_fixes_and_a_rerun_changes_nothing(tmp_path: Path, root: Path) -> None:
    first = _fix(tmp_path, root)
    out = first.stdout.decode()
    assert first.returncode == 0, out + first.stderr.decode()
    assert recap(out)["changed"] == 1
    written = root / "etc/modules-load.d/sysctl-doctor.conf"
    assert written.read_text().splitlines()[-1] == "nf_conntrack"
    result = result_file(tmp_path)
    assert [w["path"] for w in result["written"]] == ["/etc/modules-load.d/sysctl-doctor.conf"]
    codes = {f["code"] for f in result["findings"]}
    assert "SD101" not in codes and "SD106" in codes
    be_liberal = [k for k in result["ansible_facts"]["sysctl_doctor"]["keys"]
                  if k["key"] == "net.netfilter.nf_conntrack_tcp_be_liberal"]
    assert be_liberal[0]["boot"] == {"applied": True, "value": "1"}
    assert result["errors_remain"] is False

    again = _fix(tmp_path, root)
    assert again.returncode == 0, again.stdout.decode()
    assert recap(again.stdout.decode())["changed"] == 0
    assert result_file(tmp_path)["changed"] is False


def test_udev_method_writes_the_rule(tmp_path: Path, root: Path) -> None:
    done = _fix(tmp_path, root, "udev")
    assert done.returncode == 0, done.stdout.decode()
    rule = (root / "etc/udev/rules.d/90-sysctl-doctor.rules").read_text()
    assert 'KERNEL=="nf_conntrack"' in rule


def test_exit_2_fails_the_task_with_the_message(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    done = _fix(tmp_path, not_a_dir)
    out = done.stdout.decode()
    assert done.returncode == 2, out
    assert "FAILED!" in out and "error" in out.lower() and str(not_a_dir) in out
    assert recap(out)["failed"] == 1


def test_ansible_lint_is_clean(tmp_path: Path) -> None:
    done = subprocess.run([tool("ansible-lint"), "--offline", "--profile", "production", "--nocolor", "."],
                          cwd=COLLECTION, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env=dict(ansible_env(tmp_path), HOME=str(tmp_path)), timeout=600)
    text = done.stdout.decode() + done.stderr.decode()
    assert done.returncode == 0, text
    assert "Passed" in text, text


def test_the_role_templates_are_the_fleet_units() -> None:
    """The role installs exactly what `sysctl-doctor fleet install-units` would, for its variables."""
    from sysctl_doctor.fleet.shipped import unit_files

    templates = COLLECTION / "roles/sysctl_doctor/templates"
    expected = unit_files("/opt/x/bin/sysctl-doctor", "/srv/textfile")
    for name, text in expected.items():
        rendered = ((templates / f"{name}.j2").read_text().replace("{{ sysctl_doctor_bin }}", "/opt/x/bin/sysctl-doctor")
                    .replace("{{ sysctl_doctor_textfile_dir }}", "/srv/textfile"))
        assert rendered == text, name


ROLE_PLAY = """
- name: Install sysctl-doctor into a scratch prefix
  hosts: localhost
  gather_facts: false
  roles:
    - role: sysctl_doctor.core.sysctl_doctor
      vars:
        sysctl_doctor_source: "{repo}"
        sysctl_doctor_venv: "{prefix}/opt/sysctl-doctor"
        sysctl_doctor_venv_command: "{python} -m venv"
        sysctl_doctor_bin: "{prefix}/usr/local/bin/sysctl-doctor"
        sysctl_doctor_unit_dir: "{prefix}/etc/systemd/system"
        sysctl_doctor_man_dir: "{prefix}/usr/local/share/man/man1"
        sysctl_doctor_bash_completion_dir: "{prefix}/usr/local/share/bash-completion/completions"
        sysctl_doctor_manage_service: false
        sysctl_doctor_system_packages: []
        sysctl_doctor_textfile_dir: "{prefix}/var/lib/prometheus/node-exporter"
"""


def test_the_role_installs_the_command_man_pages_completion_and_timer(tmp_path: Path) -> None:
    python = shutil.which("python3")
    if python is None:
        pytest.skip("NEEDS python3 with venv")
    prefix = tmp_path / "prefix"
    # a wheel, as the role's README says: pip reinstalls a source directory every time (never "ok")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"),
                            str(REPO)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300)
    assert built.returncode == 0, built.stderr.decode()
    (wheel,) = (tmp_path / "dist").glob("sysctl_doctor-*.whl")
    text = ROLE_PLAY.format(repo=wheel, prefix=prefix, python=python)
    first = playbook(tmp_path, text)
    out = first.stdout.decode()
    assert first.returncode == 0, out + first.stderr.decode()
    assert recap(out)["changed"] > 0

    command = prefix / "usr/local/bin/sysctl-doctor"
    ran = subprocess.run([str(command), "check", "--root", str(INCIDENT)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, timeout=120)
    assert ran.returncode == 1 and b"SD101" in ran.stdout, ran.stderr.decode()
    assert (prefix / "usr/local/share/man/man1/sysctl-doctor-conntrack-logs.1").is_file()
    assert (prefix / "usr/local/share/bash-completion/completions/sysctl-doctor").read_text().startswith(
        "_sysctl_doctor_completion()")
    units = prefix / "etc/systemd/system"
    textfile = prefix / "var/lib/prometheus/node-exporter"
    service = (units / "sysctl-doctor-textfile.service").read_text()
    assert f"ExecStart={command} check --format prometheus --textfile-dir {textfile}\n" in service
    wanted = units / "timers.target.wants/sysctl-doctor-textfile.timer"
    assert wanted.is_symlink() and wanted.resolve() == units / "sysctl-doctor-textfile.timer"
    if shutil.which("systemd-analyze"):
        verify = subprocess.run(["systemd-analyze", "verify", "--man=no", str(units / "sysctl-doctor-textfile.service"),
                                 str(units / "sysctl-doctor-textfile.timer")], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, timeout=120)
        assert verify.returncode == 0, verify.stderr.decode()
        assert "sysctl-doctor" not in verify.stderr.decode(), verify.stderr.decode()
    # what the service runs (its ExecStart= line, a plain command): the metrics land in the textfile dir
    exec_line = next(ln for ln in service.splitlines() if ln.startswith("ExecStart="))[len("ExecStart="):]
    ran = subprocess.run(exec_line.split(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300)
    assert ran.returncode in (0, 1), ran.stderr.decode()  # SuccessExitStatus=1
    assert "sysctl_doctor_last_run_success 1" in (textfile / "sysctl_doctor.prom").read_text()

    again = playbook(tmp_path, text)
    assert again.returncode == 0, again.stdout.decode()
    assert recap(again.stdout.decode())["changed"] == 0, again.stdout.decode()


def test_ansible_doc_reads_the_module_documentation(tmp_path: Path) -> None:
    import json

    done = subprocess.run([tool("ansible-doc"), "-j", "sysctl_doctor.core.sysctl_doctor"], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=ansible_env(tmp_path), timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    doc = json.loads(done.stdout)["sysctl_doctor.core.sysctl_doctor"]["doc"]
    assert doc["options"]["root"]["default"] == "/"
    assert doc["options"]["method"]["choices"] == ["modules-load", "udev"]

