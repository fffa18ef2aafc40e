"""One's own logins in the API: `myLogins`, `endLogin`, `endOtherLogins` (PRODUCT.md capability 11)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import strawberry
from strawberry.types import Info

from models.identity import logins
from models.identity.sign_in_records import SessionFamily
from schema.context import Context
from schema.errors import NotFound, ValidationError, refusals_as_errors
from schema.ids import global_id, node_id
from schema.mutations import payload
from schema.permissions import viewer_of


@strawberry.type(name="Login")
class LoginType:
    id: strawberry.ID
    created_at: datetime
    last_used_at: datetime
    user_agent: str | None
    current: bool = strawberry.field(description="The login this request is made with.")

    @classmethod
    def from_model(cls, family: SessionFamily, current: bool) -> LoginType:
        return cls(
            id=strawberry.ID(global_id("Login", family.id)),
            created_at=family.created_at,
            last_used_at=family.last_used_at,
            user_agent=family.user_agent,
            current=current,
        )


@strawberry.type(name="EndedLogins")
class EndedLogins:
    count: int


@strawberry.input
class EndLoginInput:
    login_id: strawberry.ID


EndedLoginsResult = Annotated[EndedLogins | NotFound | ValidationError, strawberry.union("EndedLoginsResult")]


@strawberry.type(name="EndedLoginsPayload")
class EndedLoginsPayload:
    result: EndedLoginsResult


@strawberry.type
class LoginQuery:
    @strawberry.field(description="Your active logins (each sign-in on a device or browser), the latest used first.")
    async def my_logins(self, info: Info[Context, None]) -> list[LoginType]:
        with refusals_as_errors():
            families = await logins.list_logins(viewer_of(info), now=info.context.now())
        return [LoginType.from_model(family, family.id == info.context.session_id) for family in families]


@strawberry.type
class LoginMutation:
    @strawberry.mutation(description="Sign one of your logins out: its refresh tokens stop at once.")
    async def end_login(self, info: Info[Context, None], input: EndLoginInput) -> EndedLoginsPayload:
        async def call() -> int:
            login_id = node_id(input.login_id, "Login", "loginId")
            return await logins.end_login(viewer_of(info), login_id, now=info.context.now())

        return await payload(EndedLoginsPayload, call, _ended)

    @strawberry.mutation(description="Sign out everywhere but here.")
    async def end_other_logins(self, info: Info[Context, None]) -> EndedLoginsPayload:
        viewer = viewer_of(info)
        return await payload(
            EndedLoginsPayload,
            lambda: logins.end_other_logins(viewer, info.context.session_id, now=info.context.now()),
            _ended,
        )


def _ended(count: int) -> EndedLogins:
    return EndedLogins(count=count)
