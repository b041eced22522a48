#!/usr/bin/env bash
# Regenerate cluster/etcd_pb/ from the trimmed etcd protos in cluster/etcd_pb/proto/ (the generated files are
# committed; never edit them).
#
# The protos keep etcd's package names (mvccpb, etcdserverpb) so the messages and gRPC method paths on the
# wire are etcd's; they are written flat into cluster/etcd_pb/ and the imports grpcio-tools writes between
# them are made relative, so they import as a package (`from cluster.etcd_pb import rpc_pb2`).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/.."
python="${PYTHON:-$here/../../../.venv/bin/python}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$python" -m grpc_tools.protoc -I "$here" --python_out="$tmp" --pyi_out="$tmp" --grpc_python_out="$tmp" \
  "$here/etcd/mvcc/mvccpb/kv.proto" "$here/etcd/etcdserver/etcdserverpb/rpc.proto"
kv="$tmp/etcd/mvcc/mvccpb"
rpc="$tmp/etcd/etcdserver/etcdserverpb"
sed -i 's/^from etcd\.mvcc\.mvccpb import kv_pb2 as /from . import kv_pb2 as /' "$rpc/rpc_pb2.py" "$rpc/rpc_pb2.pyi"
sed -i 's/^from etcd\.etcdserver\.etcdserverpb import rpc_pb2 as /from . import rpc_pb2 as /' "$rpc/rpc_pb2_grpc.py"
if grep -q '^from etcd\|^import etcd' "$rpc/rpc_pb2.py" "$rpc/rpc_pb2.pyi" "$rpc/rpc_pb2_grpc.py"; then
  echo "generate.sh: unexpected absolute import left in the generated code" >&2
  exit 1
fi
cp "$kv/kv_pb2.py" "$kv/kv_pb2.pyi" "$rpc/rpc_pb2.py" "$rpc/rpc_pb2.pyi" "$rpc/rpc_pb2_grpc.py" "$out/"
echo "regenerated $(cd "$out" && pwd)"
