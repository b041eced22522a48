"""Ports picked for processes started later stay out of the range outgoing connections take theirs from,
are free when picked, and one process never gets the same port twice."""

from __future__ import annotations

import random
import socket
from pathlib import Path

import pytest

from cluster import ports


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.parametrize(
    "host",
    [
        None,  # the default, 127.0.0.1
        "0.0.0.0",
        pytest.param("::1", marks=pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback")),
    ],
)
def test_picked_ports_are_below_the_ephemeral_range_distinct_and_bindable(host: str | None) -> None:
    low = ports.ephemeral_low()
    picked = [ports.free_port() if host is None else ports.free_port(host) for _ in range(200)]
    assert all(ports.LOWEST <= p < low for p in picked)
    assert len(set(picked)) == len(picked)
    family = socket.AF_INET6 if host and ":" in host else socket.AF_INET
    with socket.socket(family) as server:  # what a server started later does with one
        server.bind((host or "127.0.0.1", picked[-1]))
        server.listen()


def _held_port_in_range() -> socket.socket:
    for _ in range(100):
        probe = socket.socket()
        try:
            probe.bind(("127.0.0.1", random.randint(ports.LOWEST, ports.ephemeral_low() - 2)))
        except OSError:
            probe.close()
            continue
        probe.listen()
        return probe
    raise AssertionError("no free port in the range to hold")


def test_a_port_somebody_listens_on_is_skipped() -> None:
    held = _held_port_in_range()
    try:
        port = held.getsockname()[1]
        asked: list[int] = []

        class HeldPortFirst(random.Random):
            """Answers the held port twice, then at random: the ports next to it may be taken too (handed out
            earlier in this process, or bound by a suite running beside this one)."""

            def randint(self, a: int, b: int) -> int:
                answer = port if len(asked) < 2 else super().randint(a, b)
                asked.append(answer)
                return answer

        picked = ports.free_port(rng=HeldPortFirst())
        assert picked != port and asked[:2] == [port, port] and len(asked) >= 3
        assert ports.LOWEST <= picked < ports.ephemeral_low()
    finally:
        held.close()


def test_the_ephemeral_range_is_read_from_the_kernel_setting(tmp_path: Path) -> None:
    setting = tmp_path / "ip_local_port_range"
    setting.write_text("40000\t60999\n")
    assert ports.ephemeral_low(setting) == 40000
    assert ports.ephemeral_low(tmp_path / "missing") == ports.DEFAULT_EPHEMERAL_LOW
