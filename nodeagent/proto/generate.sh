#!/usr/bin/env bash
# Regenerate nodeagent/_pb/ from nodeagent/proto/ (the generated files are committed; never edit them).
# As placement/proto/generate.sh: the proto keeps its full path, the modules are written flat into
# nodeagent/_pb/ with the one import between them made relative.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/../_pb"
python="${PYTHON:-$here/../../.venv/bin/python}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$python" -m grpc_tools.protoc -I "$here" --python_out="$tmp" --pyi_out="$tmp" --grpc_python_out="$tmp" \
  "$here/edgectl/agent/v1/agent.proto"
gen="$tmp/edgectl/agent/v1"
sed -i 's/^from edgectl\.agent\.v1 import agent_pb2 as /from . import agent_pb2 as /' "$gen/agent_pb2_grpc.py"
if grep -q '^from edgectl' "$gen/agent_pb2_grpc.py"; then
  echo "generate.sh: unexpected absolute import left in agent_pb2_grpc.py" >&2
  exit 1
fi
# The stubs check grpcio against the grpcio-tools that wrote them; they use nothing newer than the floor
# pyproject.toml requires, so they ask for that one (else a regeneration raises what installs may use).
floor="$(sed -n 's/^ *"grpcio>=\([0-9.]*\)",$/\1/p' "$here/../../pyproject.toml")"
sed -i "s/^GRPC_GENERATED_VERSION = .*/GRPC_GENERATED_VERSION = '$floor'/" "$gen/agent_pb2_grpc.py"
cp "$gen/agent_pb2.py" "$gen/agent_pb2.pyi" "$gen/agent_pb2_grpc.py" "$out/"
echo "regenerated $(cd "$out" && pwd)"
