"""Predicted vs observed, per key and phase (pure): applied, absent, a default known only at boot, a race
won by either side, the late phase for the keys whose module the late loads bring in."""

from __future__ import annotations

from sysctl_doctor.verify.compare import (LOADER_WON, STEP_WON, Predicted, compare, evidence, fates_of,
                                          key_fates, predictions_from, tally_races)
from sysctl_doctor.verify.reporter import BOOT, LATE, LoadResult, Observation, Snapshot

BE = "net.netfilter.nf_conntrack_tcp_be_liberal"


def _p(key="kernel.pid_max", configured="4194304", applied=True, boot=None, boot_absent=False, late=None,
       late_absent=False, verdict="applied", module=None) -> Predicted:
    boot = configured if applied and boot is None else boot
    return Predicted(key, configured, "/etc/sysctl.d/x.conf", 1, module, applied, boot, boot_absent,
                     late if late is not None or late_absent else boot, late_absent, verdict, verdict)


def _seen(boot_values, boot_modules=(), late_values=None, late_modules=()) -> Observation:
    seen = Observation(begun=True, complete=True)
    seen.phases[BOOT] = Snapshot(dict(boot_values), set(), set(boot_modules), 9.0)
    if late_values is not None:
        seen.phases[LATE] = Snapshot(dict(late_values), set(), set(late_modules), 10.0)
    return seen


def test_applied_and_not_applied_keys():
    keys = [_p(), _p("fs.protected_regular", "2", applied=False, boot="0", verdict="unknown")]
    agree = compare(keys, _seen({"kernel.pid_max": "4194304", "fs.protected_regular": "0"}))
    assert [o.agree for o in agree] == [True, True]
    differ = compare(keys, _seen({"kernel.pid_max": "32768", "fs.protected_regular": "2"}))
    assert [o.agree for o in differ] == [False, False]
    assert differ[0].expected == "4194304" and differ[0].observed == "32768"


def test_absent_key_and_a_default_the_kernel_computes():
    never = _p(BE, "1", applied=False, boot=None, boot_absent=True, late="0", verdict="never-loaded",
               module="nf_conntrack")
    computed = _p("net.core.somaxconn", "1", applied=False, boot=None, verdict="value-rejected")
    ok = compare([never, computed], _seen({BE: None, "net.core.somaxconn": "4096"}))
    assert [o.agree for o in ok] == [True, True] and ok[0].observed_text == "absent"
    bad = compare([never, computed], _seen({BE: "0", "net.core.somaxconn": "1"}))
    assert [o.agree for o in bad] == [False, False]


def test_a_race_agrees_with_either_side_and_says_which_won():
    race = _p(BE, "1", applied=False, boot="0", verdict="race", module="nf_conntrack")
    lost = compare([race], _seen({BE: "0"}, {"nf_conntrack"}))[0]
    won = compare([race], _seen({BE: "1"}, {"nf_conntrack"}))[0]
    odd = compare([race], _seen({BE: None}))[0]
    assert (lost.agree, lost.race_side) == (True, STEP_WON)
    assert (won.agree, won.race_side) == (True, LOADER_WON)
    assert not odd.agree and odd.race_side is None
    tally = tally_races([race], [[lost], [won], [lost]])[0]
    assert (tally.boots, tally.loader, tally.step, tally.other) == (3, 1, 2, 0)


def test_late_phase_compares_the_keys_whose_module_came_in_late():
    never = _p(BE, "1", applied=False, boot=None, boot_absent=True, late="0", verdict="never-loaded",
               module="nf_conntrack")
    builtin = _p()
    seen = _seen({BE: None, "kernel.pid_max": "4194304"}, set(),
                 {BE: "0", "kernel.pid_max": "4194304"}, {"nf_conntrack", "nf_defrag_ipv4"})
    late = [o for o in compare([never, builtin], seen) if o.phase == LATE]
    assert [o.agree for o in late] == [True, True]
    assert late[0].note == "nf_conntrack loaded late" and late[1].expected == "unchanged (4194304)"
    # a udev rule that re-applies on load: after_late_load is the configured value
    udev = _p(BE, "1", applied=False, boot=None, boot_absent=True, late="1", verdict="never-loaded",
              module="nf_conntrack")
    assert not [o for o in compare([udev], seen) if o.phase == LATE][0].agree
    changed = _seen({"kernel.pid_max": "4194304"}, (), {"kernel.pid_max": "1000"}, ())
    assert not [o for o in compare([builtin], changed) if o.phase == LATE][0].agree


def test_a_key_the_reporter_did_not_report_differs():
    out = compare([_p()], _seen({}))[0]
    assert not out.agree and "did not report" in out.note


