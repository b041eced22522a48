#!/usr/bin/env bash
# Regenerate placement/_pb/ from placement/proto/ (the generated files are committed; never edit them).
#
# The proto keeps its full path (edgectl/placement/v1/placement.proto) so the descriptor, which gRPC
# reflection serves, has its canonical name; the modules are written flat into placement/_pb/ and the
# one import grpcio-tools writes between them is made relative, so they import as a package
# (`from placement._pb import placement_pb2`) without a top-level `edgectl.placement` module.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/../_pb"
python="${PYTHON:-$here/../../.venv/bin/python}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$python" -m grpc_tools.protoc -I "$here" --python_out="$tmp" --pyi_out="$tmp" --grpc_python_out="$tmp" \
  "$here/edgectl/placement/v1/placement.proto"
gen="$tmp/edgectl/placement/v1"
sed -i 's/^from edgectl\.placement\.v1 import placement_pb2 as /from . import placement_pb2 as /' \
  "$gen/placement_pb2_grpc.py"
if grep -q '^from edgectl' "$gen/placement_pb2_grpc.py"; then
  echo "generate.sh: unexpected absolute import left in placement_pb2_grpc.py" >&2
  exit 1
fi
cp "$gen/placement_pb2.py" "$gen/placement_pb2.pyi" "$gen/placement_pb2_grpc.py" "$out/"
echo "regenerated $(cd "$out" && pwd)"
