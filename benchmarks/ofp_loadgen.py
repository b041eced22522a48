"""A fake OpenFlow 1.3 switch that sends packet-ins as fast as a controller answers them.

Speaks just enough of the protocol (hello, features, port description, empty flow and group
tables, echo, barrier) for a controller to reach its main state, then keeps WINDOW packet-ins
outstanding for SECONDS and counts packet-outs (answers) and flow-mods. Raw struct encoding, so
the generator is cheap next to the controllers it measures; it runs in its own process.

Usage: python benchmarks/ofp_loadgen.py PORT {arp|l2} SECONDS WINDOW   (prints one JSON line)
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import threading
import time
from functools import partial

VERSION = 4
HELLO, ERROR, ECHO_REQUEST, ECHO_REPLY, FEATURES_REQUEST, FEATURES_REPLY = 0, 1, 2, 3, 5, 6
PACKET_IN, PACKET_OUT, FLOW_MOD = 10, 13, 14
MULTIPART_REQUEST, MULTIPART_REPLY, BARRIER_REQUEST, BARRIER_REPLY = 18, 19, 20, 21
MP_PORT_DESC = 13
COOKIE_ARP_PROXY = 0xEC01_0000_0000_0002
MACS = (bytes.fromhex("020000000001"), bytes.fromhex("020000000002"))
IPS = (bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))


def header(kind: int, length: int, xid: int) -> bytes:
    return struct.pack("!BBHI", VERSION, kind, length, xid)


def message(kind: int, xid: int, body: bytes = b"") -> bytes:
    return header(kind, 8 + len(body), xid) + body


def port(no: int) -> bytes:
    name = f"fake-eth{no}".encode()
    hw = bytes.fromhex(f"0200000000{no:02x}")
    return struct.pack("!I4x6s2x16sIIIIIIII", no, hw, name, 0, 4, 0, 0, 0, 0, 10_000_000, 10_000_000)


def packet_in(xid: int, in_port: int, data: bytes, cookie: int) -> bytes:
    match = struct.pack("!HHII", 1, 12, 0x80000004, in_port) + b"\x00" * 4  # OXM in_port, padded to 8
    body = struct.pack("!IHBBQ", 0xFFFFFFFF, len(data), 0, 0, cookie) + match + b"\x00\x00" + data
    return message(PACKET_IN, xid, body)


def arp_request(i: int) -> tuple[int, bytes]:
    src, dst = i % 2, 1 - i % 2
    frame = b"\xff" * 6 + MACS[src] + b"\x08\x06"
    frame += struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + MACS[src] + IPS[src] + b"\x00" * 6 + IPS[dst]
    return src + 1, frame


def l2_frame(i: int) -> tuple[int, bytes]:
    src, dst = i % 2, 1 - i % 2
    frame = MACS[dst] + MACS[src] + b"\x08\x00" + bytes(46)
    return src + 1, frame


class FakeSwitch:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.send_lock = threading.Lock()
        self.packet_outs = 0
        self.flow_mods = 0
        self.ready = threading.Event()
        self.answered = threading.Condition()

    def send(self, data: bytes) -> None:
        with self.send_lock:
            self.sock.sendall(data)

    def reader(self) -> None:
        buf = b""
        while True:
            try:
                chunk = self.sock.recv(1 << 16)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            while len(buf) >= 8:
                _, kind, length, xid = struct.unpack_from("!BBHI", buf)
                if len(buf) < length:
                    break
                body, buf = buf[8:length], buf[length:]
                self.handle(kind, xid, body)

    def handle(self, kind: int, xid: int, body: bytes) -> None:
        if kind == HELLO:
            self.send(message(HELLO, xid))
        elif kind == FEATURES_REQUEST:
            self.send(message(FEATURES_REPLY, xid, struct.pack("!QIBB2xII", 1, 0, 254, 0, 0x4F, 0)))
        elif kind == ECHO_REQUEST:
            self.send(message(ECHO_REPLY, xid, body))
        elif kind == BARRIER_REQUEST:
            self.send(message(BARRIER_REPLY, xid))
        elif kind == MULTIPART_REQUEST:
            (mp_type,) = struct.unpack_from("!H", body)
            ports = port(1) + port(2) if mp_type == MP_PORT_DESC else b""
            self.send(message(MULTIPART_REPLY, xid, struct.pack("!HH4x", mp_type, 0) + ports))
            if mp_type == MP_PORT_DESC:
                self.ready.set()
        elif kind == PACKET_OUT:
            with self.answered:
                self.packet_outs += 1
                self.answered.notify()
        elif kind == FLOW_MOD:
            self.flow_mods += 1


def has_room(switch: FakeSwitch, answers_needed: int) -> bool:
    return switch.packet_outs > answers_needed


def main() -> int:
    port_no, mode, seconds, window = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
    deadline = time.monotonic() + 15
    while True:  # the controller may still be starting its listener
        try:
            sock = socket.create_connection(("127.0.0.1", port_no), timeout=10)
            break
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    sock.settimeout(None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    switch = FakeSwitch(sock)
    threading.Thread(target=switch.reader, daemon=True).start()
    switch.send(message(HELLO, 1))
    if not switch.ready.wait(10):
        print(json.dumps({"error": "controller never asked for the port description"}))
        return 1
    time.sleep(2.0)  # let the controller finish its own start-up traffic (reconciliation, probes)
    frame_of = arp_request if mode == "arp" else l2_frame
    cookie = COOKIE_ARP_PROXY if mode == "arp" else 0
    baseline_outs = switch.packet_outs  # probes the controller sends on its own
    sent = 0
    started = time.monotonic()
    deadline = started + seconds
    while time.monotonic() < deadline:
        with switch.answered:
            switch.answered.wait_for(partial(has_room, switch, sent - window + baseline_outs), timeout=0.5)
        in_port, frame = frame_of(sent)
        switch.send(packet_in(sent + 100, in_port, frame, cookie))
        sent += 1
    elapsed = time.monotonic() - started
    answered = switch.packet_outs - baseline_outs
    print(
        json.dumps(
            {
                "mode": mode,
                "seconds": round(elapsed, 2),
                "packet_ins": sent,
                "answered": answered,
                "per_second": round(answered / elapsed, 1),
                "flow_mods": switch.flow_mods,
            }
        )
    )
    sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
