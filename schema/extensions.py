"""Schema extensions: the GraphQL protections and the error policy.

Depth, alias, token, directive, repeated-field and cost limits refuse abusive documents before
anything runs; introspection is refused in production; every error a client sees carries a code in
`extensions.code`; unexpected errors are logged with the request id and masked, so a client never
sees a stack trace, SQL or a patient's data in an error message.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Callable, Iterator

from graphql import (
    DocumentNode,
    ExecutionResult,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLSyntaxError,
    InlineFragmentNode,
    Node,
    OperationDefinitionNode,
    SelectionSetNode,
    Visitor,
    visit,
)
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
from strawberry.types import ExecutionContext, StreamExecutionResult
from strawberry.types import ExecutionResult as StrawberryExecutionResult

from models.kernel.faults import (
    RETRY_AFTER_SECONDS,
    SERVICE_UNAVAILABLE,
    advice_in,
    is_backend_unavailable,
    unavailable_message,
)
from schema.cost import root_field_count
from schema.errors import ClientError
from schema.pagination import DEFAULT_PAGE_SIZE
from schema.query_cost import QueryCostLimit

logger = logging.getLogger("ketafollow.graphql")

_SUGGESTION = re.compile(r"\s*Did you mean [^?]*\?")

# More directives than any client sends, few enough that a document cannot make the validator
# report one error per directive (directive overloading).
MAX_DIRECTIVES_PER_NODE = 3
MAX_DIRECTIVES = 50
# How often one response key may be selected in one selection set (its inline fragments and
# fragment spreads included): merging repeated fields costs the validator quadratic time.
MAX_FIELD_REPEATS = 10


def make_public(error: GraphQLError, request_id: str | None) -> None:
    """Turn an error into what a client may see, in place (and only once: it drops the cause).

    Every error leaves with a code. Parsing and validation errors are about the client's
    document, and a variable's value that does not fit its type is about the client's input:
    shown (`GRAPHQL_PARSE_FAILED`, `GRAPHQL_VALIDATION_FAILED`, `BAD_USER_INPUT`), minus the
    suggestions that would map a schema for someone who cannot introspect it. A `ClientError` is
    shown with its code. A backend that did not answer (models.kernel.faults) is logged and told as
    `SERVICE_UNAVAILABLE` (try again). Anything else is logged with the request id and masked.
    """
    original = error.original_error
    if original is None and (error.extensions or {}).get("code"):
        return  # already public, or built public
    if original is None and error.path is None:
        error.message = _SUGGESTION.sub("", error.message)
        error.extensions = {
            "code": "GRAPHQL_PARSE_FAILED" if isinstance(error, GraphQLSyntaxError) else "GRAPHQL_VALIDATION_FAILED"
        }
        return
    if isinstance(original, ClientError):
        error.message, error.extensions = original.message, {"code": original.code, **original.extensions}
    elif isinstance(original, GraphQLError) and error.path is None:
        # graphql-core's own words about a variable's value (coercion happens before execution).
        error.message, error.extensions = _SUGGESTION.sub("", error.message), {"code": "BAD_USER_INPUT"}
    elif original is not None and is_backend_unavailable(original):
        logger.error(
            "a backend is unavailable in %s",
            ".".join(str(p) for p in error.path or []) or "operation",
            exc_info=(type(original), original, original.__traceback__),
            extra=_under(request_id),
        )
        error.message, error.extensions = _unavailable(original, request_id)
    else:
        logger.error(
            "unexpected error in %s",
            ".".join(str(p) for p in error.path or []) or "operation",
            exc_info=(type(original), original, original.__traceback__) if original is not None else None,
            extra=_under(request_id),
        )
        error.message = f"Unexpected error. Reference: {request_id}" if request_id else "Unexpected error."
        error.extensions = {"code": "INTERNAL_SERVER_ERROR", "requestId": request_id}
    error.original_error = None


def _under(request_id: str | None) -> dict[str, object]:
    """Log an error under the id the client is given: on a socket that is the operation's or the
    event's (`<socket>.<n>[.<event>]`, schema.context), not the socket's own (api.log)."""
    return {"request_id": request_id} if request_id else {}


def _unavailable(error: BaseException, request_id: str | None) -> tuple[str, dict[str, object]]:
    """The message and extensions of a backend failure; a patient's advice (the safety screen's,
    models.kernel.faults.BackendUnavailable) is in both: `extensions.advice` and the message's end."""
    extensions: dict[str, object] = {
        "code": SERVICE_UNAVAILABLE,
        "requestId": request_id,
        "retryAfter": RETRY_AFTER_SECONDS,
    }
    message = unavailable_message(request_id)
    if advice := advice_in(error):
        extensions["advice"] = advice
        message = " ".join(
            [message, *(advice[key] for key in ("safetyInstructions", "crisisResources") if key in advice)]
        )
    return message, extensions


