"""Schema extensions: the GraphQL protections and the error policy.

Depth, alias and token limits refuse abusive documents before anything runs; introspection is
refused in production; unexpected errors are logged with the request id and masked, so a client
never sees a stack trace, SQL or a patient's data in an error message.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Callable, Iterator

from graphql import ExecutionResult, FieldNode, GraphQLError, OperationDefinitionNode
from strawberry.extensions import (
    AddValidationRules,
    DisableIntrospection,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    SchemaExtension,
    ValidationCache,
)
from strawberry.types import ExecutionContext

from schema.cost import root_field_count
from schema.errors import ClientError

logger = logging.getLogger("ketafollow.graphql")

_SUGGESTION = re.compile(r"\s*Did you mean [^?]*\?")


def make_public(error: GraphQLError, request_id: str | None) -> None:
    """Turn an error into what a client may see, in place (and only once: it drops the cause).

    Parsing and validation errors are about the client's document: shown, minus the suggestions
    that would map a schema for someone who cannot introspect it. So are variables that do not
    fit their type (e.g. an enum value that does not exist): graphql-core reports those with the
    coercion's own `GraphQLError` as the cause. A `ClientError` is shown with its code. Anything
    else is logged with the request id and masked.
    """
    original = error.original_error
    if original is None or isinstance(original, GraphQLError):
        error.message = _SUGGESTION.sub("", error.message)
        return
    if isinstance(original, ClientError):
        error.message, error.extensions = original.message, {"code": original.code}
    else:
        logger.error(
            "unexpected error in %s",
            ".".join(str(p) for p in error.path or []) or "operation",
            exc_info=(type(original), original, original.__traceback__),
        )
        error.message = f"Unexpected error. Reference: {request_id}" if request_id else "Unexpected error."
        error.extensions = {"code": "INTERNAL_SERVER_ERROR", "requestId": request_id}
    error.original_error = None


class ErrorPolicy(SchemaExtension):
    """Show expected errors, mask and log the rest, and never suggest field names (for results
    that did not pass through `Schema.process_errors`, e.g. refused before execution)."""

    def on_operation(self) -> Iterator[None]:
        yield
        result = self.execution_context.result
        if result is not None and result.errors:
            request_id = getattr(self.execution_context.context, "request_id", None)
            for error in result.errors:
                make_public(error, request_id)


class SocketRateLimit(SchemaExtension):
    """On a WebSocket, each operation spends one rate-limit token per root field (schema.cost)
    before it runs, as it would over HTTP; refused, it runs nothing and answers RATE_LIMITED."""

    async def on_execute(self) -> AsyncIterator[None]:
        spend = getattr(self.execution_context.context, "spend_rate_limit", None)
        document = self.execution_context.graphql_document
        if spend is not None and document is not None:
            await spend(max(1, root_field_count(document, self.execution_context.operation_name)))
        yield


class AuditFlush(SchemaExtension):
    """Scopes each operation: on a WebSocket the token is checked again and loaders start empty;
    the operation's audit entries are written before its result leaves (no audit, no data)."""

    async def on_execute(self) -> AsyncIterator[None]:
        context = self.execution_context.context
        if getattr(context, "reauthenticate", None) is not None:
            try:
                context.viewer = await context.reauthenticate()
            except ClientError as refusal:
                self.execution_context.result = ExecutionResult(
                    data=None, errors=[GraphQLError(refusal.message, extensions={"code": refusal.code})]
                )
                yield
                return
            context.loaders = {}
        viewer = getattr(context, "viewer", None)
        if viewer is not None:
            viewer.audit.operation = self.execution_context.operation_name or _root_fields(self.execution_context)
        yield
        if viewer is None:
            return
        try:
            await viewer.audit.flush(viewer, context.now())
        except Exception as error:  # the data must not leave without its audit trail
            result = self.execution_context.result
            if result is not None:
                result.data = None
                result.errors = [GraphQLError("audit write failed", original_error=error)]


def public_error(error: Exception, request_id: str | None) -> GraphQLError:
    """What a client may see of an exception raised outside the normal result path (a
    subscription's stream): a `ClientError` as it is, anything else masked and logged."""
    if isinstance(error, ClientError):
        return GraphQLError(error.message, extensions={"code": error.code})
    logger.error("unexpected error in a subscription", exc_info=(type(error), error, error.__traceback__))
    return GraphQLError(
        f"Unexpected error. Reference: {request_id}" if request_id else "Unexpected error.",
        extensions={"code": "INTERNAL_SERVER_ERROR", "requestId": request_id},
    )


def _root_fields(execution_context: ExecutionContext) -> str | None:
    document = execution_context.graphql_document
    if document is None:
        return None
    names = [
        selection.name.value
        for definition in document.definitions
        if isinstance(definition, OperationDefinitionNode)
        for selection in definition.selection_set.selections
        if isinstance(selection, FieldNode)
    ]
    return ",".join(names)[:100] or None


def protections(
    *, max_depth: int, max_aliases: int, max_tokens: int, introspection: bool
) -> list[Callable[[], SchemaExtension]]:
    """The extensions every request passes through, in order."""
    # The depth and alias limiters make a new validation rule class per instance, and the
    # validation cache is keyed by the rule classes: limiters made per request made every request
    # a cache miss (the whole document validated again, a fifth of the home screen's time). Their
    # rules are made once, here, and each request gets a fresh extension holding those same rules.
    limits = [
        *QueryDepthLimiter(max_depth=max_depth).validation_rules,
        *MaxAliasesLimiter(max_alias_count=max_aliases).validation_rules,
    ]
    # Factories, so each request gets fresh extension instances.
    extensions: list[Callable[[], SchemaExtension]] = [
        lambda: MaxTokensLimiter(max_token_count=max_tokens),
        lambda: ParserCache(maxsize=256),
        lambda: AddValidationRules(limits),
    ]
    if not introspection:
        extensions.append(DisableIntrospection)
    extensions += [lambda: ValidationCache(maxsize=256), ErrorPolicy, SocketRateLimit, AuditFlush]
    return extensions
