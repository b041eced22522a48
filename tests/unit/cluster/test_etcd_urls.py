"""The etcd client's pure parts: endpoint URLs, prefix ranges, Compare and Op building, their protobuf form."""

from __future__ import annotations

import pytest

from cluster.etcd import EtcdClient, _compare_pb, _op_pb, channel_target
from cluster.etcd_model import Compare, Endpoint, Op, parse_endpoint, parse_endpoints, prefix_end, split_urls
from cluster.etcd_pb import rpc_pb2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http://127.0.0.1:2379", Endpoint("127.0.0.1", 2379)),
        ("127.0.0.1:23790", Endpoint("127.0.0.1", 23790)),
        ("http://etcd-1.example:2379/", Endpoint("etcd-1.example", 2379)),
        ("10.0.0.1", Endpoint("10.0.0.1", 2379)),
        ("http://[::1]:2380", Endpoint("::1", 2380)),
        ("  HTTP://10.0.0.2:1 ", Endpoint("10.0.0.2", 1)),
    ],
)
def test_endpoints_parse(text: str, expected: Endpoint) -> None:
    assert parse_endpoint(text) == expected


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "empty"),
        ("https://10.0.0.1:2379", "https (TLS) is not supported"),
        ("grpc://10.0.0.1:2379", "unknown scheme"),
        ("http://10.0.0.1:2379/v3", "no path"),
        ("http://user@10.0.0.1:2379", "no path, query or user"),
        ("http://10.0.0.1:port", "not a number"),
        ("http://10.0.0.1:70000", "out of range"),
        ("http://10.0.0.1:0", "out of range"),
        ("http://10.0.0.1:", "empty port"),
        ("http://:2379", "no host"),
        ("::1:2379", "in brackets"),
        ("http://[::1:2379", "unclosed"),
    ],
)
def test_bad_endpoints_are_refused_with_the_reason(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says.replace("(", r"\(").replace(")", r"\)")):
        parse_endpoint(text)


def test_url_lists_split_on_commas_and_refuse_empty_items() -> None:
    assert split_urls("http://a:1, http://b:2") == ["http://a:1", "http://b:2"]
    for bad in ("", " ", "http://a:1,,http://b:2", "http://a:1,"):
        with pytest.raises(ValueError, match="comma-separated"):
            split_urls(bad)


def test_endpoint_lists_refuse_repeats_none_and_a_bare_string() -> None:
    with pytest.raises(ValueError, match="repeat"):
        parse_endpoints(["http://10.0.0.1:2379", "10.0.0.1:2379"])
    with pytest.raises(ValueError, match="no etcd endpoint"):
        parse_endpoints([])
    with pytest.raises(TypeError, match="from_urls"):
        parse_endpoints("http://10.0.0.1:2379")


def test_from_urls_reports_the_bad_url() -> None:
    with pytest.raises(ValueError, match="https"):
        EtcdClient.from_urls("http://127.0.0.1:2379,https://127.0.0.1:2380")


def test_one_channel_target_names_every_member() -> None:
    endpoints = parse_endpoints(["http://127.0.0.1:1", "127.0.0.2:2", "localhost:3"])
    assert channel_target(endpoints) == "ipv4:127.0.0.1:1,127.0.0.2:2,127.0.0.1:3"
    assert channel_target(parse_endpoints(["[::1]:5"])) == "ipv6:[::1]:5"


@pytest.mark.parametrize(
    ("prefix", "end"),
    [(b"a", b"b"), (b"edgectl/log/", b"edgectl/log0"), (b"a\xff", b"b"), (b"\xff\xff", b"\0"), (b"", b"\0")],
)
def test_prefix_end_is_etcds_rule(prefix: bytes, end: bytes) -> None:
    assert prefix_end(prefix) == end


def test_compares_check_operator_key_and_operand_type() -> None:
    assert Compare.create_revision(b"k", "=", 0) == Compare("create_revision", b"k", "=", 0)
    assert Compare.value(b"k", "!=", b"v").operand == b"v"
    assert Compare.version(b"k", ">", 1).target == "version"
    with pytest.raises(ValueError, match="operator '=='"):
        Compare.mod_revision(b"k", "==", 1)
    with pytest.raises(TypeError, match="takes bytes"):
        Compare.value(b"k", "=", "text")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="takes an int"):
        Compare.create_revision(b"k", "=", b"0")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="keys are bytes"):
        Compare.create_revision("k", "=", 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not empty"):
        Compare.version(b"", "=", 0)


def test_ops_check_their_arguments() -> None:
    assert Op.put(b"k", b"v", lease=7) == Op("put", b"k", b"v", 7)
    assert Op.delete(b"p/", prefix=True).range_end == b"p0"
    assert Op.get(b"k").range_end == b""
    with pytest.raises(TypeError, match="values are bytes"):
        Op.put(b"k", "v")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="negative"):
        Op.put(b"k", b"v", lease=-1)


def test_compares_and_ops_become_etcds_messages() -> None:
    create_only = _compare_pb(Compare.create_revision(b"k", "=", 0))
    assert create_only.target == rpc_pb2.Compare.CREATE and create_only.result == rpc_pb2.Compare.EQUAL
    assert create_only.WhichOneof("target_union") == "create_revision" and create_only.create_revision == 0
    value = _compare_pb(Compare.value(b"k", "<", b"v"))
    assert value.target == rpc_pb2.Compare.VALUE and value.result == rpc_pb2.Compare.LESS and value.value == b"v"
    mod = _compare_pb(Compare.mod_revision(b"k", "!=", 9))
    assert mod.result == rpc_pb2.Compare.NOT_EQUAL and mod.mod_revision == 9
    put = _op_pb(Op.put(b"k", b"v", lease=3))
    assert put.request_put.key == b"k" and put.request_put.value == b"v" and put.request_put.lease == 3
    delete = _op_pb(Op.delete(b"p/", prefix=True))
    assert delete.request_delete_range.range_end == b"p0"
    get = _op_pb(Op.get(b"p/", prefix=True))
    assert get.request_range.range_end == b"p0" and get.request_range.sort_order == rpc_pb2.RangeRequest.ASCEND


def test_the_wire_format_is_etcds_field_numbers() -> None:
    # A PutRequest{key=b"k", value=b"v", lease=1} as etcd's Go code encodes it: fields 1, 2, 3.
    assert rpc_pb2.PutRequest(key=b"k", value=b"v", lease=1).SerializeToString() == b"\n\x01k\x12\x01v\x18\x01"
    assert rpc_pb2.DESCRIPTOR.package == "etcdserverpb"
    assert rpc_pb2.DESCRIPTOR.services_by_name["KV"].full_name == "etcdserverpb.KV"
