"""The client sidecars of a testbed list every control-plane replica's xDS socket."""

from __future__ import annotations

from mininet_topos.mesh import MeshTestbed


def test_one_socket_or_every_replicas(tmp_path) -> None:
    one = MeshTestbed(object(), xds_socket="/run/a/xds.sock", run_dir=tmp_path)
    assert one.xds_addresses == ["unix:/run/a/xds.sock"]
    several = MeshTestbed(object(), xds_socket=["/run/a/xds.sock", "/run/b/xds.sock"], run_dir=tmp_path)
    assert several.xds_addresses == ["unix:/run/a/xds.sock", "unix:/run/b/xds.sock"]