def only_unavailable(errors: object) -> bool:
    """Whether a formatted answer's errors all say SERVICE_UNAVAILABLE (the operation failed on a
    backend, nothing else): the HTTP answer is then 503 with Retry-After."""
    return (
        isinstance(errors, list)
        and bool(errors)
        and all(
            isinstance(error, dict) and (error.get("extensions") or {}).get("code") == SERVICE_UNAVAILABLE
            for error in errors
        )
    )


class _DirectiveCount(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.total = 0
        self.most_on_one_node = 0

    def enter(self, node: Node, *_: object) -> None:
        directives = getattr(node, "directives", None)
        if directives:
            self.total += len(directives)
            self.most_on_one_node = max(self.most_on_one_node, len(directives))


def _response_keys(
    selection_set: SelectionSetNode,
    fragments: dict[str, FragmentDefinitionNode],
    seen: set[str],
    on_type: str | None = None,
) -> Iterator[tuple[str | None, str]]:
    """The (type condition, response key) pairs a selection set asks for, its fragments' included
    (each named fragment once). A key repeated under different type conditions is not a repeat:
    clients add `__typename` to each member of a union."""
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            yield on_type, (selection.alias or selection.name).value
        elif isinstance(selection, InlineFragmentNode):
            condition = selection.type_condition.name.value if selection.type_condition else on_type
            yield from _response_keys(selection.selection_set, fragments, seen, condition)
        elif isinstance(selection, FragmentSpreadNode) and selection.name.value not in seen:
            seen.add(selection.name.value)
            if (fragment := fragments.get(selection.name.value)) is not None:
                yield from _response_keys(fragment.selection_set, fragments, seen, fragment.type_condition.name.value)


def _shape_refusal(document: DocumentNode) -> str | None:
    """Why a document is refused before validation (directive overloading, field duplication)."""
    directives = _DirectiveCount()
    visit(document, directives)
    if directives.most_on_one_node > MAX_DIRECTIVES_PER_NODE or directives.total > MAX_DIRECTIVES:
        return (
            f"the document uses too many directives (at most {MAX_DIRECTIVES_PER_NODE} on one field"
            f" and {MAX_DIRECTIVES} in all)"
        )
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}

    class Repeats(Visitor):
        found = False

        def enter_selection_set(self, node: SelectionSetNode, *_: object) -> None:
            counts: dict[tuple[str | None, str], int] = {}
            for key in _response_keys(node, fragments, set()):
                counts[key] = counts.get(key, 0) + 1
                if counts[key] > MAX_FIELD_REPEATS:
                    self.found = True

    repeats = Repeats()
    visit(document, repeats)
    if repeats.found:
        return f"the document selects the same field more than {MAX_FIELD_REPEATS} times in one place"
    return None


# Verdicts of `_shape_refusal` by document text: the app sends the same few documents again and
# again, and walking each twice cost about as much as executing the home screen's plain fields.
_SHAPE_VERDICTS: dict[str, str | None] = {}
_SHAPE_VERDICTS_KEPT = 256


def _cached_shape_refusal(document: DocumentNode) -> str | None:
    """`_shape_refusal`, once per document text (the oldest verdict goes first when full)."""
    text = document.loc.source.body if document.loc is not None else None
    if text is None:
        return _shape_refusal(document)
    if text in _SHAPE_VERDICTS:
        return _SHAPE_VERDICTS[text]
    verdict = _shape_refusal(document)
    if len(_SHAPE_VERDICTS) >= _SHAPE_VERDICTS_KEPT:
        del _SHAPE_VERDICTS[next(iter(_SHAPE_VERDICTS))]
    _SHAPE_VERDICTS[text] = verdict
    return verdict


