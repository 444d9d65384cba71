"""Full names of meshgram's public services, the ones the edge routes to."""

from __future__ import annotations

from meshgram.auth.v1 import auth_pb2
from meshgram.storage.v1 import storage_pb2
from meshgram.user.v1 import user_pb2

AUTH_SERVICE = auth_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name
USER_SERVICE = user_pb2.DESCRIPTOR.services_by_name["UserService"].full_name
STORAGE_SERVICE = storage_pb2.DESCRIPTOR.services_by_name["StorageService"].full_name

# Every public service lists all of them in server reflection (reflection answers from the
# imported descriptors, not from implementations), so grpcurl works against each of them and
# against the edge, which routes reflection to auth_svc.
PUBLIC_SERVICES = (AUTH_SERVICE, USER_SERVICE, STORAGE_SERVICE)
