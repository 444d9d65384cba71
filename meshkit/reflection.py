"""Server reflection limited to the files that define the reflected services.

grpc's reflection answers from the default descriptor pool, which holds every generated module
the process imported: a public service that imports data_access's stubs would describe
data_access's messages (password hashes included) to anyone at the edge. A private pool with
just the reflected services' files and their imports answers exactly what is meant to be seen.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import FileDescriptor
from google.rpc import error_details_pb2, status_pb2
from grpc_reflection.v1alpha import reflection


def pool_for(service_names: Iterable[str]) -> descriptor_pool.DescriptorPool:
    """A descriptor pool with the files defining service_names and everything they import."""
    default = descriptor_pool.Default()
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(file: FileDescriptor) -> None:
        if file.name in added:
            return
        for dependency in file.dependencies:
            add(dependency)
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)
        pool.Add(proto)
        added.add(file.name)

    for name in service_names:
        add(default.FindServiceByName(name).file)
    # Errors carry ErrorInfo and BadRequest details: clients such as grpcurl look their types up
    # through reflection to print them.
    add(error_details_pb2.DESCRIPTOR)
    add(status_pb2.DESCRIPTOR)
    return pool


def enable(server: grpc.aio.Server, service_names: Iterable[str]) -> None:
    """Serve reflection for service_names (and the reflection service itself) only."""
    names = [*service_names, reflection.SERVICE_NAME]
    reflection.enable_server_reflection(names, server, pool=pool_for(names))
