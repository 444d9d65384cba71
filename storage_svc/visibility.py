"""Who may see which media: the one place the rule is written.

- The owner sees every variant of their images, the original included (when kept).
- Admins see every variant (moderation), never the original.
- Nobody else sees the images of an account that is deactivated (deletion pending) or blocked by
  an admin, nor those of an account that blocks them or that they block.
- Everyone, signed in or not, sees the variants of a public account's images: their URLs need
  no signature, and shared caches may keep them.
- Approved followers see the variants of a private account's images, through signed, expiring
  URLs (an <img> tag carries no token).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Sight(Enum):
    """How much of an image a viewer may see."""

    NONE = "none"
    PUBLIC = "public"
    FOLLOWER = "follower"
    ADMIN = "admin"
    OWNER = "owner"


@dataclass(frozen=True)
class Standing:
    """The facts about an image's owner and a viewer that decide what the viewer sees."""

    owner_id: str
    owner_private: bool
    owner_hidden: bool
    viewer_follows: bool
    blocked: bool
    viewer_admin: bool

    @property
    def public(self) -> bool:
        """Whether anyone at all may see the variants (no signature or token needed)."""
        return not self.owner_private and not self.owner_hidden


def sight_of(standing: Standing, viewer_id: str) -> Sight:
    """What viewer_id ("" when signed out) may see of an image with this standing."""
    if viewer_id and viewer_id == standing.owner_id:
        return Sight.OWNER
    if standing.viewer_admin:
        return Sight.ADMIN
    if standing.owner_hidden or standing.blocked:
        return Sight.NONE
    if not standing.owner_private:
        return Sight.PUBLIC
    return Sight.FOLLOWER if standing.viewer_follows else Sight.NONE
