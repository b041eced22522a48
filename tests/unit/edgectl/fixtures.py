from __future__ import annotations

from functools import cache

from netmodel.fabric import FabricSpec
from netmodel.fabric_file import parse_fabric
from tests.integration.harness import REPO

EXAMPLE = REPO / "examples" / "edge-cloud.yaml"


@cache
def example_spec() -> FabricSpec:
    return parse_fabric(EXAMPLE.read_bytes(), str(EXAMPLE))
