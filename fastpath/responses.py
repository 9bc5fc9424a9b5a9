"""Response bodies for ninja operations without the second pydantic pass, where the result already has the shape.

ninja validates every result into the operation's response schema and dumps it back (`model_validate`, then
`model_dump`): for the hot reads, whose results are dicts the database and the ORM's converters already typed (ids,
strings, aware datetimes), a tenth of a single-row read's time and a fifth of a list page's. `fast_bodies`
projects such a result straight onto the schema instead: the schema's fields in its order, nested schemas and
lists alike, every leaf checked to be exactly of its declared type. What comes out is what `model_dump()` would
give for that input. A result the projection cannot vouch for (a model instance, a value of another type, a
missing key) takes ninja's validation as before, and so does every schema with anything a projection would not
reproduce (validators, serializers, aliases, constraints, resolvers, extra fields kept): see `_projector`.

FAST_PATH_CHECK_BODIES (on in the test suite) validates every projected body with pydantic as well and fails the
request when the two differ, so each test that reads a projected body also checks it against its schema.
"""

import datetime
import functools
import types
import typing
import uuid
from collections.abc import Callable
from enum import Enum
from typing import Any

from django.conf import settings
from django.http import HttpResponseBase
from ninja import Schema, Status
from pydantic import BaseModel

# Types whose validated value is the input itself, when the input is of exactly that type.
_EXACT_TYPES = {int, str, bool, float, datetime.datetime, datetime.date, uuid.UUID}
# The model validator every ninja Schema carries (it reads attributes of ORM objects; a dict passes through).
_SCHEMA_VALIDATORS = set(Schema.__pydantic_decorators__.model_validators)


class _Unprojectable(Exception):
    """This value is not one the projection vouches for: ninja validates it."""


def _exact(kind: type) -> Callable[[Any], Any]:
    def project(value):
        if type(value) is not kind:
            raise _Unprojectable
        return value

    return project


def _projector(annotation) -> Callable[[Any], Any] | None:
    """A function giving `model_dump()`'s value for an input of this annotation, or None when there is none."""
    if annotation in _EXACT_TYPES:
        return _exact(annotation)
    if annotation is type(None):
        return _exact(type(None))
    if annotation is Any:
        return lambda value: value
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if len(args) != 2 or type(None) not in args:
            return None
        inner = _projector(next(arg for arg in args if arg is not type(None)))
        return None if inner is None else (lambda value: None if value is None else inner(value))
    if origin is list and len(args) == 1:
        item = _projector(args[0])
        if item is None:
            return None

        def project_list(value):
            if type(value) is not list:
                raise _Unprojectable
            return [item(element) for element in value]

        return project_list
    if origin is typing.Literal and all(type(arg) in (str, int) for arg in args):
        allowed = {(type(arg), arg) for arg in args}

        def project_literal(value):
            if (type(value), value) not in allowed:
                raise _Unprojectable
            return value

        return project_literal
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        members = annotation._value2member_map_

        def project_enum(value):
            if type(value) is annotation:
                return value
            member = members.get(value) if type(value) is str else None
            if member is None:
                raise _Unprojectable
            return member

        return project_enum
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _model_projector(annotation)
    return None


@functools.cache
def _model_projector(model: type[BaseModel]) -> Callable[[Any], Any] | None:
    decorators = model.__pydantic_decorators__
    own_validators = set(decorators.model_validators) - _SCHEMA_VALIDATORS
    if (
        own_validators
        or decorators.validators
        or decorators.field_validators
        or decorators.root_validators
        or decorators.field_serializers
        or decorators.model_serializers
        or decorators.computed_fields
        or model.model_config.get("extra") not in (None, "ignore")
        or model.model_config.get("alias_generator")
        or any(name.startswith("resolve_") for name in dir(model))
    ):
        return None
    fields = []
    for name, field in model.model_fields.items():
        if field.alias or field.serialization_alias or field.exclude or field.metadata:
            return None
        project = _projector(field.annotation)
        if project is None:
            return None
        fields.append((name, project))

    def project_model(value):
        if type(value) is not dict:
            raise _Unprojectable
        try:
            return {name: project(value[name]) for name, project in fields}
        except KeyError:
            # A missing key would take the field's default, or fail validation: ninja's business.
            raise _Unprojectable from None

    return project_model


def _response_projector(operation, status: int):
    """The projection of an operation's response schema for `status` (None: ninja renders it), kept per status."""
    cache = operation.__dict__.setdefault("_fastpath_projectors", {})
    if status not in cache:
        response_model = operation.response_models.get(status)
        project = None
        plain_dump = not (
            operation.by_alias or operation.exclude_unset or operation.exclude_defaults or operation.exclude_none
        )
        if response_model and plain_dump:
            project = _projector(response_model.model_fields["response"].annotation)
        cache[status] = project
    return cache[status]


def fast_bodies(run):
    """A ninja "view" decorator (`api.add_decorator(fast_bodies, mode="view")`): the operation's results are
    projected onto its response schema where they can be (see the module), else validated by ninja as before.
    Either way the API's own `create_response` renders them, so headers (v1's Deprecation, an ETag set on the
    temporal response) stay. With FAST_PATH off every result goes through ninja."""
    operation = run.__self__
    validate_and_render = operation._result_to_response

    def result_to_response(request, result, temporal_response):
        if not settings.FAST_PATH or isinstance(result, HttpResponseBase):
            return validate_and_render(request, result, temporal_response)
        status, value = (result.status_code, result.value) if isinstance(result, Status) else (200, result)
        if not isinstance(result, Status) and len(operation.response_models) == 1:
            status = next(iter(operation.response_models))
        project = _response_projector(operation, status)
        if project is None:
            return validate_and_render(request, result, temporal_response)
        try:
            body = project(value)
        except _Unprojectable:
            return validate_and_render(request, result, temporal_response)
        if settings.FAST_PATH_CHECK_BODIES:
            _check_against_schema(operation, request, status, value, body)
        temporal_response.status_code = status
        return operation.api.create_response(request, body, temporal_response=temporal_response)

    operation._result_to_response = result_to_response
    return run


def _check_against_schema(operation, request, status: int, value, body) -> None:
    model = operation.response_models[status]
    expected = model.model_validate({"response": value}, context={"request": request}).model_dump()["response"]
    render = operation.api.renderer.render
    # Byte for byte, as a client would receive them: the same values in the same order.
    if render(request, body, response_status=status) != render(request, expected, response_status=status):
        name = operation.view_func.__name__
        raise AssertionError(f"{name}: the projected body {body!r} is not the schema's {expected!r}")
