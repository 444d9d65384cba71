"""Which UserService answers can carry private fields at all: a new RPC or field that would send
an email to someone who is not its owner or an admin fails here before it ships."""

from __future__ import annotations

from google.protobuf.descriptor import Descriptor

from meshgram.user.v1 import user_pb2

PRIVATE_FIELDS = {"email"}
# Answers to the owner about their own account (the email is theirs) ...
OWNER_ONLY = {"GetMyProfile", "UpdateMyProfile", "ChangeUsername"}
# ... to admins only (checked by data_access on every call, and audited) ...
ADMINS_ONLY = {"GetAccountStatus", "BlockAccount", "UnblockAccount"}
# ... and the profile page, which fills the email for its owner only (tests/e2e/
# test_social_graph.py checks each kind of viewer).
FILTERED_PER_VIEWER = {"GetProfile"}


def private_paths(
    message: Descriptor, prefix: str = "", seen: frozenset[str] = frozenset()
) -> set[str]:
    """Dotted paths of the private fields reachable in a message."""
    found = set()
    for field in message.fields:
        path = f"{prefix}{field.name}"
        if field.name in PRIVATE_FIELDS:
            found.add(path)
        if field.message_type is not None and field.message_type.full_name not in seen:
            found |= private_paths(field.message_type, f"{path}.", seen | {message.full_name})
    return found


def test_only_owner_admin_and_per_viewer_answers_can_carry_private_fields() -> None:
    service = user_pb2.DESCRIPTOR.services_by_name["UserService"]
    carrying = {method.name for method in service.methods if private_paths(method.output_type)}
    assert carrying == OWNER_ONLY | ADMINS_ONLY | FILTERED_PER_VIEWER


def test_lists_and_search_show_summaries_without_private_fields() -> None:
    assert private_paths(user_pb2.ProfileSummary.DESCRIPTOR) == set()
    assert private_paths(user_pb2.SearchProfilesResponse.DESCRIPTOR) == set()
    assert private_paths(user_pb2.GetProfileResponse.DESCRIPTOR) == {"profile.email"}
