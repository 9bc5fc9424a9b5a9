"""Fast response bodies for the API (moved from core/schemas.py)."""


class Shaped(dict):
    """A 200 body already in its operation's response schema's shape, rendered without ninja's second pydantic pass
    (validating a dict into the schema's model and dumping it back: a tenth of a single-row read's time, a fifth of
    a list page's).

    For the hot reads (a user, a post, the posts' list pages), whose bodies are built field by field from rows the
    database and the ORM's converters typed (ids, strings, aware datetimes): exactly the dict the schema's
    `model_dump()` would give, which tests/core/test_shaped.py checks against the schemas. The schema still
    documents the operation; every other result goes through ninja's validation as before. Installed by
    config/api.py.
    """


def render_shaped(run):
    """A ninja "view" decorator: the operation renders a `Shaped` result as it is (status 200, through the API's
    own `create_response`, so headers such as v1's Deprecation and the temporal response's ETag stay)."""
    operation = run.__self__
    validate_and_render = operation._result_to_response

    def result_to_response(request, result, temporal_response):
        if type(result) is not Shaped:
            return validate_and_render(request, result, temporal_response)
        temporal_response.status_code = 200
        return operation.api.create_response(request, result, temporal_response=temporal_response)

    operation._result_to_response = result_to_response
    return run
