"""Does this kernel have ``sch_netem``? Asked once per process, by trying it on a throwaway veth.

Reading /proc/modules or modinfo is not enough: netem may be built in, or absent with the module
loader locked in a container. Trying is the only reliable answer.
"""

from __future__ import annotations

import functools
import os
import subprocess
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class NetemProbe:
    available: bool
    reason: str


def judge_probe(returncode: int, stderr: str) -> NetemProbe:
    """Turn the result of ``tc qdisc add dev X root netem delay 1ms`` into an answer. Pure."""
    if returncode == 0:
        return NetemProbe(True, "tc accepted a netem qdisc")
    text = " ".join(stderr.split()) or f"tc exited with {returncode}"
    lowered = text.lower()
    if "unknown" in lowered or "no such file" in lowered or "not supported" in lowered:
        return NetemProbe(False, f"no sch_netem in this kernel ({text})")
    return NetemProbe(False, f"netem unusable here ({text})")


def probe_name(pid: int) -> str:
    """A veth name that is ours alone (pid-based) and fits IFNAMSIZ."""
    return f"mtnp{pid % 10_000_000}"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=10, check=False)


@functools.cache
def probe_netem() -> NetemProbe:
    """Create a veth pair, try netem on it, delete the pair (deleting one end removes both)."""
    name = probe_name(os.getpid())
    made = _run("ip", "link", "add", "name", name, "type", "veth", "peer", "name", name + "p")
    if made.returncode != 0:
        return NetemProbe(False, "could not create a probe veth: " + " ".join(made.stderr.split()))
    try:
        tried = _run("tc", "qdisc", "add", "dev", name, "root", "netem", "delay", "1ms")
        return judge_probe(tried.returncode, tried.stderr)
    finally:
        _run("ip", "link", "del", name)


def netem_available() -> bool:
    return probe_netem().available
