"""registry.reflection (grpc-free server reflection) against grpc_reflection's own servicer.

The grpc servicer, called in-process, is the oracle: every answer must equal its answer
message for message, file order included, for the services our server registers and for
a private pool with extensions and a diamond of imports.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import grpc
import pytest
from google.protobuf import api_pb2, descriptor_pb2, descriptor_pool
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2 as rpb
from grpc_reflection.v1alpha.reflection import ReflectionServicer
from grpc_reflection.v1alpha.reflection_pb2 import ExtensionRequest as Ext
from grpc_reflection.v1alpha.reflection_pb2 import ServerReflectionRequest as Req
from grpc_reflection.v1alpha.reflection_pb2 import ServerReflectionResponse as Resp

from registry.compat import rpcserver_pb2 as compat_pb2
from registry.reflection import REFLECTION_SERVICE, Reflection
from registry.v1 import registry_pb2 as pb

#: What registry.rpc registers, unsorted on purpose: list_services must sort.
SERVICES = ("registry.v1.Registry", "R", "grpc.health.v1.Health", REFLECTION_SERVICE)
OUR_FILES = (pb.DESCRIPTOR.name, compat_pb2.DESCRIPTOR.name, health_pb2.DESCRIPTOR.name, rpb.DESCRIPTOR.name)
REPO = Path(__file__).resolve().parents[2]


def oracle(requests: list[Req], pool: descriptor_pool.DescriptorPool | None = None) -> list[Resp]:
    return list(ReflectionServicer(SERVICES, pool=pool).ServerReflectionInfo(iter(requests), None))


def native(requests: list[Req], pool: descriptor_pool.DescriptorPool | None = None) -> list[Resp]:
    r = Reflection(SERVICES, pool=pool)
    return [Resp.FromString(r.answer(req.SerializeToString())) for req in requests]


def file_names(resp: Resp) -> list[str]:
    protos = resp.file_descriptor_response.file_descriptor_proto
    return [descriptor_pb2.FileDescriptorProto.FromString(b).name for b in protos]


DEFAULT_POOL_REQUESTS = [
    Req(list_services="*"),
    Req(list_services="", host="localhost:50051"),
    *(Req(file_by_filename=name) for name in OUR_FILES),
    *(Req(file_containing_symbol=name) for name in SERVICES),
    Req(file_containing_symbol="registry.v1.Service"),
    Req(file_containing_symbol="registry.v1.Service.id"),
    Req(file_containing_symbol="registry.v1.Registry.Match"),  # methods: NOT_FOUND from the pool, like grpc's
    Req(file_containing_symbol="grpc.health.v1.HealthCheckResponse.ServingStatus"),
    Req(file_containing_symbol="google.protobuf.Api"),  # has imports, and they have imports
    Req(file_by_filename="google/protobuf/api.proto", host="h"),
    Req(file_by_filename="no/such.proto"),
    Req(file_by_filename=""),
    Req(file_containing_symbol="no.such.Symbol"),
    Req(file_containing_symbol=".registry.v1.Registry"),
    Req(file_containing_extension=Ext(containing_type="no.such.Message", extension_number=1)),
    Req(file_containing_extension=Ext(containing_type="registry.v1.Service", extension_number=100)),
    Req(all_extension_numbers_of_type="registry.v1.Service"),
    Req(all_extension_numbers_of_type="no.such.Message"),
    Req(),
    Req(host="only-a-host"),
]


@pytest.mark.parametrize("req", DEFAULT_POOL_REQUESTS, ids=lambda r: str(r).replace("\n", " ").strip() or "empty")
def test_default_pool_answers_equal_grpc_servicer(req: Req) -> None:
    assert api_pb2.Api.DESCRIPTOR  # its files are in the default pool
    got, want = native([req])[0], oracle([req])[0]
    assert got == want
    assert got.original_request == req
    assert file_names(got) == file_names(want)


def _private_pool() -> descriptor_pool.DescriptorPool:
    """base <- left, base <- right, (left, right) <- top: depth-first and breadth-first orders differ."""
    pool = descriptor_pool.DescriptorPool()
    opt = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
    i32 = descriptor_pb2.FieldDescriptorProto.TYPE_INT32

    def ext(name: str, number: int) -> descriptor_pb2.FieldDescriptorProto:
        return descriptor_pb2.FieldDescriptorProto(name=name, number=number, label=opt, type=i32, extendee=".x.Base")

    base = descriptor_pb2.FileDescriptorProto(name="x/base.proto", package="x", syntax="proto2")
    base.message_type.add(name="Base").extension_range.add(start=100, end=200)
    base.message_type.add(name="Plain")
    left = descriptor_pb2.FileDescriptorProto(name="x/left.proto", package="x", syntax="proto2",
                                              dependency=["x/base.proto"])
    left.extension.extend([ext("b150", 150), ext("b100", 100)])
    right = descriptor_pb2.FileDescriptorProto(name="x/right.proto", package="x", syntax="proto2",
                                               dependency=["x/base.proto"])
    right.message_type.add(name="Holder").extension.append(ext("b120", 120))  # x.Holder.b120
    top = descriptor_pb2.FileDescriptorProto(name="x/top.proto", package="x", syntax="proto2",
                                             dependency=["x/left.proto", "x/right.proto"])
    top.message_type.add(name="Top")
    for f in (base, left, right, top):
        pool.Add(f)
    return pool


PRIVATE_POOL_REQUESTS = [
    Req(file_by_filename="x/top.proto"),
    Req(file_containing_symbol="x.Top"),
    Req(file_containing_symbol="x.Holder.b120"),
    Req(file_containing_symbol="x.b100"),
    Req(file_containing_extension=Ext(containing_type="x.Base", extension_number=150)),
    Req(file_containing_extension=Ext(containing_type="x.Base", extension_number=120)),
    Req(file_containing_extension=Ext(containing_type="x.Base", extension_number=199)),
    Req(file_containing_extension=Ext(containing_type="x.Plain", extension_number=100)),
    Req(all_extension_numbers_of_type="x.Base"),
    Req(all_extension_numbers_of_type="x.Plain"),
    Req(all_extension_numbers_of_type="x.Top"),
    Req(file_containing_symbol="registry.v1.Registry"),  # in the default pool only
]


@pytest.mark.parametrize("req", PRIVATE_POOL_REQUESTS, ids=lambda r: str(r).replace("\n", " ").strip())
def test_private_pool_answers_equal_grpc_servicer(req: Req) -> None:
    pool = _private_pool()
    got, want = native([req], pool)[0], oracle([req], pool)[0]
    assert got == want
    assert file_names(got) == file_names(want)


def test_answers_hold_what_clients_need() -> None:
    # Checked without the oracle, so a change in grpc_reflection cannot silently move the target.
    pool = _private_pool()
    r = Reflection(SERVICES, pool=pool)

    def ask(req: Req) -> Resp:
        return Resp.FromString(r.answer(req.SerializeToString()))

    assert file_names(ask(Req(file_by_filename="x/top.proto"))) == [
        "x/top.proto", "x/left.proto", "x/base.proto", "x/right.proto"]
    assert file_names(ask(Req(file_containing_extension=Ext(containing_type="x.Base", extension_number=120)))) == [
        "x/right.proto", "x/base.proto"]
    nums = ask(Req(all_extension_numbers_of_type="x.Base")).all_extension_numbers_response
    assert (nums.base_type_name, list(nums.extension_number)) == ("x.Base", [100, 120, 150])
    listed = ask(Req(list_services="")).list_services_response
    assert [s.name for s in listed.service] == sorted(SERVICES)
    missing = ask(Req(file_containing_symbol="nope", host="h"))
    assert missing.error_response == rpb.ErrorResponse(
        error_code=grpc.StatusCode.NOT_FOUND.value[0], error_message=grpc.StatusCode.NOT_FOUND.value[1])
    assert missing.original_request == Req(file_containing_symbol="nope", host="h")
    empty = ask(Req())
    assert empty.error_response == rpb.ErrorResponse(
        error_code=grpc.StatusCode.INVALID_ARGUMENT.value[0], error_message=grpc.StatusCode.INVALID_ARGUMENT.value[1])
    assert Resp.FromString(r.answer(b"")) == empty


def test_a_stream_of_requests_equals_grpc_servicer_stream() -> None:
    # One Reflection answers a whole stream, repeats included: its cache must not change answers.
    requests = DEFAULT_POOL_REQUESTS + DEFAULT_POOL_REQUESTS[::-1]
    assert native(requests) == oracle(requests)


def test_cache_is_per_instance_and_per_file() -> None:
    pool = _private_pool()
    a, b = Reflection(SERVICES, pool=pool), Reflection(SERVICES, pool=pool)
    req = Req(file_by_filename="x/left.proto").SerializeToString()
    first = a.answer(req)
    assert set(a._serialized) == {"x/left.proto", "x/base.proto"}
    assert b._serialized == {}
    assert a.answer(req) == first == b.answer(req)
    a.answer(Req(file_containing_symbol="x.Top").SerializeToString())
    assert set(a._serialized) == {"x/top.proto", "x/left.proto", "x/right.proto", "x/base.proto"}


@pytest.mark.parametrize("data", [
    b"\xff",  # field number 31, wire type 7: no such wire type
    b"\x1a\x05abc",  # file_by_filename declares 5 bytes, has 3
    b"\x1a\x02\xc3\x28",  # file_by_filename is not UTF-8
    b"\x2a\x03\x0a\x05x",  # file_containing_extension: the nested message is truncated
    b"\x08",  # a varint tag with no value
], ids=["bad-wire-type", "truncated", "not-utf8", "bad-nested", "tag-only"])
def test_bytes_that_are_not_a_request_raise_value_error(data: bytes) -> None:
    with pytest.raises(ValueError, match="ServerReflectionRequest"):
        Reflection(SERVICES).answer(data)


def test_import_and_answers_leave_grpc_out() -> None:
    code = textwrap.dedent("""
        import sys
        import registry.reflection as m
        import registry.v1.registry_pb2, registry.compat.rpcserver_pb2, grpc_health.v1.health_pb2
        from grpc_reflection.v1alpha import reflection_pb2 as rpb
        r = m.Reflection(["registry.v1.Registry"])
        out = rpb.ServerReflectionResponse.FromString(
            r.answer(rpb.ServerReflectionRequest(file_containing_symbol="registry.v1.Registry").SerializeToString()))
        assert len(out.file_descriptor_response.file_descriptor_proto) == 1, out
        print(sorted(n for n in sys.modules if n == "grpc" or n.startswith("grpc.")))
    """)
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"
