"""POST /api/v1/config/plan and /apply over a real HTTP server and model writer: garbage, huge and
concurrent requests get a clear answer and change nothing."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest

from edgectl.bus import EventBus
from edgectl.config import parse_document
from edgectl.config_api import apply_route, plan_route
from edgectl.desired_state import DesiredState
from edgectl.http_api import HttpApi
from edgectl.metrics import ControllerMetrics
from edgectl.plan import PlanInputs
from meshctl.snapshot import MeshConfig
from netmodel.fabric import build_state
from tests.unit.edgectl.fixtures import EXAMPLE, example_spec

TEXT = EXAMPLE.read_text()


@pytest.fixture
def served():
    bus = EventBus(build_state(example_spec()))
    bus.start()
    desired = DesiredState(bus.publish, lambda applied: PlanInputs(bus.state, applied, MeshConfig()))
    desired.adopt(example_spec(), "r0", "file example")
    api = HttpApi("127.0.0.1", 0, lambda: bus.state, ControllerMetrics(), {})
    api.add_route("/plan", plan_route(desired, parse_document), method="POST", max_body=1 << 20)
    api.add_route("/apply", apply_route(desired, parse_document), method="POST", max_body=1 << 20)
    api.add_route("/apply-git", apply_route(desired, parse_document, git_source="file:///f.git main"), method="POST")
    api.start()
    yield "http://{}:{}".format(*api.address), bus
    api.stop()
    bus.stop()


def post(url: str, body: object | bytes) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ([1, 2], '{"files"'),
        ({"files": []}, '{"files"'),
        ({"files": {"a.yaml": 5}}, "must be the file's text"),
        ({"files": {"/etc/x.yaml": "a: 1"}}, "plain relative path"),
        ({"files": {"../x.yaml": "a: 1"}}, "plain relative path"),
        ({"files": {"a.yaml": TEXT}, "dry_run": "yes"}, '"dry_run"'),
        ({"files": {"a.yaml": TEXT}, "timeout_s": 10_000}, '"timeout_s"'),
    ],
)
def test_a_malformed_request_is_400_and_changes_nothing(served, body, says) -> None:
    url, bus = served
    generation = bus.state.generation
    code, reply = post(url + "/apply", body)
    assert code == 400 and says in reply["error"], reply
    assert bus.state.generation == generation


def test_an_invalid_document_is_422_with_its_lines(served) -> None:
    url, bus = served
    for path in ("/plan", "/apply"):
        code, reply = post(url + path, {"files": {"a.yaml": TEXT.replace("dpid: 0xa1", "dpid: nope")}})
        assert code == 422 and any(p.startswith("a.yaml:") and "dpid" in p for p in reply["problems"]), reply
    assert bus.state.generation == 0


def test_not_json_and_too_big_are_refused_before_parsing(served) -> None:
    url, _bus = served
    assert post(url + "/plan", b"{not json")[0] == 400
    code, reply = post(url + "/plan", {"files": {"a.yaml": "x" * (2 << 20)}})
    assert code == 400 and "bytes" in reply["error"]


def test_a_too_big_body_still_sent_after_the_refusal_gets_the_answer_not_a_reset(served) -> None:
    """The server answers 400 as soon as it reads the headers; a client that goes on sending the body
    (as every HTTP client does) must still read that answer, not fail on a reset connection."""
    url, _bus = served
    host, port = url.removeprefix("http://").split(":")
    body = b"x" * (2 << 20)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(f"POST /plan HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode())
        time.sleep(0.3)  # the answer is sent (and, without a lingering close, the socket closed) meanwhile
        sock.sendall(body)
        sock.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert reply.split(b"\r\n")[0].endswith(b" 400 Bad Request") and b"bytes" in reply, reply[:200]


def test_apply_is_refused_while_git_is_the_source(served) -> None:
    url, bus = served
    code, reply = post(url + "/apply-git", {"files": {"a.yaml": TEXT}})
    assert code == 409 and "git" in reply["error"] and bus.state.generation == 0


def test_concurrent_plans_beyond_a_few_are_told_to_retry(served, monkeypatch) -> None:
    url, _bus = served
    release = threading.Event()
    started = threading.Semaphore(0)
    original = DesiredState.plan

    def slow_plan(self, document, revision):
        started.release()
        release.wait(10)
        return original(self, document, revision)

    monkeypatch.setattr(DesiredState, "plan", slow_plan)
    answers: list[int] = []
    workers = [
        threading.Thread(target=lambda: answers.append(post(url + "/plan", {"files": {"a.yaml": TEXT}})[0]))
        for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    assert started.acquire(timeout=10) and started.acquire(timeout=10)
    code, reply = post(url + "/plan", {"files": {"a.yaml": TEXT}})
    assert code == 429 and "try again" in reply["error"]
    release.set()
    for worker in workers:
        worker.join(10)
    assert answers == [200, 200]


def test_a_policy_naming_an_unknown_service_is_refused_with_its_line_and_changes_nothing(served) -> None:
    url, bus = served
    before = bus.state
    code, reply = post(url + "/apply", {"files": {"a.yaml": TEXT.replace("allow_from: [web]", "allow_from: [wbe]")}})
    assert code == 422 and reply["problems"] == ["a.yaml:56: services[1].allow_from[0]: unknown service 'wbe'"], reply
    assert bus.state is before
