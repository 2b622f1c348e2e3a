"""check --format prometheus against the real consumers: promtool, node_exporter's textfile collector and a
Prometheus server scraping it (both on 127.0.0.1, started and stopped here), plus the shipped alert rules
(`promtool test rules`) and units (`systemd-analyze verify`)."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import urllib.request

import pytest

from fleet.tools import REPO, free_port, lines, need, sysctl_doctor

EXAMPLE = REPO / "examples" / "incident"
KEY = "net.netfilter.nf_conntrack_tcp_be_liberal"


def test_metrics_pass_promtool_and_say_what_boot_loses():
    promtool = need("promtool", "prometheus")
    proc = sysctl_doctor("check", "--root", str(EXAMPLE), "--format", "prometheus")
    assert proc.returncode == 1, proc.stderr
    check = subprocess.run([promtool, "check", "metrics"], input=proc.stdout, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    body = lines(proc.stdout)
    assert f'sysctl_doctor_key_lost_at_boot{{key="{KEY}",module="nf_conntrack",code="SD101"}} 1' in body
    assert 'sysctl_doctor_findings{code="SD101",severity="error"} 1' in body
    assert 'sysctl_doctor_findings{code="SD104",severity="error"} 0' in body  # every code, 0 when clean
    assert "sysctl_doctor_last_run_success 1" in body


def test_textfile_is_written_atomically_and_a_failed_run_says_so(tmp_path):
    out = tmp_path / "textfile"
    out.mkdir()
    proc = sysctl_doctor("check", "--root", str(EXAMPLE), "--format", "prometheus", "--textfile-dir", str(out))
    assert proc.returncode == 1 and proc.stdout == "", proc.stderr
    assert [p.name for p in out.iterdir()] == ["sysctl_doctor.prom"]
    assert (out / "sysctl_doctor.prom").stat().st_mode & 0o777 == 0o644
    failed = sysctl_doctor("check", "--root", str(tmp_path / "no-such-root"), "--format", "prometheus",
                           "--textfile-dir", str(out))
    assert failed.returncode == 2
    text = (out / "sysctl_doctor.prom").read_text()
    assert "sysctl_doctor_last_run_success 0" in text and "sysctl_doctor_build_info" in text
    bad = sysctl_doctor("check", "--root", str(EXAMPLE), "--format", "prometheus", "--textfile-dir", str(tmp_path / "nope"))
    assert bad.returncode == 2 and "not a directory" in bad.stderr and "Traceback" not in bad.stderr
    usage = sysctl_doctor("check", "--root", str(EXAMPLE), "--textfile-dir", str(out))
    assert usage.returncode == 2 and "--format prometheus" in usage.stderr


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read().decode()


def _wait(url: str, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            _get(url)
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{what} did not answer on {url} within {seconds} s")


@pytest.fixture
def exporter(tmp_path):
    binary = need("prometheus-node-exporter", "prometheus-node-exporter")
    textdir = tmp_path / "textfile"
    textdir.mkdir()
    port = free_port()
    proc = subprocess.Popen([binary, f"--web.listen-address=127.0.0.1:{port}", "--collector.disable-defaults",
                             "--collector.textfile", f"--collector.textfile.directory={textdir}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait(f"http://127.0.0.1:{port}/metrics", "node_exporter")
        yield textdir, port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_node_exporter_serves_the_series_and_never_errors_while_rewritten(exporter):
    textdir, port = exporter
    proc = sysctl_doctor("check", "--root", str(EXAMPLE), "--format", "prometheus", "--textfile-dir", str(textdir))
    assert proc.returncode == 1, proc.stderr
    scraped = _get(f"http://127.0.0.1:{port}/metrics")
    assert f'sysctl_doctor_key_lost_at_boot{{code="SD101",key="{KEY}",module="nf_conntrack"}} 1' in scraped
    assert "node_textfile_scrape_error 0" in scraped

    from sysctl_doctor.fleet.textfile import write_textfile

    text = (textdir / "sysctl_doctor.prom").read_text()
    errors, scrapes, stop = [], [0], threading.Event()

    def scrape():
        while not stop.is_set():
            body = _get(f"http://127.0.0.1:{port}/metrics")
            scrapes[0] += 1
            if "node_textfile_scrape_error 0" not in body or "sysctl_doctor_build_info" not in body:
                errors.append(body[-500:])

    thread = threading.Thread(target=scrape)
    thread.start()
    try:
        for i in range(1000):
            write_textfile(str(textdir), text.replace("sysctl_doctor_last_run_duration_seconds 0",
                                                      f"sysctl_doctor_last_run_duration_seconds {i}"))
    finally:
        stop.set()
        thread.join(timeout=30)
    assert scrapes[0] > 10, "the scraper ran while the file was rewritten"
    assert errors == []
    assert sorted(p.name for p in textdir.iterdir()) == ["sysctl_doctor.prom"]  # no temporary file left


def test_prometheus_scrapes_and_answers_queries(exporter, tmp_path):
    binary = need("prometheus", "prometheus")
    textdir, exporter_port = exporter
    assert sysctl_doctor("check", "--root", str(EXAMPLE), "--format", "prometheus",
                         "--textfile-dir", str(textdir)).returncode == 1
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: [{REPO / 'src/sysctl_doctor/data/fleet/sysctl-doctor.rules.yml'}]\n"
        "scrape_configs:\n"
        f"  - job_name: node\n    static_configs: [{{targets: ['127.0.0.1:{exporter_port}']}}]\n")
    proc = subprocess.Popen([binary, f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait(f"http://127.0.0.1:{port}/-/ready", "prometheus", 60)
        query = f"http://127.0.0.1:{port}/api/v1/query?query=sysctl_doctor_key_lost_at_boot"
        deadline, result = time.monotonic() + 60, []
        while time.monotonic() < deadline and not result:
            result = json.loads(_get(query))["data"]["result"]
            time.sleep(0.5)
        assert [r["metric"]["key"] for r in result] == [KEY]
        assert result[0]["metric"]["job"] == "node" and result[0]["value"][1] == "1"
        rules = json.loads(_get(f"http://127.0.0.1:{port}/api/v1/rules"))["data"]["groups"]
        assert {r["name"] for g in rules for r in g["rules"]} >= {"SysctlLostAtBoot", "SysctlDoctorStale"}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


RULE_TESTS = """
rule_files: [{rules}]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'sysctl_doctor_key_lost_at_boot{{instance="node-7",key="{key}",module="nf_conntrack",code="SD101"}}'
        values: '1x60'
      - series: 'sysctl_doctor_key_drift{{instance="node-7",key="net.ipv4.ip_forward"}}'
        values: '1x180'
      - series: 'node_nf_conntrack_stat_invalid{{instance="node-7"}}'
        values: '0+600x60'
      - series: 'node_nf_conntrack_stat_invalid{{instance="node-8"}}'
        values: '0+6x60'
      - series: 'sysctl_doctor_last_run_timestamp_seconds{{instance="node-7"}}'
        values: '0x300'
      - series: 'sysctl_doctor_last_run_success{{instance="node-9"}}'
        values: '0x60'
      - series: 'sysctl_doctor_conntrack_log_messages_total{{instance="node-7",reason="seq-over-upper-bound",verdict="INVALID"}}'
        values: '0x20 3x40'
      - series: 'sysctl_doctor_conntrack_log_messages_total{{instance="node-7",reason="seq-under-lower-bound",verdict="IGNORE"}}'
        values: '0+5x60'
    alert_rule_test:
      - eval_time: 20m
        alertname: SysctlLostAtBoot
        exp_alerts: []
      - eval_time: 45m
        alertname: SysctlLostAtBoot
        exp_alerts:
          - exp_labels: {{severity: warning, instance: node-7, key: "{key}", module: nf_conntrack, code: SD101}}
            exp_annotations:
              summary: "{key} will not be applied at the next boot on node-7"
              description: "sysctl-doctor predicts that {key} (module nf_conntrack, finding SD101) is lost or not guaranteed at the next boot. Run `sysctl-doctor explain {key}` on the node and `sysctl-doctor fix` to load the module before systemd-sysctl."
      - eval_time: 150m
        alertname: SysctlDrift
        exp_alerts:
          - exp_labels: {{severity: info, instance: node-7, key: net.ipv4.ip_forward}}
            exp_annotations:
              summary: "net.ipv4.ip_forward on node-7 differs from what the next boot sets"
              description: "The live value was changed by hand or by a service; the next reboot will change it back."
      - eval_time: 40m
        alertname: ConntrackInvalidRising
        exp_alerts:
          - exp_labels: {{severity: warning, instance: node-7}}
            exp_annotations:
              summary: "conntrack marks 10 packets/s INVALID on node-7"
              description: "INVALID packets are climbing (node_exporter's conntrack counters). Run `sysctl-doctor conntrack logs` and `sysctl-doctor conntrack stats` on the node to see which reason, and whether be_liberal applies."
      - eval_time: 15m
        alertname: ConntrackInvalidLogged
        exp_alerts: []
      - eval_time: 30m
        alertname: ConntrackInvalidLogged
        exp_alerts:
          - exp_labels: {{severity: warning, instance: node-7, reason: seq-over-upper-bound}}
            exp_annotations:
              summary: "conntrack logged 3 INVALID seq-over-upper-bound packets in 30m on node-7"
              description: "The kernel log shows INVALID packets (nf_conntrack_log_invalid / nf_log). Run `sysctl-doctor conntrack logs` on the node for the flows and `sysctl-doctor explain CT001` for what they mean."
      - eval_time: 40m
        alertname: SysctlDoctorStale
        exp_alerts:
          - exp_labels: {{severity: warning, instance: node-9}}
            exp_annotations:
              summary: "sysctl-doctor has not reported successfully on node-9"
              description: "The timer is not running, or `check` fails (exit 2): see journalctl -u sysctl-doctor-textfile."
      - eval_time: 240m
        alertname: SysctlDoctorStale
        exp_alerts:
          - exp_labels: {{severity: warning, instance: node-7}}
            exp_annotations:
              summary: "sysctl-doctor has not reported successfully on node-7"
              description: "The timer is not running, or `check` fails (exit 2): see journalctl -u sysctl-doctor-textfile."
