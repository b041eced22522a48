"""Paced traffic and a latency probe for bandwidth checks. Standard library only; runs in namespaces.

Rates are counted as whole Ethernet frames (what an OpenFlow meter and an htb class count), without the FCS:
a UDP datagram of ``n`` bytes is a frame of ``n + 42`` (14 Ethernet + 20 IPv4 + 8 UDP), so ``--frame 64``
sends 22-byte payloads. TCP is written in 1448-byte chunks (one full segment on a 1500-byte MTU with
timestamps), each counted as a 1514-byte frame (``n + 66``: 14 + 20 + 32 with the timestamp option).

    python -m mininet_topos.pacer recv --proto udp --port 5001 --duration 10
    python -m mininet_topos.pacer send --proto udp --to 10.0.0.2 --port 5001 --rate-mbps 8 --frame 512 --duration 10
    python -m mininet_topos.pacer recv --proto tcp --port 8554 --duration 10
    python -m mininet_topos.pacer send --proto tcp --to 10.0.0.2 --port 8554 --rate-mbps 8 --duration 10
    python -m mininet_topos.pacer echo --port 7                          # UDP echo, until SIGTERM
    python -m mininet_topos.pacer ping --to 10.0.0.2 --port 7 --interval 0.01 --duration 5

``send --local-port P`` binds the sender's source port (traffic from an instance's port, e.g. a reserved
direction matched on ``tcp_src``). Each command prints one JSON line at the end (``send``: what it sent and
how far behind the schedule it fell; ``recv``: ``Summary``; ``ping``: round trips). The receiver measures its
rate over the steady part: the whole intervals between the first ``--warmup`` seconds after the first packet
and the last interval with traffic.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

ETH_HEADER = 14
IPV4_HEADER = 20
UDP_HEADER = 8
TCP_HEADER_WITH_TIMESTAMPS = 32
UDP_OVERHEAD = ETH_HEADER + IPV4_HEADER + UDP_HEADER  # 42
TCP_OVERHEAD = ETH_HEADER + IPV4_HEADER + TCP_HEADER_WITH_TIMESTAMPS  # 66
TCP_WRITE = 1448  # one MSS on a 1500-byte MTU with timestamps
MIN_FRAME = 64  # 60 bytes plus FCS on the wire; here the smallest frame counted (22-byte UDP payload)
MAX_FRAME = ETH_HEADER + 1500
MAX_CATCH_UP = 64  # packets sent back to back when the sender fell behind (a scheduler hiccup): bounded bursts
PROBE = struct.Struct("!Id")  # sequence number, send time (monotonic seconds)


class PacerError(ValueError):
    """A rate, frame size or duration that cannot be sent as asked."""


def udp_payload_for_frame(frame: int) -> int:
    """The UDP payload that makes an Ethernet frame of ``frame`` bytes (no FCS)."""
    if not MIN_FRAME <= frame <= MAX_FRAME:
        raise PacerError(f"frame must be {MIN_FRAME}..{MAX_FRAME} bytes, got {frame}")
    return frame - UDP_OVERHEAD


def frame_bytes(proto: str, payload: int) -> int:
    """The Ethernet frame (no FCS) that carries ``payload`` bytes in one UDP datagram or TCP segment."""
    return payload + (UDP_OVERHEAD if proto == "udp" else TCP_OVERHEAD)


def packets_per_second(rate_mbps: float, frame: int) -> float:
    """Frames per second that make ``rate_mbps`` counted as whole frames."""
    if rate_mbps <= 0:
        raise PacerError(f"rate must be > 0 Mbit/s, got {rate_mbps}")
    return rate_mbps * 1e6 / (frame * 8)


def due_packets(elapsed: float, pps: float, total: int) -> int:
    """How many packets the schedule has sent by ``elapsed`` seconds: packet k leaves at k / pps."""
    if elapsed < 0:
        return 0
    return min(total, int(elapsed * pps) + 1)


def total_packets(duration: float, pps: float) -> int:
    return max(1, round(duration * pps))


@dataclass(frozen=True, slots=True)
class Summary:
    """What a receiver got. Rates over the steady part (Mbit/s); ``l2_bytes`` counts whole frames."""

    proto: str
    bytes: int  # payload bytes received
    frames: int  # datagrams (UDP) or segment-sized chunks (TCP: bytes / 1448, rounded up)
    l2_bytes: int
    duration_s: float  # first to last packet
    steady_s: float
    l2_mbps: float  # frames counted whole, as a meter counts them
    goodput_mbps: float  # payload only

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def summarize(
    proto: str, buckets: Sequence[int], counts: Sequence[int], interval: float, warmup: float, duration: float
) -> Summary:
    """The receiver's figures from per-interval payload bytes (``buckets``) and datagram counts (``counts``,
    UDP; ignored for TCP). Interval i covers [i * interval, (i + 1) * interval) after the first packet.

    Steady part: from the first whole interval after ``warmup`` to the last interval with traffic, that one
    excluded (it is partial); when that leaves nothing, every interval counts.
    """
    payload = sum(buckets)
    if proto == "udp":
        frames = sum(counts)
        l2 = payload + frames * UDP_OVERHEAD
    else:
        frames = math.ceil(payload / TCP_WRITE)
        l2 = payload + frames * TCP_OVERHEAD
    last = max((i for i, b in enumerate(buckets) if b), default=-1)
    first = math.ceil(warmup / interval - 1e-9)
    steady = range(first, last) if last - first >= 1 else range(0, last + 1)
    steady_payload = sum(buckets[i] for i in steady)
    if proto == "udp":
        steady_l2 = steady_payload + sum(counts[i] for i in steady) * UDP_OVERHEAD
    else:
        steady_l2 = steady_payload + math.ceil(steady_payload / TCP_WRITE) * TCP_OVERHEAD
    seconds = len(steady) * interval
    rate = (lambda b: b * 8 / seconds / 1e6) if seconds > 0 else (lambda b: 0.0)
    return Summary(
        proto, payload, frames, l2, round(duration, 4), round(seconds, 4), round(rate(steady_l2), 4),
        round(rate(steady_payload), 4),
    )  # fmt: skip


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def ping_summary(rtts_ms: Sequence[float], sent: int) -> dict[str, Any]:
    """Round trips of the probe: count, lost, p50/p99/max in ms."""
    pick = percentile
    return {
        "sent": sent,
        "received": len(rtts_ms),
        "lost": sent - len(rtts_ms),
        "p50_ms": None if not rtts_ms else round(pick(rtts_ms, 50) or 0.0, 3),
        "p99_ms": None if not rtts_ms else round(pick(rtts_ms, 99) or 0.0, 3),
        "max_ms": None if not rtts_ms else round(max(rtts_ms), 3),
    }


# ---- the adapters: sockets and clocks ------------------------------------------------------------------


class _Stop:
    """SIGTERM/SIGINT end the current command after its current packet; its JSON line is still printed."""

    def __init__(self) -> None:
        self.requested = False
        signal.signal(signal.SIGTERM, self._set)
        signal.signal(signal.SIGINT, self._set)

    def _set(self, *_: object) -> None:
        self.requested = True


def _sleep_until(deadline: float) -> None:
    gap = deadline - time.monotonic()
    if gap > 0.0002:
        time.sleep(gap)


def send(args: argparse.Namespace) -> dict[str, Any]:
    stop = _Stop()
    if args.proto == "udp":
        payload_len = udp_payload_for_frame(args.frame)
        frame = args.frame
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        if args.local_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("0.0.0.0", args.local_port))
        sock.connect((args.to, args.port))
    else:
        payload_len = TCP_WRITE
        frame = frame_bytes("tcp", TCP_WRITE)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if args.local_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("0.0.0.0", args.local_port))
        sock.settimeout(10)
        sock.connect((args.to, args.port))
        sock.settimeout(None)
    pps = packets_per_second(args.rate_mbps, frame)
    total = total_packets(args.duration, pps)
    data = bytes(payload_len)
    sent = errors = 0
    max_behind = 0
    start = time.monotonic()
    try:
        while sent < total and not stop.requested:
            due = due_packets(time.monotonic() - start, pps, total)
            max_behind = max(max_behind, due - sent)
            for _ in range(min(due - sent, MAX_CATCH_UP)):
                try:
                    sock.send(data) if args.proto == "udp" else sock.sendall(data)
                except (ConnectionRefusedError, BlockingIOError):  # UDP: ICMP unreachable from a late receiver
                    errors += 1
                except (BrokenPipeError, ConnectionResetError):  # TCP: the receiver stopped; report what was sent
                    errors += 1
                    stop.requested = True
                    break
                sent += 1
            if sent < total:
                _sleep_until(start + sent / pps)
    finally:
        elapsed = time.monotonic() - start
        sock.close()
    return {
        "role": "send",
        "proto": args.proto,
        "frames": sent,
        "frame_bytes": frame,
        "target_mbps": args.rate_mbps,
        "pps_target": round(pps, 1),
        "sent_l2_mbps": round(sent * frame * 8 / elapsed / 1e6, 4) if elapsed > 0 else 0.0,
        "duration_s": round(elapsed, 4),
        "max_behind_frames": max_behind,
        "errors": errors,
    }


def wait_ready(process: subprocess.Popen[str]) -> None:
    """The caller's side of ``_say_ready``: block until a started receiver (or echo) listens; if it failed
    instead, kill it and raise with what it said."""
    assert process.stderr is not None
    line = process.stderr.readline()  # its first line: ready (or why it failed)
    if '"ready": true' not in line:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)  # a failed start exits on its own: let it finish saying why
        process.kill()
        raise RuntimeError(f"pacer did not start: {line}{process.stderr.read()}")


def result_of(process: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    """The JSON line a pacer command prints at its end, once it exits (RuntimeError if it failed)."""
    out, err = process.communicate(timeout=timeout)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if process.returncode != 0 or not lines:
        raise RuntimeError(f"pacer exited {process.returncode}: {err.strip()[-500:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def _say_ready() -> None:
    """One line on stderr once the socket is bound (and listening): the sender may start."""
    print(json.dumps({"role": "recv", "ready": True}), file=sys.stderr, flush=True)


def receive(args: argparse.Namespace) -> Summary:
    """Count what arrives until ``--duration`` after the first packet, ``--idle`` seconds of silence after
    traffic, the TCP peer closing, or SIGTERM."""
    stop = _Stop()
    interval = args.interval
    buckets: list[int] = []
    counts: list[int] = []
    first = last = None
    listener = None
    if args.proto == "udp":
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.bind((args.bind, args.port))
        _say_ready()
    else:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((args.bind, args.port))
        listener.listen(1)
        _say_ready()
        listener.settimeout(0.2)
        begun = time.monotonic()
        accepted: socket.socket | None = None
        while accepted is None and not stop.requested and time.monotonic() - begun < args.accept_timeout:
            try:
                accepted, _ = listener.accept()
            except TimeoutError:
                continue
        if accepted is None:
            listener.close()
            return summarize(args.proto, [], [], interval, args.warmup, 0.0)
        sock = accepted
    sock.settimeout(0.1)
    buffer = bytearray(65536)
    try:
        while not stop.requested:
            try:
                n = sock.recv_into(buffer)
            except TimeoutError:
                n = -1
            now = time.monotonic()
            if n == 0 and args.proto == "tcp":
                break  # the sender closed
            if n < 0:
                if last is not None and now - last > args.idle:
                    break
                if first is not None and now - first > args.duration:
                    break
                continue
            if first is None:
                first = now
            if now - first > args.duration:
                break
            last = now
            i = int((now - first) / interval)
            while len(buckets) <= i:
                buckets.append(0)
                counts.append(0)
            buckets[i] += n
            counts[i] += 1
    finally:
        sock.close()
        if listener is not None:
            listener.close()
    span = (last - first) if first is not None and last is not None else 0.0
    return summarize(args.proto, buckets, counts, interval, args.warmup, span)


def echo(args: argparse.Namespace) -> dict[str, Any]:
    stop = _Stop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((args.bind, args.port))
    sock.settimeout(0.2)
    answered = 0
    print(json.dumps({"role": "echo", "ready": True}), file=sys.stderr, flush=True)
    try:
        while not stop.requested:
            try:
                data, peer = sock.recvfrom(2048)
            except TimeoutError:
                continue
            sock.sendto(data, peer)
            answered += 1
    finally:
        sock.close()
    return {"role": "echo", "answered": answered}


def ping(args: argparse.Namespace) -> dict[str, Any]:
    """UDP probes every ``--interval`` for ``--duration``; each echo's round trip from its own timestamp."""
    stop = _Stop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect((args.to, args.port))
    sock.setblocking(False)
    rtts: list[float] = []
    sent = 0
    start = time.monotonic()
    end = start + args.duration
    try:
        while not stop.requested:
            now = time.monotonic()
            if now < end and now >= start + sent * args.interval:
                with contextlib.suppress(OSError):  # an unreachable echo now: counted as lost
                    sock.send(PROBE.pack(sent, now))
                sent += 1
            while True:
                try:
                    data = sock.recv(2048)
                except (BlockingIOError, ConnectionRefusedError):
                    break
                if len(data) >= PROBE.size:
                    _, stamp = PROBE.unpack_from(data)
                    rtts.append((time.monotonic() - stamp) * 1000)
            if now >= end + args.wait:
                break
            next_send = start + sent * args.interval if now < end else end + args.wait
            select.select([sock], [], [], max(0.0, next_send - time.monotonic()))  # wakes on an echo
    finally:
        sock.close()
    return {"role": "ping", **ping_summary(rtts, sent)}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mininet_topos.pacer", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    sender = commands.add_parser("send", help="paced UDP or TCP at a rate counted in whole frames")
    sender.add_argument("--proto", choices=("udp", "tcp"), default="udp")
    sender.add_argument("--to", required=True)
    sender.add_argument("--port", type=int, required=True)
    sender.add_argument("--local-port", type=int, default=0)
    sender.add_argument("--rate-mbps", type=float, required=True)
    sender.add_argument("--frame", type=int, default=1500, help="UDP: Ethernet frame bytes (64..1514)")
    sender.add_argument("--duration", type=float, default=10.0)
    receiver = commands.add_parser("recv", help="count frames and bytes; one JSON summary at the end")
    receiver.add_argument("--proto", choices=("udp", "tcp"), default="udp")
    receiver.add_argument("--bind", default="0.0.0.0")
    receiver.add_argument("--port", type=int, required=True)
    receiver.add_argument("--duration", type=float, default=10.0, help="seconds after the first packet")
    receiver.add_argument("--interval", type=float, default=0.1)
    receiver.add_argument("--warmup", type=float, default=1.0)
    receiver.add_argument(
        "--idle", type=float, default=None, help="stop after this much silence after traffic (1 s UDP, 5 s TCP)"
    )
    receiver.add_argument("--accept-timeout", type=float, default=30.0)
    echoer = commands.add_parser("echo", help="UDP echo for the latency probe")
    echoer.add_argument("--bind", default="0.0.0.0")
    echoer.add_argument("--port", type=int, required=True)
    prober = commands.add_parser("ping", help="UDP round trips against `echo`")
    prober.add_argument("--to", required=True)
    prober.add_argument("--port", type=int, required=True)
    prober.add_argument("--interval", type=float, default=0.01)
    prober.add_argument("--duration", type=float, default=5.0)
    prober.add_argument("--wait", type=float, default=1.0, help="seconds to wait for late echoes")
    args = parser.parse_args(argv)
    if args.command == "recv" and args.idle is None:
        args.idle = 1.0 if args.proto == "udp" else 5.0  # a TCP flow may sit out a retransmission timeout
    try:
        if args.command == "send":
            if args.proto == "udp":
                udp_payload_for_frame(args.frame)
            packets_per_second(args.rate_mbps, args.frame)
        if getattr(args, "duration", 1.0) <= 0:
            raise PacerError(f"duration must be > 0, got {args.duration}")
    except PacerError as error:
        parser.error(str(error))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "send":
        print(json.dumps(send(args)), flush=True)
    elif args.command == "recv":
        print(receive(args).to_json(), flush=True)
    elif args.command == "echo":
        print(json.dumps(echo(args)), flush=True)
    else:
        print(json.dumps(ping(args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