def test_predictions_from_check_json_and_the_analysis_fates():
    class _Verdict(str):
        label = "NOT GUARANTEED (race)"

        @property
        def value(self):
            return str(self)

    class _Prediction:
        key, verdict, chain, boot_value, after_late_load = BE, _Verdict("race"), ["a", "b"], "0", "0"

    document = {"keys": [
        {"key": "net.ipv4.conf.*.rp_filter", "configured": "1", "provider": {"kind": "interface"},
         "boot": {"applied": True, "value": "1"}, "after_late_load": {"value": "1"}},
        {"key": BE, "configured": "1", "file": "/etc/sysctl.conf", "line": 3,
         "provider": {"kind": "module", "module": "nf_conntrack"},
         "boot": {"applied": False, "value": "0"}, "after_late_load": {"value": "0"}},
    ]}
    [p] = predictions_from(document, fates_of([_Prediction()]))
    assert p.key == BE and p.not_guaranteed and p.module == "nf_conntrack" and p.why == ("a", "b")
    assert p.label == "NOT GUARANTEED (race)" and not p.boot_absent


def test_evidence_names_the_key_or_its_module():
    p = _p(BE, "1", applied=False, boot="0", verdict="race", module="nf_conntrack")
    seen = _seen({BE: "0"})
    seen.journal = ["[ 3.1] systemd-sysctl[188]: Couldn't write '1' to 'net/netfilter/nf_conntrack_tcp_be_liberal'",
                    "[ 3.5] kernel: something else", "[ 4.0] systemd-modules-load[1]: Inserted module 'nf_conntrack'"]
    seen.loads = [LoadResult("nf_conntrack", 0, "")]
    assert evidence(p, seen) == [seen.journal[0], seen.journal[2], "modprobe nf_conntrack: rc=0"]


def test_a_key_of_an_interface_the_guest_lacks_is_not_tested():
    eth = Predicted("net.ipv4.conf.eth0/100.rp_filter", "2", "/f", 1, None, True, "2", False, "2", False,
                    "applied-on-hotplug", "applied when the interface appears", (), "interface")
    lo = Predicted("net.ipv4.conf.lo.rp_filter", "0", "/f", 2, None, True, "0", False, "0", False, "applied",
                   "applied", (), "interface")
    out = compare([eth, lo], _seen({"net.ipv4.conf.eth0/100.rp_filter": None, "net.ipv4.conf.lo.rp_filter": None}))
    assert out[0].untested and out[0].agree and "no interface eth0.100" in out[0].note
    assert not out[1].untested and not out[1].agree   # lo always exists: its absence is a real difference


def test_the_real_analysis_of_the_incident_reads_as_a_race():
    """verify reads the Analysis through its public attributes: this holds it to them (a rename fails here)."""
    from pathlib import Path

    from sysctl_doctor.findings.engine import run_check
    from sysctl_doctor.report.json_report import check_to_dict
    from sysctl_doctor.root import root_for_cli

    incident = Path(__file__).resolve().parents[2] / "examples" / "incident"
    report = run_check(root_for_cli(str(incident)))
    predicted = {p.key: p for p in predictions_from(check_to_dict(report), fates_of(key_fates(report.analysis)))}
    be = predicted[BE]
    assert be.not_guaranteed and be.verdict == "race" and be.module == "nf_conntrack" and be.provider_kind == "module"
    assert be.boot_value == "0" and not be.boot_absent and any("nftables.service" in why for why in be.why)
    assert predicted["kernel.pid_max"].verdict == "applied" and predicted["kernel.pid_max"].applied
    assert "net.ipv4.conf.*.rp_filter" not in predicted


# --- real check JSON from real roots (no boot): globs, "-key" exclusions and the unset-key rows

def _check_json(tmp_path, files):
    from sysctl_doctor.findings.engine import run_check
    from sysctl_doctor.report.json_report import check_to_dict
    from sysctl_doctor.root import root_for_cli

    unit = tmp_path / "usr/lib/systemd/system/systemd-sysctl.service"  # a systemd root
    unit.parent.mkdir(parents=True)
    unit.write_text("[Unit]\n")
    for name, text in files.items():
        path = tmp_path / name.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    report = run_check(root_for_cli(str(tmp_path)))
    assert report.analysis.flavor == "systemd"
    document = check_to_dict(report)
    return document, predictions_from(document, fates_of(key_fates(report.analysis)))


def _with_matches(values, matches):
    seen = _seen(values)
    seen.phases[BOOT].matches = matches
    return seen


RP = "net.ipv4.conf.{}.rp_filter"


