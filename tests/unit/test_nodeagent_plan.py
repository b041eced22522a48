"""nodeagent/plan.py: the agent's decisions, from WatchNode events and its instances to actions."""

from __future__ import annotations

from dataclasses import replace

import pytest

from netmodel.placeholders import TemplateError, expand
from nodeagent.plan import (
    Call,
    Command,
    Drain,
    EventKind,
    Instance,
    NodeContext,
    Phase,
    Refuse,
    Start,
    Stop,
    WorkloadSpec,
    apply_event,
    backoff_s,
    crashed,
    draining,
    invalid,
    plan,
    render_command,
    started,
    starting,
    stopped,
)

CONTEXT = NodeContext(node="ea-n1", python="/venv/bin/python", work_root="/var/agent")
WEB = WorkloadSpec("web-1", "web", 8080, address="10.0.0.1", app_host="127.0.0.2", run=("{python}", "-m", "app"))
API = WorkloadSpec("api-1", "api", 9090, run=("{python}", "api.py"))


def running(spec: WorkloadSpec, since: float = 0.0) -> Instance:
    return started(starting(spec, since), since)


# -- events ----------------------------------------------------------------------------------------


def test_a_snapshot_replaces_the_desired_set_and_placed_removed_change_it() -> None:
    desired = apply_event({}, EventKind.SNAPSHOT, [WEB, API])
    assert set(desired) == {"web-1", "api-1"}
    desired = apply_event(desired, EventKind.REMOVED, [WEB])
    assert set(desired) == {"api-1"}
    other = WorkloadSpec("web-2", "web", 8081)
    desired = apply_event(desired, EventKind.PLACED, [other])
    assert set(desired) == {"api-1", "web-2"}
    assert apply_event(desired, EventKind.SNAPSHOT, []) == {}


def test_removing_what_is_not_there_changes_nothing() -> None:
    assert apply_event({"web-1": WEB}, EventKind.REMOVED, [API]) == {"web-1": WEB}


# -- placeholders ----------------------------------------------------------------------------------


def test_every_placeholder_is_filled_in_for_run_and_env() -> None:
    spec = WorkloadSpec(
        "web-1",
        "web",
        8080,
        app_host="127.0.0.2",
        run=("{python}", "-m", "app", "--workload", "{workload}", "--listen", "{listen}", "--calls", "{calls}"),
        env=(("DIR", "{work_dir}"), ("WHO", "{service}@{node}:{host}:{port}"), ("OUT", "{outbound}")),
        calls=(Call("api", 9090, 2.0, 100), Call("db", 5432)),
        outbound_host="127.1.31.144",
    )
    command = render_command(spec, "ea-n1", "/py", "/var/agent/w/web-1")
    assert command.argv == (
        "/py",
        "-m",
        "app",
        "--workload",
        "web-1",
        "--listen",
        "127.0.0.2:8080",
        "--calls",
        "api=127.1.31.144:9090,2.0,100;db=127.1.31.144:5432,1.0,0",
    )
    assert command.env == (
        ("DIR", "/var/agent/w/web-1"),
        ("WHO", "web@ea-n1:127.0.0.2:8080"),
        ("OUT", "127.1.31.144"),
    )


def test_no_calls_is_empty_and_an_ipv6_host_is_bracketed() -> None:
    spec = WorkloadSpec("w", "s", 80, app_host="::1", run=("{calls}", "{listen}"))
    assert render_command(spec, "n", "p", "d").argv == ("", "[::1]:80")


def test_double_braces_are_literal() -> None:
    assert expand("{{port}} is {port} }}{{", {"port": "80"}) == "{port} is 80 }{"


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{nope}", "unknown placeholder {nope}"),
        ("{port:05}", "unknown placeholder {port:05}"),
        ("{}", "unknown placeholder {}"),
        ("a { b", "unclosed '{'"),
        ("a } b", "single '}'"),
    ],
)
def test_a_bad_placeholder_is_a_clear_error(template: str, message: str) -> None:
    with pytest.raises(TemplateError) as error:
        expand(template, {"port": "80"})
    assert message in str(error.value)


def test_a_bad_placeholder_refuses_the_workload_and_never_raises() -> None:
    bad = WorkloadSpec("web-1", "web", 8080, env=(("X", "{secret}"),), run=("app",))
    actions = plan({"web-1": bad}, {}, 0.0, 1.0, CONTEXT)
    assert len(actions) == 1 and isinstance(actions[0], Refuse)
    assert "unknown placeholder {secret}" in actions[0].why
    refused = {"web-1": invalid(bad, 0.0, actions[0].why)}
    assert plan({"web-1": bad}, refused, 100.0, 1.0, CONTEXT) == []  # refused once, not again and again
    fixed = WorkloadSpec("web-1", "web", 8080, run=("app",))
    (again,) = plan({"web-1": fixed}, refused, 100.0, 1.0, CONTEXT)
    assert isinstance(again, Start) and again.command == Command(("app",), ())
    assert plan({}, refused, 100.0, 1.0, CONTEXT) == [Stop("web-1", "removed")]


