"""Recommendations: kernel-version aware, chain aware, kube-proxy aware — and in agreement with the lab."""

from __future__ import annotations

import os

from sysctl_doctor.conntrack.nat_facts import NatFacts
from sysctl_doctor.findings.registry import advise_all as recommend
from sysctl_doctor.kernel_version import version_or_unknown as kernel_version


def _codes(facts: NatFacts):  # type: ignore[no-untyped-def]
    return [r.code for r in recommend(facts)]


def test_no_nat_no_advice() -> None:
    assert recommend(NatFacts(kernel=(5, 10))) == []


def test_snat_to_node_old_kernel_is_an_error_mentioning_the_retransmission() -> None:
    recs = recommend(NatFacts(kernel=(5, 10), snat_to_node=True, be_liberal=False))
    assert recs[0].code == "CT001" and recs[0].severity == "error"
    assert "SEQ is under the lower bound" in recs[0].text and "INPUT" in recs[0].fix.upper()


def test_snat_to_node_new_kernel_still_warns_for_over_window() -> None:
    recs = recommend(NatFacts(kernel=(6, 18), snat_to_node=True, be_liberal=False))
    assert recs[0].code == "CT001" and recs[0].severity == "warning"
    assert "under the lower bound" not in recs[0].text and "over upper bound" in recs[0].text


def test_forward_rule_does_not_cover_snat_to_node() -> None:
    recs = recommend(NatFacts(kernel=(6, 18), snat_to_node=True, invalid_drop_chains=frozenset({"forward"})))
    assert recs[0].code == "CT001" and "FORWARD does not help" in recs[0].text
    assert _codes(NatFacts(kernel=(6, 18), snat_to_node=True, invalid_drop_chains=frozenset({"input"}))) == []


def test_dnat_wants_forward() -> None:
    assert _codes(NatFacts(kernel=(6, 1), dnat=True)) == ["CT002"]
    assert _codes(NatFacts(kernel=(6, 1), dnat=True, invalid_drop_chains=frozenset({"forward"}))) == []


def test_be_liberal_that_will_not_survive_boot() -> None:
    codes = _codes(NatFacts(kernel=(6, 1), snat_to_node=True, be_liberal=True, be_liberal_after_boot=False))
    assert codes == ["CT003", "CT004"]


def test_kube_proxy_versions() -> None:
    old = recommend(NatFacts(kernel=(5, 10), snat_to_node=True, dnat=True, kube_proxy=(1, 28),
                             invalid_drop_chains=frozenset({"forward"})))
    assert [r.code for r in old] == ["CT001", "CT005"]
    new = recommend(NatFacts(kernel=(5, 10), snat_to_node=True, dnat=True, kube_proxy=(1, 29),
                             kube_proxy_be_liberal_flag=True))
    assert [r.code for r in new] == ["CT004"] and "no INVALID DROP rule" in new[0].text


def test_under_lower_bound_lines_are_harmless_from_6_1() -> None:
    facts = NatFacts(kernel=(6, 1), snat_to_node=True, invalid_drop_chains=frozenset({"input"}),
                     logged_reasons={"seq-under-lower-bound": 3})
    assert _codes(facts) == ["CT006"]
    assert _codes(NatFacts(kernel=(6, 0), snat_to_node=True, invalid_drop_chains=frozenset({"input"}),
                           logged_reasons={"seq-under-lower-bound": 3})) == []


def test_advice_agrees_with_the_lab(lab_report) -> None:  # type: ignore[no-untyped-def]
    """The lab's NAT box is SNAT-to-node: CT001 (reset risk) must be raised exactly for the
    mitigations under which the lab saw the over-window segment break the connection."""
    chains = {"none": frozenset(), "be-liberal": frozenset(), "drop-invalid-input": frozenset({"input"}),
              "drop-invalid-forward": frozenset({"forward"})}
    kernel = kernel_version(os.uname().release)
    for o in lab_report.outcomes:
        if o.scenario != "seq-over-upper-bound":
            continue
        facts = NatFacts(kernel=kernel, snat_to_node=True, be_liberal=o.mitigation == "be-liberal",
                         invalid_drop_chains=chains[o.mitigation])
        assert ("CT001" in _codes(facts)) is (not o.survived), o.mitigation
