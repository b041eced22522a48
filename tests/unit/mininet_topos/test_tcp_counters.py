"""``parse_tcp_ext``: the kernel's TCP extension counters, as the lab reads them in a node's namespace."""

from __future__ import annotations

from pathlib import Path

from mininet_topos.lab import parse_tcp_ext

NETSTAT = """TcpExt: SyncookiesSent TCPFastOpenActive TCPFastOpenPassive
TcpExt: 0 3 12
IpExt: InNoRoutes InTruncatedPkts
IpExt: 0 0
"""


def test_the_tcp_ext_lines_become_counters_by_name() -> None:
    assert parse_tcp_ext(NETSTAT) == {"SyncookiesSent": 0, "TCPFastOpenActive": 3, "TCPFastOpenPassive": 12}
    assert parse_tcp_ext("IpExt: a\nIpExt: 1\n") == {}
    assert parse_tcp_ext("") == {}


def test_this_kernel_counts_fast_open() -> None:
    counters = parse_tcp_ext(Path("/proc/net/netstat").read_text())
    assert {"TCPFastOpenActive", "TCPFastOpenPassive", "TCPFastOpenCookieReqd"} <= set(counters)
