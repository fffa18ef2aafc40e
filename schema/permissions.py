"""The one question resolvers ask of the request: who is the viewer?"""

from __future__ import annotations

from strawberry.types import Info

from models.identity.access import Viewer
from schema.context import Context
from schema.errors import Unauthenticated


def viewer_of(info: Info[Context, None]) -> Viewer:
    viewer = info.context.viewer
    if viewer is None:
        raise Unauthenticated("sign in first: send a bearer access token from POST /auth/token")
    return viewer