# -- transitions -----------------------------------------------------------------------------------


def test_a_placed_workload_is_started_with_its_command_in_its_own_directory() -> None:
    spec = WorkloadSpec("web-1", "web", 8080, run=("{python}", "{work_dir}"))
    (action,) = plan({"web-1": spec}, {}, 0.0, 1.0, CONTEXT)
    # Its own directory is beside the agent's work directory (the node key's), not inside it.
    assert action == Start(spec, Command(("/venv/bin/python", "/var/agent-apps/web-1"), ()), "placed")


def test_a_service_without_run_gets_its_sidecar_only() -> None:
    spec = WorkloadSpec("web-1", "web", 8080)
    assert plan({"web-1": spec}, {}, 0.0, 1.0, CONTEXT) == [Start(spec, None, "placed")]


def test_starting_and_running_instances_that_are_wanted_need_nothing() -> None:
    instances = {"web-1": starting(WEB, 0.0), "api-1": running(API)}
    assert plan({"web-1": WEB, "api-1": API}, instances, 5.0, 1.0, CONTEXT) == []


def test_a_removed_instance_drains_then_stops() -> None:
    instances = {"web-1": running(WEB)}
    assert plan({}, instances, 10.0, 1.0, CONTEXT) == [Drain("web-1", 11.0)]
    instances = {"web-1": draining(instances["web-1"], 10.0, 1.0)}
    assert plan({}, instances, 10.5, 1.0, CONTEXT) == []
    assert plan({}, instances, 11.0, 1.0, CONTEXT) == [Stop("web-1", "drained after its removal")]
    instances = {"web-1": stopped(instances["web-1"], 11.0, "drained")}
    assert plan({}, instances, 12.0, 1.0, CONTEXT) == []


def test_a_removal_while_starting_waits_until_it_has_started_then_drains_it() -> None:
    instances = {"web-1": starting(WEB, 0.0)}
    assert plan({}, instances, 1.0, 1.0, CONTEXT) == []
    instances = {"web-1": started(instances["web-1"], 2.0)}
    assert plan({}, instances, 2.0, 1.0, CONTEXT) == [Drain("web-1", 3.0)]


def test_a_placement_on_the_port_a_draining_instance_holds_stops_that_one_first() -> None:
    old = draining(running(WorkloadSpec("web-1", "web", 8080)), 10.0, 5.0)
    new = WorkloadSpec("web-2", "web", 8080)
    actions = plan({"web-2": new}, {"web-1": old}, 11.0, 5.0, CONTEXT)
    assert actions == [Stop("web-1", "its port 8080 is needed by web-2"), Start(new, None, "placed")]


def test_a_draining_instance_on_another_port_keeps_draining() -> None:
    old = draining(running(WorkloadSpec("web-1", "web", 8081)), 10.0, 5.0)
    new = WorkloadSpec("web-2", "web", 8080)
    assert plan({"web-2": new}, {"web-1": old}, 11.0, 5.0, CONTEXT) == [Start(new, None, "placed")]


def test_placed_again_while_draining_is_started_afresh_after_the_drain() -> None:
    instances = {"web-1": draining(running(WEB), 10.0, 1.0)}
    assert plan({"web-1": WEB}, instances, 10.5, 1.0, CONTEXT) == []
    assert plan({"web-1": WEB}, instances, 11.0, 1.0, CONTEXT) == [Stop("web-1", "drained after its removal")]
    instances = {"web-1": stopped(instances["web-1"], 11.0, "drained")}
    (action,) = plan({"web-1": WEB}, instances, 11.0, 1.0, CONTEXT)
    assert isinstance(action, Start) and action.why == "placed"


def test_a_crashed_instance_restarts_after_its_backoff_while_wanted() -> None:
    instance = crashed(running(WEB, 0.0), 5.0, "app exited (1)")
    assert instance.phase is Phase.CRASHED and instance.restart_at == 5.5
    assert plan({"web-1": WEB}, {"web-1": instance}, 5.4, 1.0, CONTEXT) == []
    (action,) = plan({"web-1": WEB}, {"web-1": instance}, 5.5, 1.0, CONTEXT)
    assert isinstance(action, Start) and action.why == "restart 1 after: app exited (1)"
    again = starting(WEB, 5.5, instance)
    assert again.restarts == 1 and again.failures == 1


def test_a_crashed_instance_no_longer_wanted_is_cleaned_up_not_restarted() -> None:
    instance = crashed(running(WEB), 5.0, "sidecar exited (1)")
    assert plan({}, {"web-1": instance}, 100.0, 1.0, CONTEXT) == [Stop("web-1", "removed")]


