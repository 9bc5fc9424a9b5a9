"""The HTML login forms (the chat page's and the admin's) behind the same brute-force guard as the API."""

from asgiref.sync import async_to_sync
from django import forms
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.db import DatabaseError

from accounts import services
from core.errors import RateLimited, ServiceUnavailable
from core.net import client_ip


class LoginGuardMixin:
    """Reserves an attempt before the password is checked, under the key the API's token endpoint uses, so a
    guesser gains nothing by switching from the API to a form. A correct password clears the count."""

    def clean(self):
        username = self.cleaned_data.get("username") or ""
        key = services.login_guard_key(username=username, client_ip=client_ip(self.request))
        try:
            async_to_sync(services.login_attempt_reserve)(key)
        except RateLimited as exc:
            retry_after = exc.extra["retry_after"]
            raise forms.ValidationError(
                f"Too many failed attempts; try again in {retry_after} seconds.", code="rate_limited"
            ) from None
        except ServiceUnavailable as exc:
            raise forms.ValidationError(exc.detail, code="unavailable") from None
        try:
            cleaned = super().clean()
        except DatabaseError:
            # No password was checked: the attempt does not count (the page answers 503, core/middleware.py).
            async_to_sync(services.login_attempt_given_back)(key)
            raise
        async_to_sync(services.login_attempts_forget)(key)
        return cleaned


class GuardedAuthenticationForm(LoginGuardMixin, AuthenticationForm):
    pass


class GuardedAdminAuthenticationForm(LoginGuardMixin, AdminAuthenticationForm):
    pass
