"""The speed layer's Content-Security-Policy (fastpath/middleware.py): for API responses a header built once from
the settings, which must be the one django-csp itself would write, and django-csp's own path for everything that
changes the policy."""

import csp.middleware
import pytest
from csp.constants import SELF
from django.http import HttpResponse
from django.test import RequestFactory

from fastpath.middleware import CSPMiddleware


def served(middleware_class, path: str, response_attributes: dict | None = None) -> HttpResponse:
    request = RequestFactory().get(path)
    response = HttpResponse()
    for name, value in (response_attributes or {}).items():
        setattr(response, name, value)
    middleware = middleware_class(lambda request: response)
    middleware.process_request(request)
    return middleware.process_response(request, response)


@pytest.mark.parametrize("path", ["/api/v2/posts", "/admin/login/", "/"])
def test_the_header_is_django_csps_own(path):
    assert (
        served(CSPMiddleware, path)["Content-Security-Policy"]
        == served(csp.middleware.CSPMiddleware, path)["Content-Security-Policy"]
    )


def test_a_changed_setting_is_seen(settings):
    assert "img-src 'self' data:" in served(CSPMiddleware, "/api/v2/posts")["Content-Security-Policy"]
    settings.CONTENT_SECURITY_POLICY = {"DIRECTIVES": {"default-src": [SELF]}}
    assert served(CSPMiddleware, "/api/v2/posts")["Content-Security-Policy"] == "default-src 'self'"


@pytest.mark.parametrize("attributes", [{"_csp_update": {"img-src": ["https://cdn.example"]}}, {"_csp_exempt": True}])
def test_a_response_with_a_policy_of_its_own_takes_django_csps_path(attributes):
    fast = served(CSPMiddleware, "/api/v2/posts", attributes)
    stock = served(csp.middleware.CSPMiddleware, "/api/v2/posts", attributes)
    assert fast.get("Content-Security-Policy") == stock.get("Content-Security-Policy")
