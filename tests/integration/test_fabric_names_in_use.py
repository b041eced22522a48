"""A second build of a running fabric is refused, and the running network is left as it was.

Mininet creates and deletes by name (``--if-exists del-br``, ``ip link del`` before each veth, a failed
build's teardown deletes every bridge it was asked for), so before the check a second ``build()`` of
the same file took the first network apart. Real OVS and Mininet; no controller (the two switches are
OVS learning switches, standalone, with no loop). Names are unusual (nit*) so nothing here can collide
with another test's network; teardown stops exactly what this test built.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import mininet_topos
from mininet_topos.inuse import NamesInUse

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

FABRIC = """
name: nit
subnet: 10.78.0.0/24
sites: [{id: lab, tier: edge, region: here}]
switches:
  - {id: nits1, dpid: 0x7b01, site: lab}
  - {id: nits2, dpid: 0x7b02, site: lab}
links:
  - {a: nits1, b: nits2, latency_ms: 0, bandwidth_mbps: 100}
hosts:
  - {id: nith1, switch: nits1, ip: 10.78.0.1}
  - {id: nith2, switch: nits2, ip: 10.78.0.2}
"""
BRIDGES = {"nits1", "nits2"}
PORTS = {"nits1-eth1", "nits1-eth2", "nits2-eth1", "nits2-eth2"}


def _bridges() -> set[str]:
    out = subprocess.run(["ovs-vsctl", "list-br"], capture_output=True, text=True, check=True, timeout=20)
    return set(out.stdout.split())


def _root_interfaces() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True, timeout=20)
    return {m.group(1) for m in re.finditer(r"^\d+: ([^:@]+)", out.stdout, re.MULTILINE)}


def _pings(net: mininet_topos.FabricNet) -> bool:
    out = net["nith1"].cmd("ping -c 3 -i 0.2 -W 2 10.78.0.2")
    return bool(re.search(r" 0% packet loss", out))


@pytest.fixture
def fabric_file(tmp_path: Path) -> Path:
    path = tmp_path / "nit.yaml"
    path.write_text(FABRIC)
    return path


@pytest.fixture
def running(fabric_file: Path) -> Iterator[mininet_topos.FabricNet]:
    assert not (_bridges() & BRIDGES), "left over from an earlier run: remove nits1/nits2 by hand"
    net = mininet_topos.build(fabric_file, controller=None, real_delay=False, fail_mode="standalone")
    try:
        net.start()
        assert _pings(net), "the first network must work before the test means anything"
        yield net
    finally:
        net.stop()


def test_second_build_of_a_running_fabric_is_refused_and_the_first_keeps_working(
    running: mininet_topos.FabricNet, fabric_file: Path
) -> None:
    second = None
    try:
        with pytest.raises(NamesInUse) as refused:
            second = mininet_topos.build(fabric_file, controller=None, real_delay=False, fail_mode="standalone")
    finally:
        if second is not None:  # only without the check: do not leave it running
            second.stop()
    message = str(refused.value)
    assert "nits1" in message and "nits2" in message and "nits1-eth1" in message, message
    assert set(refused.value.bridges) == BRIDGES
    assert set(refused.value.interfaces) >= PORTS

    assert _bridges() >= BRIDGES
    assert _root_interfaces() >= PORTS
    assert _pings(running)


def test_a_fabric_sharing_one_switch_name_is_refused_too(running: mininet_topos.FabricNet, tmp_path: Path) -> None:
    other = tmp_path / "other.yaml"
    other.write_text(FABRIC.replace("nits2", "nitx2").replace("nith", "nitz").replace("name: nit", "name: other"))
    with pytest.raises(NamesInUse) as refused:
        mininet_topos.build(other, controller=None, real_delay=False, fail_mode="standalone")
    assert refused.value.bridges == ["nits1"]
    assert "nitx2" not in _bridges()  # nothing of the refused build was created
    assert _bridges() >= BRIDGES and _pings(running)
