"""Host learning: a rebuilt testbed's hosts (new MACs) stay the declared hosts; stale sightings expire."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st
from netmodel_helpers import EA1, EB1, example_state

from netmodel import events as ev
from netmodel.ids import HostId, PortNo, SwitchId
from netmodel.state import HOST_SEEN_REFRESH_S, HOST_TTL_S, FabricState, expired_hosts, learning_due
from netmodel.types import Attachment, frozen_map

U1 = HostId("u1")


def u1_port() -> Attachment:
    attachment = example_state().hosts[U1].attachment
    assert attachment is not None
    return attachment


def learned(state: FabricState, mac: str, ip: str, at: float, where: Attachment | None = None) -> FabricState:
    return state.apply(ev.HostLearned(mac, ip, where or u1_port(), at))


def test_a_rebuilt_host_with_a_new_mac_is_still_the_declared_host() -> None:
    """The fabric file gives u1 no MAC; the testbed is rebuilt under a running controller."""
    first = learned(example_state(), "02:aa:00:00:00:01", "10.0.1.1", 1.0)
    rebuilt = learned(first, "02:bb:00:00:00:02", "10.0.1.1", 50.0)
    assert rebuilt.generation == first.generation + 1
    assert rebuilt.hosts[U1].mac == "02:bb:00:00:00:02" and rebuilt.hosts[U1].attachment == u1_port()
    assert set(rebuilt.hosts) == set(example_state().hosts)  # no host named by its MAC
    assert rebuilt.hosts_seen_at == {}
    # ... and the old MAC, if it shows up again at that address, is u1 again (not a phantom either).
    back = learned(rebuilt, "02:aa:00:00:00:01", "10.0.1.1", 60.0)
    assert back.hosts[U1].mac == "02:aa:00:00:00:01" and set(back.hosts) == set(example_state().hosts)


def test_a_rebuilt_host_on_another_port_is_still_the_declared_host() -> None:
    first = learned(example_state(), "02:aa:00:00:00:01", "10.0.1.1", 1.0)
    elsewhere = Attachment(SwitchId(EA1), PortNo(9))
    moved = learned(first, "02:cc:00:00:00:03", "10.0.1.1", 2.0, elsewhere)
    assert moved.hosts[U1].attachment == elsewhere and set(moved.hosts) == set(example_state().hosts)


def test_a_phantom_left_from_before_is_forgotten_when_the_declared_host_is_seen() -> None:
    phantom = HostId("02:bb:00:00:00:02")
    first = learned(example_state(), "02:aa:00:00:00:01", "10.0.1.1", 1.0)
    ghost = replace(first.hosts[U1], id=phantom, mac=str(phantom), declared=False, mac_learned=False)
    state = replace(first, hosts=frozen_map({**first.hosts, phantom: ghost}), hosts_seen_at=frozen_map({phantom: 1.0}))
    after = learned(state, str(phantom), "10.0.1.1", 5.0)
    assert phantom not in after.hosts and phantom not in after.hosts_seen_at
    assert after.hosts[U1].mac == str(phantom)


def test_an_undeclared_host_whose_address_moved_to_another_mac_is_forgotten() -> None:
    where = Attachment(SwitchId(EB1), PortNo(8))
    state = learned(example_state(), "02:cc:00:00:00:07", "10.0.3.77", 1.0, where)
    state = learned(state, "02:dd:00:00:00:08", "10.0.3.77", 2.0, where)
    assert HostId("02:cc:00:00:00:07") not in state.hosts and HostId("02:dd:00:00:00:08") in state.hosts
    assert set(state.hosts_seen_at) == {HostId("02:dd:00:00:00:08")}


def test_hosts_seen_without_an_address_do_not_displace_each_other() -> None:
    where = Attachment(SwitchId(EB1), PortNo(8))
    state = learned(example_state(), "02:cc:00:00:00:07", "", 1.0, where)
    state = learned(state, "02:dd:00:00:00:08", "", 2.0, where)
    assert {HostId("02:cc:00:00:00:07"), HostId("02:dd:00:00:00:08")} <= set(state.hosts)


def test_undeclared_hosts_expire_declared_hosts_never_do() -> None:
    where = Attachment(SwitchId(EB1), PortNo(8))
    state = learned(example_state(), "02:AA:00:00:00:01", "10.0.1.1", 0.0)  # u1, declared
    state = learned(state, "02:cc:00:00:00:07", "10.0.3.77", 100.0, where)
    stranger = HostId("02:cc:00:00:00:07")
    assert state.hosts_seen_at == {stranger: 100.0}
    assert expired_hosts(state, 100.0 + HOST_TTL_S) == ()
    assert state.apply(ev.HostsExpired(100.0 + HOST_TTL_S)) is state
    assert expired_hosts(state, 101.0 + HOST_TTL_S) == (stranger,)
    after = state.apply(ev.HostsExpired(101.0 + HOST_TTL_S))
    assert after.generation == state.generation + 1
    assert stranger not in after.hosts and after.hosts_seen_at == {}
    assert after.hosts[U1] == state.hosts[U1]
    assert after.apply(ev.HostsExpired(1e9)) is after  # nothing undeclared left: declared ones stay


def test_a_talking_undeclared_host_is_refreshed_not_expired() -> None:
    where = Attachment(SwitchId(EB1), PortNo(8))
    mac = "02:cc:00:00:00:07"
    state = learned(example_state(), mac, "10.0.3.77", 100.0, where)
    assert not learning_due(state, mac, 100.0 + HOST_SEEN_REFRESH_S - 1)
    assert learned(state, mac, "10.0.3.77", 101.0, where) is state  # a repeat is no news
    assert learning_due(state, mac.upper(), 100.0 + HOST_SEEN_REFRESH_S)
    later = 100.0 + HOST_SEEN_REFRESH_S
    refreshed = learned(state, mac, "10.0.3.77", later, where)
    assert refreshed.hosts_seen_at[HostId(mac)] == later
    assert expired_hosts(refreshed, 101.0 + HOST_TTL_S) == ()
    # Unknown (or expired) MACs are always news; a declared host's sightings never need refreshing.
    assert learning_due(state, "02:ee:00:00:00:01", 0.0)
    declared = learned(example_state(), "02:aa:00:00:00:01", "10.0.1.1", 1.0)
    assert not learning_due(declared, "02:aa:00:00:00:01", 1e9)


# -- properties: testbeds rebuilt any number of times -------------------------------------------------

DECLARED = sorted(example_state().hosts.values(), key=lambda h: h.id)
mac_octet = st.integers(1, 40)
sightings = st.lists(
    st.tuples(st.sampled_from(range(len(DECLARED))), mac_octet, st.floats(0, 2 * HOST_TTL_S, allow_nan=False)),
    max_size=30,
)


@settings(max_examples=150, deadline=None)
@given(sightings)
def test_declared_hosts_are_never_duplicated_by_rebuilds(events: list[tuple[int, int, float]]) -> None:
    """Whatever MACs the declared hosts come back with, at their declared addresses and ports: no
    undeclared host appears, and each declared host has the MAC it was last seen with."""
    state = example_state()
    last_mac: dict[HostId, str] = {}
    used_by: dict[str, HostId] = {}
    for index, octet, at in sorted(events, key=lambda e: e[2]):
        host = DECLARED[index]
        mac = f"02:00:00:00:{index:02x}:{octet:02x}"  # MACs are per host: a MAC is never shared
        assert used_by.setdefault(mac, host.id) == host.id
        assert host.attachment is not None
        state = state.apply(ev.HostLearned(mac, host.ip, host.attachment, at))
        last_mac[host.id] = mac
        assert all(h.declared for h in state.hosts.values())
        assert set(state.hosts) == set(example_state().hosts)
    for host_id, mac in last_mac.items():
        assert state.hosts[host_id].mac == mac
    assert state.apply(ev.HostsExpired(1e12)) is state
