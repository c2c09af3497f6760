"""gRPC server reflection (v1alpha) answered without the `grpc` package.

The native HTTP/2 front must not import grpc (its C core costs ~10 MiB RSS), yet
grpcurl, Postman and grpc_cli need reflection.  `grpc_reflection`'s servicer
imports grpc, but its generated `reflection_pb2` needs only protobuf, so this
module rebuilds the servicer's answers on top of it, message for message.
"""

from __future__ import annotations

from collections.abc import Iterable

from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import FileDescriptor
from google.protobuf.descriptor_pool import DescriptorPool
from google.protobuf.message import DecodeError
from grpc_reflection.v1alpha import reflection_pb2

__all__ = ["REFLECTION_SERVICE", "Reflection"]

REFLECTION_SERVICE = "grpc.reflection.v1alpha.ServerReflection"

# grpc.StatusCode.X.value without importing grpc: (code, message) as the grpc servicer sends them.
_NOT_FOUND = (5, "not found")
_INVALID_ARGUMENT = (3, "invalid argument")


class Reflection:
    """Answers grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo messages without grpc."""

    def __init__(self, service_names: Iterable[str], pool: DescriptorPool | None = None) -> None:
        """`pool` defaults to protobuf's default pool, where generated *_pb2 modules register."""
        self._services = reflection_pb2.ListServiceResponse(
            service=[reflection_pb2.ServiceResponse(name=name) for name in sorted(service_names)]
        )
        self._pool = descriptor_pool.Default() if pool is None else pool
        # A file in a pool never changes once added, so its serialized proto can be kept for good.
        self._serialized: dict[str, bytes] = {}

    def answer(self, request: bytes) -> bytes:
        """One serialized ServerReflectionRequest in, one serialized ServerReflectionResponse out.

        The stream is bidirectional and stateless per message, so the front calls this once per
        request message, in order.  Raises ValueError when `request` is not a ServerReflectionRequest.
        """
        req = reflection_pb2.ServerReflectionRequest()
        try:
            req.ParseFromString(request)
        except DecodeError as exc:
            raise ValueError(f"not a grpc.reflection.v1alpha.ServerReflectionRequest: {exc}") from exc
        out: bytes = self._respond(req).SerializeToString()
        return out

    def _respond(self, req: reflection_pb2.ServerReflectionRequest) -> reflection_pb2.ServerReflectionResponse:
        kind = req.WhichOneof("message_request")
        try:
            if kind == "file_by_filename":
                return self._files(req, self._pool.FindFileByName(req.file_by_filename))
            if kind == "file_containing_symbol":
                return self._files(req, self._pool.FindFileContainingSymbol(req.file_containing_symbol))
            if kind == "file_containing_extension":
                ext = req.file_containing_extension
                message = self._pool.FindMessageTypeByName(ext.containing_type)
                field = self._pool.FindExtensionByNumber(message, ext.extension_number)
                # Looked up by name, as the grpc servicer does, so that both fail alike.
                return self._files(req, self._pool.FindFileContainingSymbol(field.full_name))
            if kind == "all_extension_numbers_of_type":
                message = self._pool.FindMessageTypeByName(req.all_extension_numbers_of_type)
                numbers = sorted(field.number for field in self._pool.FindAllExtensions(message))
                return reflection_pb2.ServerReflectionResponse(
                    all_extension_numbers_response=reflection_pb2.ExtensionNumberResponse(
                        base_type_name=message.full_name, extension_number=numbers
                    ),
                    original_request=req,
                )
        except KeyError:  # the pool's only way of saying "no such name"
            return _error(req, *_NOT_FOUND)
        if kind == "list_services":
            return reflection_pb2.ServerReflectionResponse(list_services_response=self._services, original_request=req)
        return _error(req, *_INVALID_ARGUMENT)

    def _files(
        self, req: reflection_pb2.ServerReflectionRequest, root: FileDescriptor
    ) -> reflection_pb2.ServerReflectionResponse:
        """The file and all its transitive imports: clients cannot resolve a type from one file alone."""
        # Depth-first, first visit wins: the same order as the grpc servicer's insertion-ordered dict.
        seen: dict[str, FileDescriptor] = {}
        stack = [root]
        while stack:
            fd = stack.pop()
            if fd.name in seen:
                continue
            seen[fd.name] = fd
            stack.extend(reversed(fd.dependencies))
        return reflection_pb2.ServerReflectionResponse(
            file_descriptor_response=reflection_pb2.FileDescriptorResponse(
                file_descriptor_proto=[self._serialize(fd) for fd in seen.values()]
            ),
            original_request=req,
        )

    def _serialize(self, fd: FileDescriptor) -> bytes:
        data = self._serialized.get(fd.name)
        if data is None:
            proto = descriptor_pb2.FileDescriptorProto()
            fd.CopyToProto(proto)
            data = self._serialized[fd.name] = proto.SerializeToString()
        return data


def _error(
    req: reflection_pb2.ServerReflectionRequest, code: int, message: str
) -> reflection_pb2.ServerReflectionResponse:
    return reflection_pb2.ServerReflectionResponse(
        error_response=reflection_pb2.ErrorResponse(error_code=code, error_message=message),
        original_request=req,
    )
