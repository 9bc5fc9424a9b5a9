"""System checks of the speed layer: the versions of what it overrides, and Django's deploy checks on its classes."""

import contextlib
from importlib.metadata import PackageNotFoundError, version

from django.conf import settings
from django.core import checks
from django.core.checks.security import base as security
from django.core.checks.security import csrf
from django.utils.module_loading import import_string

from fastpath.guards import PRIVATE_USES


@checks.register()
def private_apis_match_their_versions(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    if not settings.FAST_PATH:
        return []
    errors = []
    for use in PRIVATE_USES:
        try:
            installed = version(use.distribution)
        except PackageNotFoundError:
            installed = "not installed"
        if installed != use.version:
            errors.append(
                checks.Error(
                    f"FAST_PATH relies on private parts of {use.distribution} {use.version} "
                    f"({use.where}: {use.what}), "
                    f"but {use.distribution} {installed} is installed.",
                    hint="Review those uses against the installed version and update fastpath/guards.py, "
                    "or set FAST_PATH=false to run stock Django, ninja, Channels and uvicorn.",
                    id="fastpath.E001",
                )
            )
    return errors


@contextlib.contextmanager
def _middleware_by_django_names():
    """settings.MIDDLEWARE as Django's checks expect it: each speed-layer subclass by its Django base's path."""
    listed = settings.MIDDLEWARE
    settings.MIDDLEWARE = [_django_path(path) for path in listed]
    try:
        yield
    finally:
        settings.MIDDLEWARE = listed


def _django_path(path: str) -> str:
    if not path.startswith("fastpath.middleware."):
        return path
    base = next(cls for cls in import_string(path).__mro__ if cls.__module__.startswith("django."))
    return f"{base.__module__}.{base.__qualname__}"


# Django's deploy checks that find a middleware by its dotted path (or skip themselves when they do not).
_MIDDLEWARE_CHECKS = (
    security.check_security_middleware,
    security.check_xframe_options_middleware,
    security.check_sts,
    security.check_sts_include_subdomains,
    security.check_sts_preload,
    security.check_content_type_nosniff,
    security.check_ssl_redirect,
    security.check_xframe_deny,
    security.check_referrer_policy,
    security.check_cross_origin_opener_policy,
    csrf.check_csrf_middleware,
    csrf.check_csrf_cookie_secure,
)


@checks.register(checks.Tags.security, deploy=True)
def django_deploy_checks_on_the_layer_s_middleware(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """The deploy checks above, run with the subclasses seen as Django's classes: settings silences the three
    whose path lookup misses them (security.W001, W002, W003), and their findings come back as fastpath.<id>."""
    if not settings.FAST_PATH:
        return []
    with _middleware_by_django_names():
        found = [message for check in _MIDDLEWARE_CHECKS for message in check(app_configs=app_configs)]
    return [
        type(message)(message.msg, hint=message.hint, obj=message.obj, id=f"fastpath.{message.id}")
        for message in found
    ]
