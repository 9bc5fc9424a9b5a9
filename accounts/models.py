from django.contrib.auth.models import AbstractUser, UserManager
from django.db import models
from django.db.models.functions import Lower
from django.utils.crypto import salted_hmac

from fastpath.db import LoopQuerySet


class CaseInsensitiveUserManager(UserManager.from_queryset(LoopQuerySet)):
    def get_by_natural_key(self, username):
        # Usernames are unique regardless of case, so logging in is case-insensitive too.
        return self.get(username__iexact=username)


class User(AbstractUser):
    """The project's user from the first migration on, so it can grow without a painful swap later."""

    email = models.EmailField("email address")
    display_name = models.CharField(max_length=150, blank=True)
    # Bumped by "log out everywhere": access tokens carry the generation they were issued in.
    token_generation = models.PositiveIntegerField(default=0, editable=False)

    objects = CaseInsensitiveUserManager()

    REQUIRED_FIELDS = ["email"]

    class Meta(AbstractUser.Meta):
        swappable = "AUTH_USER_MODEL"
        constraints = [
            # Case-insensitive: "Alice" and "alice" (or two spellings of one mailbox) are the same person.
            models.UniqueConstraint(
                Lower("username"), name="accounts_user_username_ci_unique", violation_error_code="username_taken"
            ),
            models.UniqueConstraint(
                Lower("email"), name="accounts_user_email_ci_unique", violation_error_code="email_taken"
            ),
        ]

    def __str__(self) -> str:
        return self.username

    def save(self, *args, **kwargs):
        # token_generation only ever moves forward through an atomic UPDATE (services.user_log_out_everywhere).
        # A full save of an instance loaded earlier (the admin's change form, say) must not write back a stale
        # generation and bring revoked tokens back to life.
        if not self._state.adding and kwargs.get("update_fields") is None:
            kwargs["update_fields"] = [
                field.name
                for field in self._meta.concrete_fields
                if not field.primary_key and field.name != "token_generation"
            ]
        super().save(*args, **kwargs)

    def _get_session_auth_hash(self, secret=None):
        # Django sessions (admin, chat page) end with a password change; folding the token generation in makes
        # "log out everywhere" end them too, exactly like the user's JWTs.
        key_salt = "accounts.User.get_session_auth_hash"
        value = f"{self.password}:{self.token_generation}"
        return salted_hmac(key_salt, value, secret=secret, algorithm="sha256").hexdigest()


class RefreshTokenFamily(models.Model):
    """One login's chain of refresh tokens. Only the newest token of the chain (`current_jti`) is valid;
    presenting an older one means it was stolen or replayed, and the whole family is revoked."""

    class RevokedReason(models.TextChoices):
        LOGOUT = "logout", "logged out"
        REUSE = "reuse", "rotated token reused"
        PASSWORD_CHANGE = "password_change", "password changed"
        DEACTIVATED = "deactivated", "user deactivated"
        LOGGED_OUT_EVERYWHERE = "logged_out_everywhere", "logged out everywhere"

    id = models.UUIDField(primary_key=True)
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="token_families")
    current_jti = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    last_rotated_at = models.DateTimeField(null=True, blank=True)
    rotations = models.PositiveIntegerField(default=0)
    expires_at = models.DateTimeField(db_index=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_reason = models.CharField(max_length=32, choices=RevokedReason.choices, blank=True)

    class Meta:
        verbose_name_plural = "refresh token families"
        indexes = [models.Index(fields=["user", "revoked_at"], name="accounts_family_user_live")]

    def __str__(self) -> str:
        return f"{self.user_id}:{self.id}"