"""


def test_alert_rules_pass_promtool_tests(tmp_path):
    promtool = need("promtool", "prometheus")
    rules = REPO / "src/sysctl_doctor/data/fleet/sysctl-doctor.rules.yml"
    assert subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True).returncode == 0
    spec = tmp_path / "tests.yml"
    spec.write_text(RULE_TESTS.format(rules=rules, key=KEY))
    proc = subprocess.run([promtool, "test", "rules", str(spec)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    wrong = tmp_path / "wrong.yml"  # the same tests fail against a rule file that lost an alert
    broken = tmp_path / "broken.rules.yml"
    broken.write_text(rules.read_text().replace("alert: SysctlDrift", "alert: SysctlDriftRenamed"))
    wrong.write_text(RULE_TESTS.format(rules=broken, key=KEY))
    assert subprocess.run([promtool, "test", "rules", str(wrong)], capture_output=True).returncode != 0


def test_units_install_into_a_root_and_pass_systemd_analyze(tmp_path):
    analyze = need("systemd-analyze", "systemd")
    root = tmp_path / "root"
    root.mkdir()
    proc = sysctl_doctor("fleet", "install-units", "--root", str(root), "--binary", "/usr/bin/sysctl-doctor",
                         "--textfile-dir", "/var/lib/prometheus/node-exporter")
    assert proc.returncode == 0, proc.stderr
    units = root / "etc/systemd/system"
    service = (units / "sysctl-doctor-textfile.service").read_text()
    assert "ExecStart=/usr/bin/sysctl-doctor check --format prometheus --textfile-dir /var/lib/prometheus/node-exporter" in service
    assert "ProtectSystem=strict" in service and "ReadWritePaths=/var/lib/prometheus/node-exporter" in service
    # systemd-analyze verify wants the ExecStart binary to exist: point it at a real one for the check
    verify_dir = tmp_path / "verify"
    verify_dir.mkdir()
    (verify_dir / "sysctl-doctor-textfile.service").write_text(service.replace("/usr/bin/sysctl-doctor", shutil.which("true")))
    shutil.copy(units / "sysctl-doctor-textfile.timer", verify_dir)
    out = subprocess.run([analyze, "verify", str(verify_dir / "sysctl-doctor-textfile.service"),
                          str(verify_dir / "sysctl-doctor-textfile.timer")], capture_output=True, text=True)
    complaints = [line for line in (out.stdout + out.stderr).splitlines() if "sysctl-doctor-textfile" in line]
    assert out.returncode == 0 and complaints == [], out.stdout + out.stderr
    bad = sysctl_doctor("fleet", "install-units", "--root", str(root), "--textfile-dir", "relative/dir")
    assert bad.returncode == 2 and "absolute path" in bad.stderr
