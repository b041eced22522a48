"""sdnctl/roles.py: which role each switch is asked for, what it granted, and when this controller may
write. Pure: requests out, replies and refusals in."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdnctl.roles import (
    GENERATION_MODULUS,
    Mastership,
    RoleRequest,
    SwitchRoles,
    generation_difference,
    is_newer,
    max_generation,
)

U64 = st.integers(0, GENERATION_MODULUS - 1)


def test_generation_ids_compare_as_signed_64_bit_differences() -> None:
    assert generation_difference(3, 2) == 1 and generation_difference(2, 3) == -1
    assert is_newer(0, GENERATION_MODULUS - 1), "0 comes right after the largest id (wrap-around)"
    assert not is_newer(GENERATION_MODULUS - 1, 0)
    assert is_newer(5, 5) is False
    assert max_generation(GENERATION_MODULUS - 2, 1) == 1


@given(U64, st.integers(1, (1 << 63) - 1))
def test_any_id_a_step_later_is_newer(a: int, step: int) -> None:
    b = (a + step) % GENERATION_MODULUS
    assert is_newer(b, a) and not is_newer(a, b)
    assert generation_difference(b, a) == step


def test_a_generation_id_outside_64_bits_is_refused() -> None:
    with pytest.raises(ValueError, match="unsigned 64-bit"):
        Mastership(True, -1)
    with pytest.raises(ValueError, match="unsigned 64-bit"):
        Mastership(True, GENERATION_MODULUS)


def sent(roles: SwitchRoles, requests: list[RoleRequest] | tuple[RoleRequest, ...], xids: list[int]) -> None:
    for request, xid in zip(requests, xids, strict=True):
        roles.sent(request, xid)


def test_embedded_mode_asks_nothing_and_writes_everywhere() -> None:
    roles = SwitchRoles()
    assert roles.connected(1) is None
    assert roles.set_mastership(None) == []
    assert roles.may_write(1) and roles.may_write(99)
    assert roles.view() == {1: {"role": "equal", "generation_id": 0}}


def test_a_leader_asks_master_and_writes_only_once_the_switch_confirms() -> None:
    roles = SwitchRoles()
    roles.connected(1)
    roles.connected(2)
    requests = roles.set_mastership(Mastership(True, 7))
    assert requests == [RoleRequest(1, "master", 7), RoleRequest(2, "master", 7)]
    sent(roles, requests, [10, 11])
    assert not roles.may_write(1) and roles.view()[1] == {"role": "requested", "generation_id": 7}
    outcome = roles.on_reply(1, 10, "master", 7)
    assert outcome.writable_changed and outcome.role_changed == "master"
    assert roles.may_write(1) and not roles.may_write(2)
    assert roles.view() == {
        1: {"role": "master", "generation_id": 7},
        2: {"role": "requested", "generation_id": 7},
    }
    assert roles.role_changes == {"master": 1}
    assert roles.set_mastership(Mastership(True, 7)) == [], "nothing changed: nothing asked"


def test_a_switch_connecting_later_is_asked_first() -> None:
    roles = SwitchRoles()
    roles.set_mastership(Mastership(False, 4))
    assert roles.connected(3) == RoleRequest(3, "slave", 4)
    assert not roles.may_write(3)


def test_demotion_stops_writes_at_once_before_any_answer() -> None:
    roles = SwitchRoles()
    roles.connected(1)
    sent(roles, roles.set_mastership(Mastership(True, 2)), [1])
    roles.on_reply(1, 1, "master", 2)
    assert roles.may_write(1)
    requests = roles.set_mastership(Mastership(False, 3))
    assert requests == [RoleRequest(1, "slave", 3)]
    assert not roles.may_write(1), "a follower writes nowhere, whatever the switch still says"


def test_a_new_generation_of_ours_waits_for_its_own_confirmation() -> None:
    roles = SwitchRoles()
    roles.connected(1)
    sent(roles, roles.set_mastership(Mastership(True, 2)), [1])
    sent(roles, roles.set_mastership(Mastership(True, 5)), [2])
    roles.on_reply(1, 1, "master", 2)  # the answer to the older request
    assert not roles.may_write(1)
    roles.on_reply(1, 2, "master", 5)
    assert roles.may_write(1)


def test_a_stale_master_request_fences_and_the_switch_is_made_slave_at_its_own_generation() -> None:
    roles = SwitchRoles()
    roles.connected(1)
    sent(roles, roles.set_mastership(Mastership(True, 2)), [1])
    outcome = roles.on_refused(1, 1, stale=True)
    assert outcome.fenced == 2
    assert outcome.requests == (RoleRequest(1, "nochange", 2),)
    assert not roles.may_write(1)
    sent(roles, outcome.requests, [2])
    follow = roles.on_reply(1, 2, "equal", 3)  # what the switch holds: generation 3, us EQUAL
    assert follow.requests == (RoleRequest(1, "slave", 3),)
    assert follow.fenced is None
    sent(roles, follow.requests, [3])
    roles.on_reply(1, 3, "slave", 3)
    assert roles.view() == {1: {"role": "slave", "generation_id": 3}}
    assert not roles.may_write(1)


def test_a_stale_slave_request_is_no_fencing_but_still_ends_slave() -> None:
    roles = SwitchRoles()
    roles.connected(1)
    sent(roles, roles.set_mastership(Mastership(False, 1)), [1])
    outcome = roles.on_refused(1, 1, stale=True)
    assert outcome.fenced is None and outcome.requests == (RoleRequest(1, "nochange", 1),)


def test_a_refusal_other_than_stale_asks_nothing_more() -> None:
    roles = SwitchRoles()
    roles.connected(1)
    sent(roles, roles.set_mastership(Mastership(True, 1)), [1])
    outcome = roles.on_refused(1, 1, stale=False)
    assert outcome == type(outcome)()
    assert roles.on_refused(1, 99, stale=True) == type(outcome)(), "not a request of ours"


def test_a_switch_that_made_another_controller_master_demotes_us() -> None:
    roles = SwitchRoles()
    roles.connected(1)
    sent(roles, roles.set_mastership(Mastership(True, 2)), [1])
    roles.on_reply(1, 1, "master", 2)
    outcome = roles.on_demoted(1, 3)
    assert outcome.writable_changed and outcome.role_changed == "slave"
    assert not roles.may_write(1)
    assert roles.view()[1] == {"role": "slave", "generation_id": 3}
    assert roles.on_demoted(1).writable_changed is False, "already slave"
    assert roles.role_changes == {"master": 1, "slave": 1}


def test_a_disconnected_switch_is_forgotten_and_starts_equal_again() -> None:
    roles = SwitchRoles()
    roles.connected(1)
    sent(roles, roles.set_mastership(Mastership(True, 2)), [1])
    roles.on_reply(1, 1, "master", 2)
    roles.disconnected(1)
    assert roles.view() == {} and not roles.may_write(1)
    assert roles.on_reply(1, 1, "master", 2).writable_changed is False
    assert roles.connected(1) == RoleRequest(1, "master", 2)


def test_a_fencing_answer_that_arrives_after_a_promotion_does_not_demote_the_new_leader() -> None:
    """Stale at generation 2, then promoted at 9 before the switch answered the generation query: the
    query's answer asks for nothing (a SLAVE sent after the MASTER request at 9 would undo it)."""
    roles = SwitchRoles()
    roles.connected(1)
    sent(roles, roles.set_mastership(Mastership(True, 2)), [1])
    query = roles.on_refused(1, 1, stale=True).requests
    sent(roles, query, [2])
    sent(roles, roles.set_mastership(Mastership(True, 9)), [3])
    assert roles.on_reply(1, 2, "equal", 3).requests == ()
    roles.on_reply(1, 3, "master", 9)
    assert roles.may_write(1)