def test_glob_matches_skip_every_key_a_read_line_names_as_systemd_sysctl_does(tmp_path):
    from sysctl_doctor.verify.compare import globs_from, named_keys

    document, predicted = _check_json(tmp_path, {
        "/etc/sysctl.d/10-a.conf": "net.ipv4.conf.*.rp_filter = 2\n-net.ipv4.conf.lo.rp_filter\n"
                                   "net.ipv4.conf.all.rp_filter = 1\nnet.ipv4.conf.default.rp_filter = 1\n"
                                   "-net.ipv4.conf.default.rp_filter\n"
                                   "net.ipv4.conf.*.accept_local = 1\nnet.ipv4.conf.*.accept_local = 0\n",
        "/etc/sysctl.d/20-b.cfg": "net.ipv4.conf.eth0.rp_filter = 1\n"})  # never read: the glob reaches eth0
    globs = globs_from(document)
    assert [(g.pattern, g.configured, g.line) for g in globs] == [
        ("net.ipv4.conf.*.rp_filter", "2", 1), ("net.ipv4.conf.*.accept_local", "0", 7)]
    assert named_keys(document) == {RP.format("lo"), RP.format("all"), RP.format("default")}
    # what the kernel shows after systemd-sysctl applied this configuration (lo excluded: its default 0;
    # default: assignment cancelled by the later "-key", kernel default 0; eth0 reached by the glob)
    # (check also predicts the glob's concrete rows for all/default/lo, which the reporter reads like any key)
    concrete = {p.key for p in predicted if not any(c in p.key for c in "*?[")}
    seen = _with_matches(
        {RP.format("all"): "1", RP.format("default"): "0",
         **{k: "0" for k in concrete if k.endswith(".accept_local")}},
        {"net.ipv4.conf.*.rp_filter": {RP.format(i): v for i, v in
                                       (("all", "1"), ("default", "0"), ("lo", "0"), ("eth0", "2"))},
         "net.ipv4.conf.*.accept_local": {"net.ipv4.conf.all.accept_local": "0",
                                          "net.ipv4.conf.eth0.accept_local": "0"}})
    out = {(o.key, o.phase): o for o in compare(predicted, seen, globs, named_keys(document))}
    assert (RP.format("lo"), BOOT) not in out  # excluded by "-key": was a false difference (0 vs 2)
    assert out[(RP.format("eth0"), BOOT)].agree and out[(RP.format("all"), BOOT)].agree
    assert out[("net.ipv4.conf.eth0.accept_local", BOOT)].agree  # the later glob line's value, not the first's
    assert [o for o in out.values() if not o.agree] == []
    # the same boot with the exclusion ignored by the kernel side (lo got 2) is no difference of ours either,
    # but a glob match with a wrong value still is one
    seen.phases[BOOT].matches["net.ipv4.conf.*.rp_filter"][RP.format("eth0")] = "0"
    assert [o.key for o in compare(predicted, seen, globs, named_keys(document)) if not o.agree] == [RP.format("eth0")]


def test_unset_rows_compare_with_the_kernel_default_or_are_not_tested(tmp_path):
    _, predicted = _check_json(tmp_path, {
        "/etc/sysctl.d/10-a.conf": f"{BE} = 0\n-{BE}\nnet.ipv4.conf.default.rp_filter = 1\n"
                                   "-net.ipv4.conf.default.rp_filter\n",
        "/etc/sysctl.d/20-b.cfg": "vm.swappiness = 10\n"})
    rows = {p.key: p for p in predicted}
    assert {k: rows[k].fate for k in rows} == {BE: "cancelled", RP.format("default"): "cancelled",
                                               "vm.swappiness": "never-read"}
    assert rows[BE].boot_value == "0" and not rows[BE].applied  # the known default of a module key
    seen = _seen({BE: "0", RP.format("default"): "0", "vm.swappiness": "60"})
    out = {o.key: o for o in compare(predicted, seen)}
    assert out[BE].agree and not out[BE].untested  # configured 0 = kernel default 0: no false difference
    assert out[RP.format("default")].untested and out[RP.format("default")].agree  # default unknown to check
    assert out["vm.swappiness"].untested and "not tested" in out["vm.swappiness"].note
    assert not compare(predicted, _seen({BE: "1", RP.format("default"): "0", "vm.swappiness": "60"}))[0].agree
    unloaded = {o.key: o for o in compare(predicted, _seen({BE: None, RP.format("default"): "0",
                                                            "vm.swappiness": "60"}))}
    assert unloaded[BE].untested and "nf_conntrack is not loaded" in unloaded[BE].note
    # the module loaded and still no key: a real difference, not "not tested"
    loaded = compare(predicted, _seen({BE: None, RP.format("default"): "0", "vm.swappiness": "60"}, {"nf_conntrack"}))
    assert not loaded[0].untested and not loaded[0].agree