class DocumentShapeLimiter(SchemaExtension):
    """Refuses directive overloading and field duplication with one error, before the validator
    spends time on them (and answers with one error per repeat)."""

    def on_validate(self) -> Iterator[None]:
        document = self.execution_context.graphql_document
        if document is not None and (reason := _cached_shape_refusal(document)) is not None:
            raise GraphQLError(reason)
        yield


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
    """Scopes each operation: on a WebSocket the token (and its login) is checked again and the
    operation gets a viewer with a trail of its own; the audit entries are written before the
    result leaves (no audit, no data). Each event a subscription sends is written the same way,
    before it is sent: the entries of its root and nested reads, in one statement."""

    async def on_execute(self) -> AsyncIterator[None]:
        context = self.execution_context.context
        name = self.execution_context.operation_name or _root_fields(self.execution_context)
        if hasattr(context, "operation"):
            context.operation = name
        if getattr(context, "reauthenticate", None) is not None:
            try:
                context.viewer = await context.reauthenticate(context.new_trail())
            except ClientError as refusal:
                self.execution_context.result = ExecutionResult(
                    data=None, errors=[GraphQLError(refusal.message, extensions={"code": refusal.code})]
                )
                yield
                return
            except Exception as error:
                if not is_backend_unavailable(error):
                    raise
                self.execution_context.result = ExecutionResult(
                    data=None, errors=[public_error(error, getattr(context, "request_id", None))]
                )
                yield
                return
            context.loaders = {}
        viewer = getattr(context, "viewer", None)
        if viewer is not None:
            viewer.audit.operation = name
        yield
        if viewer is None:
            return
        try:
            await viewer.audit.flush(viewer, context.now())
        except Exception as error:  # the data must not leave without its audit trail
            result = self.execution_context.result
            if result is not None:
                result.data = None
                # The operation's own errors stay: a failed safety screen's advice is in one.
                result.errors = [*(result.errors or []), GraphQLError("audit write failed", original_error=error)]

    async def on_stream_result(self, result: StreamExecutionResult) -> AsyncIterator[None]:
        context = self.execution_context.context
        viewer = getattr(context, "viewer", None)
        if viewer is not None and isinstance(result, StrawberryExecutionResult):
            try:
                await viewer.audit.flush(viewer, context.now())
            except Exception as error:  # nothing of this event is sent without its audit rows
                failure = GraphQLError("audit write failed", original_error=error)
                make_public(failure, getattr(context, "request_id", None))
                result.data = None
                result.errors = [failure]
                if hasattr(context, "undelivered"):
                    context.undelivered = error  # the stream ends with it (schema.messaging._events)
        yield


def public_error(error: Exception, request_id: str | None) -> GraphQLError:
    """What a client may see of an exception raised outside the normal result path (a
    subscription's stream): a `ClientError` as it is, anything else masked and logged."""
    if isinstance(error, ClientError):
        return GraphQLError(error.message, extensions={"code": error.code, **error.extensions})
    if is_backend_unavailable(error):
        logger.error(
            "a backend is unavailable in an operation",
            exc_info=(type(error), error, error.__traceback__),
            extra=_under(request_id),
        )
        message, extensions = _unavailable(error, request_id)
        return GraphQLError(message, extensions=extensions)
    logger.error(
        "unexpected error in a subscription",
        exc_info=(type(error), error, error.__traceback__),
        extra=_under(request_id),
    )
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
    *, max_depth: int, max_aliases: int, max_tokens: int, max_cost: int, max_page_size: int, introspection: bool
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
        DocumentShapeLimiter,
        lambda: AddValidationRules(limits),
    ]
    if not introspection:
        extensions.append(DisableIntrospection)
    # The cost limit refuses before any resolver runs (and before a socket operation spends its tokens).
    costs = {
        "limit": max_cost,
        "default_page_size": min(DEFAULT_PAGE_SIZE, max_page_size),
        "max_page_size": max_page_size,
    }
    extensions += [
        lambda: ValidationCache(maxsize=256),
        ErrorPolicy,
        lambda: QueryCostLimit(**costs),
        SocketRateLimit,
        AuditFlush,
    ]
    return extensions
