"""Mininet link and interface classes for fabric cables.

``DelayRelayLink`` is a cable with real one-way delay on kernels without netem: a network namespace
of its own holding a ``delay_relay`` process between two veth pairs. It is a Mininet link class, so
it works from ``build()`` and from ``mn --custom`` alike, and ``Mininet.stop()`` removes it (every
link's ``stop()`` is called there).
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
from pathlib import Path
from typing import Any

from mininet.link import Intf, Link, TCIntf
from mininet.log import info
from mininet.node import Node

RELAY_MAX_MBPS = 400.0  # the Python relay moves ~450 Mbit/s here: shape below that or it bufferbloats
RELAY_START_TIMEOUT_S = 10.0
RELAY_STOP_TIMEOUT_S = 3.0
_REPO = str(Path(__file__).resolve().parents[1])  # so `-m mininet_topos.delay_relay` resolves anywhere


class SwitchPortIntf(TCIntf):
    """A switch port in the root namespace. IPv6 is turned off before the port comes up: otherwise the
    root namespace's kernel sends router solicitations and MLD reports into the fabric, and the
    controller sees traffic from a MAC that belongs to no host."""

    def config(self, **params: Any) -> Any:
        self.cmd(f"sysctl -qw net.ipv6.conf.{self.name}.disable_ipv6=1")
        return super().config(**params)

    def bwCmds(self, *args: Any, **kwargs: Any) -> tuple[list[str], str]:
        # One class per port, so the quantum never arbitrates anything; setting it silences the kernel's
        # "quantum of class 50001 is big" warning, which Mininet reports as an error.
        cmds, parent = super().bwCmds(*args, **kwargs)
        return [c + " quantum 1514" if " htb rate " in c else c for c in cmds], parent


class DelayRelayLink:
    """``node1:port1 <-> [relay namespace: ra | delay_relay | rb] <-> node2:port2``.

    Duck-types ``mininet.link.Link``: ``intf1``/``intf2`` are the two switch ports, named and numbered
    as the fabric file says; the relay's own interfaces are hidden inside its namespace.
    """

    def __init__(
        self,
        node1: Node,
        node2: Node,
        port1: int | None = None,
        port2: int | None = None,
        intfName1: str | None = None,
        intfName2: str | None = None,
        delay_ms: float = 0.0,
        bw: float | None = None,
        rt_priority: int = 10,
        **_ignored: Any,  # intf=, addr1=, addr2= from Mininet.addLink: port MACs do not matter here
    ) -> None:
        self.delay_ms = float(delay_ms)
        self.bw = None if bw is None else min(float(bw), RELAY_MAX_MBPS)
        self.process: subprocess.Popen[bytes] | None = None
        self.relay_log = ""
        self.halves: list[Link] = []
        self._stopped = False
        self.relay = Node(f"relay-{node1.name}-{node2.name}", inNamespace=True)
        try:
            # Nothing in the relay namespace may speak on its own: no IPv6 autoconfiguration noise.
            self.relay.cmd("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1")
            shaping = {} if self.bw is None else {"bw": self.bw}
            self.halves.append(
                Link(
                    node1,
                    self.relay,
                    port1=port1,
                    port2=0,
                    intfName1=intfName1,
                    intfName2="ra",
                    cls1=SwitchPortIntf,
                    cls2=Intf,
                    params1=shaping,
                )
            )
            self.halves.append(
                Link(
                    self.relay,
                    node2,
                    port1=1,
                    port2=port2,
                    intfName1="rb",
                    intfName2=intfName2,
                    cls1=Intf,
                    cls2=SwitchPortIntf,
                    params2=shaping,
                )
            )
            self.intf1 = self.halves[0].intf1
            self.intf2 = self.halves[1].intf2
            self._prepare_interfaces()
            self._start_relay(rt_priority)
        except BaseException:
            self.stop()
            raise
        info(f"({self.delay_ms:g}ms relay{'' if self.bw is None else f' {self.bw:g}Mbit'}) ")

    def _prepare_interfaces(self) -> None:
        # A frame must cross the relay as the frame it was: no GRO merging, no GSO super-frames.
        offloads = "gro off gso off tso off"
        for name in ("ra", "rb"):
            self.relay.cmd(f"ethtool -K {name} {offloads} 2>/dev/null; ip link set {name} promisc on up")
        for intf in (self.intf1, self.intf2):
            intf.cmd(f"ethtool -K {intf.name} {offloads} 2>/dev/null")
            intf.link = self  # so a port leads to the cable, not to half of it

    def _start_relay(self, rt_priority: int) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_REPO, env.get("PYTHONPATH", "")) if p)
        command = [
            sys.executable,
            "-m",
            "mininet_topos.delay_relay",
            "ra",
            "rb",
            "--delay-ms",
            repr(self.delay_ms),
        ]
        command += ["--rt-priority", str(rt_priority), "--parent-pid", str(os.getpid())]
        # Node.popen runs `mnexec -da <pid>`, which joins the namespace and execs: the Popen's pid is the
        # relay itself, which is the only process we will ever signal.
        self.process = self.relay.popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], RELAY_START_TIMEOUT_S)
        line = self.process.stdout.readline() if ready else b""
        if line.strip() != b"ready":
            self._stop_process()
            raise RuntimeError(f"delay relay for {self} did not start: {line!r} {self.relay_log}")

    def _stop_process(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
        try:
            _, err = process.communicate(timeout=RELAY_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            _, err = process.communicate()
        self.relay_log = err.decode(errors="replace").strip()

    def stop(self) -> None:
        """Stop the relay, delete both veth pairs, end the namespace's shell. Safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        try:
            self._stop_process()
        finally:
            for half in self.halves:
                with contextlib.suppress(Exception):
                    half.stop()
            # The namespace has no name (Mininet unshares it): it is gone once its last process is.
            self.relay.terminate()

    delete = stop

    def status(self) -> str:
        return f"({self.intf1.status()} {self.intf2.status()})"

    def __str__(self) -> str:
        names = [str(getattr(self, attr, "?")) for attr in ("intf1", "intf2")]
        return f"{names[0]}<~{self.delay_ms:g}ms~>{names[1]}"
