"""The relay's pure parts: the delay FIFO, the select() timeout, VLAN tag restoration, arguments."""

from __future__ import annotations

import struct
import subprocess
import sys

import pytest

from mininet_topos.delay_relay import (
    AUXDATA,
    TP_STATUS_VLAN_TPID_VALID,
    TP_STATUS_VLAN_VALID,
    DelayLine,
    parse_args,
    restore_vlan,
    wait_timeout,
)

DST, SRC = bytes.fromhex("0180c200000e"), bytes.fromhex("020000000001")


def aux(status: int, tci: int = 0, tpid: int = 0) -> bytes:
    return AUXDATA.pack(status, 60, 60, 0, 14, tci, tpid)


def test_frames_leave_after_the_delay_in_arrival_order() -> None:
    line = DelayLine(0.005)
    for i, t in enumerate((0.0, 0.001, 0.001, 0.004)):
        line.push(t, bytes([i]))
    assert list(line.pop_due(0.0049)) == []
    assert list(line.pop_due(0.006)) == [b"\x00", b"\x01", b"\x02"]
    assert line.next_due() == pytest.approx(0.009)
    assert list(line.pop_due(0.0091)) == [b"\x03"]
    assert line.next_due() is None and len(line) == 0


def test_a_constant_delay_never_reorders() -> None:
    line = DelayLine(0.002)
    arrivals = [i * 0.0003 for i in range(100)]
    for i, t in enumerate(arrivals):
        line.push(t, i.to_bytes(2, "big"))
    out = [int.from_bytes(f, "big") for now in (0.01, 0.02, 0.05) for f in line.pop_due(now)]
    assert out == list(range(100))


def test_a_full_line_drops_at_the_tail_and_counts_it() -> None:
    line = DelayLine(1.0, limit=2)
    assert line.push(0.0, b"a") and line.push(0.0, b"b")
    assert not line.push(0.0, b"c")
    assert line.dropped == 1
    assert list(line.pop_due(1.0)) == [b"a", b"b"]


def test_wait_timeout_sleeps_until_the_earliest_due_frame() -> None:
    a, b = DelayLine(0.010), DelayLine(0.003)
    assert wait_timeout((a, b), now=0.0, cap=1.0) == 1.0  # nothing queued: until the periodic check
    a.push(0.0, b"x")
    b.push(0.001, b"y")
    assert wait_timeout((a, b), now=0.002, cap=1.0) == pytest.approx(0.002)
    assert wait_timeout((a, b), now=0.5, cap=1.0) == 0.0  # overdue: do not sleep at all
    assert wait_timeout((a, b), now=0.0, cap=0.001) == 0.001


def test_restore_vlan_puts_the_tag_back_after_the_mac_addresses() -> None:
    untagged = DST + SRC + b"\x08\x00" + b"payload"
    tagged = restore_vlan(untagged, aux(TP_STATUS_VLAN_VALID, tci=0x2064))
    assert tagged == DST + SRC + b"\x81\x00\x20\x64" + b"\x08\x00" + b"payload"


def test_restore_vlan_keeps_a_qinq_tpid_when_the_kernel_reports_one() -> None:
    frame = DST + SRC + b"\x08\x00"
    tagged = restore_vlan(frame, aux(TP_STATUS_VLAN_VALID | TP_STATUS_VLAN_TPID_VALID, tci=5, tpid=0x88A8))
    assert tagged[12:16] == struct.pack("!HH", 0x88A8, 5)


@pytest.mark.parametrize("auxdata", [None, b"", aux(0), aux(TP_STATUS_VLAN_TPID_VALID, tci=7, tpid=0x8100)])
def test_frames_without_a_valid_tag_pass_unchanged(auxdata: bytes | None) -> None:
    lldp = DST + SRC + b"\x88\xcc" + b"\x02\x07\x04" + bytes(6)
    assert restore_vlan(lldp, auxdata) == lldp


def test_vlan_zero_priority_tags_are_restored_too() -> None:
    frame = DST + SRC + b"\x08\x00"
    assert restore_vlan(frame, aux(TP_STATUS_VLAN_VALID, tci=0xA000))[12:16] == b"\x81\x00\xa0\x00"


def test_arguments() -> None:
    args = parse_args(["ra", "rb", "--delay-ms", "2.5"])
    assert (args.side_a, args.side_b, args.delay_ms, args.rt_priority, args.parent_pid) == (
        "ra",
        "rb",
        2.5,
        10,
        0,
    )
    with pytest.raises(SystemExit):
        parse_args(["ra", "rb", "--delay-ms", "-1"])
    with pytest.raises(SystemExit):
        parse_args(["ra", "rb"])


def test_the_relay_starts_without_importing_mininet_or_netmodel() -> None:
    # One relay process per cable: its start-up must stay cheap (the package __init__ is lazy).
    code = (
        "import sys, mininet_topos.delay_relay; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mininet', 'netmodel', 'yaml')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
