"""verify's text and JSON from a VerifyResult (pure): a race over three boots, a boot that failed."""

from __future__ import annotations

from pathlib import Path

from sysctl_doctor.verify.compare import Predicted, compare
from sysctl_doctor.verify.qemu import BootRun
from sysctl_doctor.verify.render import render_text, to_dict
from sysctl_doctor.verify.reporter import parse_report
from sysctl_doctor.verify.run import BootOutcome, VerifyResult, guest_cmdline

BE = "net.netfilter.nf_conntrack_tcp_be_liberal"
PREDICTED = [
    Predicted(BE, "1", "/etc/sysctl.d/99-sysctl.conf", 71, "nf_conntrack", False, "0", False, "0", False, "race",
              "NOT GUARANTEED (race)", ("nf_conntrack loaded by nftables.service", "not guaranteed")),
    Predicted("net.ipv4.ip_forward", "1", "/etc/sysctl.d/99-sysctl.conf", 72, None, True, "1", False, "1", False,
              "applied", "applied"),
]


def _boot(number: int, be_value: str) -> BootOutcome:
    lines = ["SDVERIFY BEGIN", "SDVERIFY uptime boot 40.5", f"SDVERIFY value boot {BE}={be_value}",
             "SDVERIFY value boot net.ipv4.ip_forward=1", "SDVERIFY module boot nf_conntrack",
             "SDVERIFY journal [ 29.4] sdguest systemd-sysctl[188]: Couldn't write '1' to "
             "'net/netfilter/nf_conntrack_tcp_be_liberal', ignoring: No such file or directory",
             "SDVERIFY END"]
    seen = parse_report(lines)
    run = BootRun(Path("/c"), Path("/p"), 55.0, 0, "tcg")
    return BootOutcome(number, run, seen, compare(PREDICTED, seen))


def _result(boots) -> VerifyResult:
    return VerifyResult("/r", "6.1.0-50-amd64", "systemd", "tcg", "SYSCTL_DOCTOR_ACCEL=tcg", "", [], PREDICTED,
                        boots, 4.7)


def test_a_race_over_three_boots():
    result = _result([_boot(1, "0"), _boot(2, "1"), _boot(3, "0")])
    assert result.status == "agree"
    text = render_text(result)
    assert "race: sysctl step first: value lost (2 of 3); loader first: value applied (1 of 3)" in text
    assert (f"  {BE}: loader first (value applied) 1 of 3 boots, sysctl step first (value lost) 2 of 3") in text
    assert "Couldn't write '1'" in text and "result: every key agrees with the prediction over 3 boot(s) (exit 0)" in text
    doc = to_dict(result)
    assert doc["races"] == [{"key": BE, "loader_first": 1, "sysctl_step_first": 2, "neither": 0, "boots": 3}]
    assert doc["keys"][0]["observed"]["boot"] == ["0", "1", "0"] and doc["keys"][0]["agree"] is True


def test_a_key_that_differs_and_a_failed_boot():
    differ = _result([_boot(1, "1")])
    differ.predicted = [PREDICTED[1]]
    differ.boots[0].outcomes = compare([Predicted("net.ipv4.ip_forward", "0", "/f", 1, None, True, "0", False, "0",
                                                  False, "applied", "applied")], differ.boots[0].observation)
    assert differ.status == "differ" and "DIFFERS" in render_text(differ)
    failed = BootOutcome(1, BootRun(Path("/c"), Path("/p"), 420.0, None, "tcg"), parse_report([]), [],
                         "no power-off within 420 s (the reporter never ran)", ["[ 3.0] Kernel panic - not syncing"])
    result = _result([failed])
    assert result.status == "boot-failed"
    text = render_text(result)
    assert "BOOT 1 FAILED: no power-off within 420 s" in text and "  [ 3.0] Kernel panic - not syncing" in text
    assert to_dict(result)["boots"][0]["console_tail"] == ["[ 3.0] Kernel panic - not syncing"]


def test_the_guest_boots_with_the_roots_own_words_not_the_boot_loaders():
    assert guest_cmdline("BOOT_IMAGE=/vmlinuz root=UUID=x ro quiet modules_load=nf_conntrack "
                         "console=tty0 sysctl.kernel.pid_max=1") == "modules_load=nf_conntrack sysctl.kernel.pid_max=1"


def test_a_globs_matches_get_their_own_rows():
    from sysctl_doctor.verify.compare import GlobLine

    lines = ["SDVERIFY BEGIN", f"SDVERIFY value boot {BE}=0", "SDVERIFY value boot net.ipv4.ip_forward=1",
             "SDVERIFY match boot net.ipv4.conf.*.rp_filter net.ipv4.conf.all.rp_filter=1",
             "SDVERIFY match boot net.ipv4.conf.*.rp_filter net.ipv4.conf.default.rp_filter=0", "SDVERIFY END"]
    seen = parse_report(lines)
    glob = GlobLine("net.ipv4.conf.*.rp_filter", "1", "/etc/sysctl.d/10-hardening.conf", 7)
    boot = BootOutcome(1, BootRun(Path("/c"), Path("/p"), 50.0, 0, "tcg"), seen, compare(PREDICTED, seen, [glob]))
    result = _result([boot])
    assert result.status == "differ" and [o.key for o in result.differing] == ["net.ipv4.conf.default.rp_filter"]
    text = render_text(result)
    assert "net.ipv4.conf.all.rp_filter      1          1           agrees: matched by net.ipv4.conf.*.rp_filter" in text
    assert to_dict(result)["glob_matches"][1]["agree"] is False
