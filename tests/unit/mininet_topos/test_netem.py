from __future__ import annotations

from mininet_topos.netem import judge_probe, probe_name


def test_tc_accepting_netem_means_available() -> None:
    assert judge_probe(0, "").available


def test_missing_sch_netem_is_reported_as_such() -> None:
    probe = judge_probe(2, "Error: Specified qdisc kind is unknown.\n")
    assert not probe.available
    assert "no sch_netem" in probe.reason and "Specified qdisc kind is unknown." in probe.reason


def test_other_failures_are_unavailable_with_the_reason() -> None:
    probe = judge_probe(2, "RTNETLINK answers: Operation not permitted\n")
    assert not probe.available and "Operation not permitted" in probe.reason
    assert "exited with 1" in judge_probe(1, "").reason


def test_probe_interface_names_fit_ifnamsiz() -> None:
    for pid in (1, 4_194_304, 99_999_999):
        assert len(probe_name(pid) + "p") <= 15