def test_backoff_doubles_from_half_a_second_to_thirty() -> None:
    assert [backoff_s(n) for n in range(1, 9)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_crashes_in_a_row_back_off_longer_and_a_long_run_resets_it() -> None:
    instance = running(WEB, 0.0)
    now = 0.0
    delays = []
    for _ in range(4):
        now += 1.0
        instance = crashed(instance, now, "app exited (1)")
        delays.append(instance.restart_at - now)
        instance = started(starting(WEB, instance.restart_at, instance), instance.restart_at)
        now = instance.since
    assert delays == [0.5, 1.0, 2.0, 4.0]
    assert instance.restarts == 4
    instance = crashed(instance, now + 60.0, "app exited (1)")  # ran a minute: a fresh start
    assert instance.failures == 1 and instance.restart_at == now + 60.5


def test_a_start_that_fails_counts_as_a_crash() -> None:
    instance = crashed(starting(WEB, 0.0), 10.0, "app did not listen within 10 s")
    instance = crashed(starting(WEB, instance.restart_at, instance), 20.0, "again")
    assert instance.failures == 2 and instance.restart_at == 21.0


def test_an_apps_environment_is_its_own_not_the_agents() -> None:
    from nodeagent.supervisor import app_environment

    agent = {"PATH": "/bin", "LANG": "C.UTF-8", "SECRET": "x", "EDGECTL_JOIN_TOKEN": "t", "PYTHONPATH": "/a"}
    env = app_environment(agent, [("WHERE", "here"), ("EDGECTL_WORKLOAD", "web-1")], "/apps/web-1", "/code")
    assert env == {
        "PATH": "/bin",
        "LANG": "C.UTF-8",
        "PYTHONPATH": "/a:/code",
        "HOME": "/apps/web-1",
        "WHERE": "here",
        "EDGECTL_WORKLOAD": "web-1",
    }


def test_run_as_names_a_known_user_and_root_defaults_to_nobody() -> None:
    import os
    import pwd

    import pytest

    from nodeagent.main import resolve_run_as

    with pytest.raises(ValueError, match="no such user"):
        resolve_run_as("no-such-user-here")
    if os.geteuid() == 0:
        nobody = resolve_run_as(None)
        assert nobody is not None and nobody.uid == pwd.getpwnam("nobody").pw_uid
        assert resolve_run_as("root") is None  # explicitly the agent's own user: no switch
    else:
        assert resolve_run_as(None) is None


# -- a changed description -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"run": ("{python}", "-m", "other")}, "run"),
        ({"env": (("X", "1"),)}, "env"),
        ({"calls": (Call("api", 9090),)}, "calls"),
        ({"app_host": "127.0.0.3"}, "app_host"),
        ({"outbound_host": "127.1.0.9"}, "outbound_host"),
        ({"port": 8081}, "port"),
    ],
)
def test_a_running_workload_whose_description_changed_is_stopped_then_started_anew(
    change: dict[str, object], field: str
) -> None:
    new = replace(WEB, **change)  # type: ignore[arg-type]
    actions = plan({"web-1": new}, {"web-1": running(WEB)}, 5.0, 1.0, CONTEXT)
    why = f"its description changed ({field})"
    assert actions == [
        Stop("web-1", why),
        Start(new, render_command(new, "ea-n1", "/venv/bin/python", "/var/agent-apps/web-1"), why),
    ]


def test_a_new_node_address_or_protocol_needs_no_restart() -> None:
    new = replace(WEB, address="10.0.0.9", protocol="tcp")
    assert plan({"web-1": new}, {"web-1": running(WEB)}, 5.0, 1.0, CONTEXT) == []


def test_a_description_changed_while_starting_is_applied_once_it_has_started() -> None:
    new = replace(WEB, env=(("X", "1"),))
    instances = {"web-1": starting(WEB, 0.0)}
    assert plan({"web-1": new}, instances, 1.0, 1.0, CONTEXT) == []  # its start is under way
    instances = {"web-1": started(instances["web-1"], 2.0)}
    actions = plan({"web-1": new}, instances, 2.0, 1.0, CONTEXT)
    assert [type(a) for a in actions] == [Stop, Start]
    assert isinstance(actions[1], Start) and actions[1].spec == new
    # The new one running: nothing more to do.
    assert plan({"web-1": new}, {"web-1": running(new)}, 3.0, 1.0, CONTEXT) == []


def test_a_changed_description_also_stops_a_draining_instance_on_its_new_port_first() -> None:
    other = draining(running(WorkloadSpec("web-2", "web", 8081)), 1.0, 60.0)
    new = replace(WEB, port=8081)
    actions = plan(
        {
            "web-1": new,
        },
        {"web-1": running(WEB), "web-2": other},
        2.0,
        60.0,
        CONTEXT,
    )
    why = "its description changed (port)"
    assert actions[:2] == [Stop("web-1", why), Stop("web-2", "its port 8081 is needed by web-1")]
    assert isinstance(actions[2], Start) and actions[2].spec == new
