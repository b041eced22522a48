"""A one-cable delay line for kernels without ``sch_netem``.

Runs inside its own network namespace between two veth ends (``switch port <-> A | relay | B <->
switch port``), reads every frame from A and B with AF_PACKET sockets and writes it out of the other
side once ``--delay-ms`` has passed. One FIFO per direction: with a constant delay the head of the
queue is always the next frame due, so frames are never reordered.

Standard library only, and nothing from the rest of the project: it starts once per cable, so it
must start fast (``python -m mininet_topos.delay_relay`` does not import Mininet, see ``__init__``).

Run: ``python -m mininet_topos.delay_relay --delay-ms 5 ra rb``. Prints ``ready`` on stdout once
both sockets are bound; prints counters on stderr when it exits (SIGTERM, SIGINT, or its parent
process going away).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import select
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

# Linux constants the socket module does not export (include/uapi/linux/if_packet.h, if_ether.h).
ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_AUXDATA = 8
PACKET_IGNORE_OUTGOING = 23  # Linux >= 4.20; we also filter on pkttype for older kernels
PACKET_OUTGOING = 4  # sll_pkttype of frames this host sent (e.g. our own writes)
SO_TIMESTAMPNS = 35  # include/uapi/asm-generic/socket.h (also SCM_TIMESTAMPNS)
SCM_TIMESTAMPNS = SO_TIMESTAMPNS
PR_SET_TIMERSLACK = 29
TP_STATUS_VLAN_VALID = 0x10
TP_STATUS_VLAN_TPID_VALID = 0x40
ETH_P_8021Q = 0x8100
# struct tpacket_auxdata: tp_status, tp_len, tp_snaplen, tp_mac, tp_net, tp_vlan_tci, tp_vlan_tpid
AUXDATA = struct.Struct("=IIIHHHH")
AUX_STATUS = struct.Struct("=I")
VLAN_VALID = TP_STATUS_VLAN_VALID
TIMESPEC = struct.Struct("=qq")  # struct timespec on 64-bit Linux
AUX_SPACE = socket.CMSG_SPACE(AUXDATA.size) + socket.CMSG_SPACE(TIMESPEC.size)
MAX_AGE_S = 0.01  # a kernel timestamp older than this is not trusted (clock step): use the read time

RECV_BYTES = 65536  # larger than any frame we can see: GRO/GSO are off on the relay's veths
BATCH = 64  # frames read per socket per wakeup, so one busy direction cannot starve the other
MAX_QUEUED = 20_000  # frames per direction; beyond this the line tail-drops (bounded memory)
SOCKET_BUFFER = 4 << 20
PARENT_CHECK_S = 1.0  # how often to notice that whoever started us has gone away


def restore_vlan(frame: bytes, auxdata: bytes | None) -> bytes:
    """Put back the 802.1Q tag the kernel moved into metadata (veth offloads the VLAN tag, so an
    AF_PACKET reader sees the frame untagged and the tag only in PACKET_AUXDATA)."""
    if auxdata is None or len(auxdata) < AUXDATA.size or len(frame) < 12:
        return frame
    status, _len, _snap, _mac, _net, tci, tpid = AUXDATA.unpack_from(auxdata)
    if not status & TP_STATUS_VLAN_VALID:
        return frame
    if not status & TP_STATUS_VLAN_TPID_VALID or tpid == 0:
        tpid = ETH_P_8021Q
    return frame[:12] + struct.pack("!HH", tpid, tci) + frame[12:]


@dataclass(slots=True)
class DelayLine:
    """Frames in arrival order, each with the time it is due. Pure: the caller passes the clock."""

    delay_s: float
    limit: int = MAX_QUEUED
    queue: collections.deque[tuple[float, bytes]] = field(default_factory=collections.deque)
    dropped: int = 0

    def push(self, now: float, frame: bytes) -> bool:
        if len(self.queue) >= self.limit:
            self.dropped += 1
            return False
        self.queue.append((now + self.delay_s, frame))
        return True

    def next_due(self) -> float | None:
        return self.queue[0][0] if self.queue else None

    def pop_due(self, now: float) -> Iterator[bytes]:
        queue = self.queue
        while queue and queue[0][0] <= now:
            yield queue.popleft()[1]

    def __len__(self) -> int:
        return len(self.queue)


def wait_timeout(lines: tuple[DelayLine, ...], now: float, cap: float) -> float:
    """How long select() may sleep: until the earliest frame is due, never negative, at most cap."""
    dues = [due for due in (line.next_due() for line in lines) if due is not None]
    if not dues:
        return cap
    return max(0.0, min(min(dues) - now, cap))


def open_port(ifname: str) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
    # The kernel's receive time, not ours: a frame's delay then starts when it arrived, and our
    # wake-up latency (tens to hundreds of microseconds on a busy machine) stops adding to every link.
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    with contextlib.suppress(OSError):  # older kernels: the pkttype check below does the job
        sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    for option, force in ((socket.SO_RCVBUF, 33), (socket.SO_SNDBUF, 32)):  # SO_RCVBUFFORCE, SO_SNDBUFFORCE
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, SOCKET_BUFFER)  # root may exceed rmem_max
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
    sock.bind((ifname, ETH_P_ALL))
    sock.setblocking(False)
    # Until bind() the socket heard every interface of the namespace: drop whatever it queued.
    with contextlib.suppress(BlockingIOError):
        while True:
            sock.recv(RECV_BYTES)
    return sock


@dataclass(slots=True)
class Counters:
    received: list[int] = field(default_factory=lambda: [0, 0])
    sent: list[int] = field(default_factory=lambda: [0, 0])
    send_errors: list[int] = field(default_factory=lambda: [0, 0])
    truncated: int = 0

    def line(self, lines: tuple[DelayLine, DelayLine]) -> str:
        return (
            f"a->b received={self.received[0]} sent={self.sent[0]} queue_drops={lines[0].dropped} "
            f"send_errors={self.send_errors[0]}; b->a received={self.received[1]} sent={self.sent[1]} "
            f"queue_drops={lines[1].dropped} send_errors={self.send_errors[1]}; truncated={self.truncated}"
        )


class Receiver:
    """Reads frames from one port into a DelayLine. One preallocated buffer: recvmsg(65536) would
    allocate and shrink 64 KiB per frame, which costs more than the rest of the relay."""

    def __init__(self, sock: socket.socket, line: DelayLine, counters: Counters, side: int) -> None:
        self.sock, self.line, self.counters, self.side = sock, line, counters, side
        self.buffer = bytearray(RECV_BYTES)
        self.view = memoryview(self.buffer)

    def drain(self, now: float) -> None:
        recvmsg_into, view, counters, line = self.sock.recvmsg_into, self.view, self.counters, self.line
        for _ in range(BATCH):
            try:
                size, ancillary, flags, address = recvmsg_into((view,), AUX_SPACE)
            except (BlockingIOError, InterruptedError):
                return
            if address[2] == PACKET_OUTGOING:
                continue
            if flags & socket.MSG_TRUNC:
                counters.truncated += 1
                continue
            frame = bytes(view[:size])
            arrived = now
            for level, kind, data in ancillary:  # PACKET_AUXDATA (a tag only on VLAN frames), SCM_TIMESTAMPNS
                if (level, kind) == (SOL_PACKET, PACKET_AUXDATA) and AUX_STATUS.unpack_from(data)[0] & VLAN_VALID:
                    frame = restore_vlan(frame, data)
                elif (level, kind) == (socket.SOL_SOCKET, SCM_TIMESTAMPNS) and len(data) >= TIMESPEC.size:
                    seconds, nanoseconds = TIMESPEC.unpack_from(data)
                    age = time.time() - (seconds + nanoseconds * 1e-9)
                    if 0.0 <= age <= MAX_AGE_S:
                        arrived = now - age
            counters.received[self.side] += 1
            line.push(arrived, frame)


def relay(
    ports: tuple[socket.socket, socket.socket],
    lines: tuple[DelayLine, DelayLine],
    counters: Counters,
    *,
    clock: Callable[[], float] = time.monotonic,
    keep_going: Callable[[], bool] = lambda: True,
) -> None:
    """Forward until keep_going() is false. lines[i] holds frames read on ports[i], due out of the other."""
    receivers = {sock.fileno(): Receiver(sock, lines[i], counters, i) for i, sock in enumerate(ports)}
    next_check = clock() + PARENT_CHECK_S
    while True:
        now = clock()
        if now >= next_check:
            if not keep_going():
                return
            next_check = now + PARENT_CHECK_S
        # select() takes a timeval (microseconds), unlike poll()/epoll() (milliseconds): it keeps the
        # added delay well under a millisecond.
        readable, _, _ = select.select(ports, (), (), wait_timeout(lines, now, next_check - now))
        now = clock()
        for sock in readable:
            receivers[sock.fileno()].drain(now)
        now = clock()
        for side, line in enumerate(lines):
            out = ports[1 - side]
            for frame in line.pop_due(now):
                try:
                    out.send(frame)
                    counters.sent[side] += 1
                except OSError:  # e.g. ENOBUFS, or the peer interface went down: a lost frame
                    counters.send_errors[side] += 1


class _Stop(Exception):
    """Raised from the SIGTERM/SIGINT handler to unwind the loop and print the counters."""


def _raise_stop(_signum: int, _frame: object) -> None:
    raise _Stop


def try_realtime(priority: int) -> bool:
    """SCHED_FIFO keeps the delay's tail short under CPU load; without the privilege, carry on."""
    if priority <= 0:
        return False
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except (OSError, AttributeError):
        return False
    return True


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mininet_topos.delay_relay", description=__doc__.split("\n")[0])
    parser.add_argument("side_a", help="interface towards one switch")
    parser.add_argument("side_b", help="interface towards the other switch")
    parser.add_argument("--delay-ms", type=float, required=True, help="one-way delay, both directions")
    parser.add_argument("--rt-priority", type=int, default=10, help="SCHED_FIFO priority; 0 to stay SCHED_OTHER")
    parser.add_argument("--parent-pid", type=int, default=0, help="exit when this process is gone (0: off)")
    args = parser.parse_args(argv)
    if args.delay_ms < 0:
        parser.error("--delay-ms must be >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The process that started us is our parent (mnexec execs in place). If it dies without stopping
    # us (kill -9, a crashed test), we are re-parented: exit rather than keep a namespace alive.
    keep_going = (lambda: os.getppid() == args.parent_pid) if args.parent_pid > 0 else (lambda: True)
    lines = (DelayLine(args.delay_ms / 1000.0), DelayLine(args.delay_ms / 1000.0))
    counters = Counters()
    realtime = False
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    try:
        ports = (open_port(args.side_a), open_port(args.side_b))
        realtime = try_realtime(args.rt_priority)
        print("ready", flush=True)
        relay(ports, lines, counters, keep_going=keep_going)
    except _Stop:
        pass
    print(
        f"delay_relay {args.side_a}<->{args.side_b} realtime={realtime}: {counters.line(lines)}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
