"""Global ids (Relay): how an id reads back into the UUID of a record of one type, and how one is made.

Every resolver reads ids through here, so an id of another type, or no id at all, is treated the
same way everywhere: a refusal naming the argument for a write (`node_id`), nothing for a read that
answers null or says so itself (`node_uuid`).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from strawberry import relay
from strawberry.types import Info
from strawberry.types.base import StrawberryObjectDefinition

from models.kernel import errors as domain


def parse_uuid(raw: str) -> UUID | None:
    """A bare UUID (the node part of a global id), or None."""
    try:
        return UUID(raw)
    except ValueError:
        return None


def node_uuid(raw: str, type_name: str) -> UUID | None:
    """The UUID inside a global id of `type_name`, or None if it is anything else."""
    try:
        parsed = relay.GlobalID.from_id(raw)
    except (ValueError, relay.GlobalIDValueError):
        return None
    return parse_uuid(parsed.node_id) if parsed.type_name == type_name else None


def node_id(raw: str, type_name: str, field_name: str) -> UUID:
    """The UUID in a global id of `type_name`; anything else is a refusal naming the field."""
    found = node_uuid(raw, type_name)
    if found is None:
        raise domain.InvalidInput(field_name, f"{field_name} is not a {type_name} id")
    return found


def global_id(type_name: str, value: UUID) -> str:
    return str(relay.GlobalID(type_name, str(value)))


def node_type(info: Info[Any, None], type_name: str) -> Any:
    """The class of the object type called `type_name`, found through the schema as Strawberry's
    own `node` field finds it: for a field whose type lives in a module that imports this one's
    (`DosingSession.recordedBy` is a `Provider`, and the Provider's care teams list Patients)."""
    definition = info.schema.get_type_by_name(type_name)
    assert isinstance(definition, StrawberryObjectDefinition), f"{type_name} is not an object type of the schema"
    return definition.origin
