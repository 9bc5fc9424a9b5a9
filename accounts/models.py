from django.contrib.auth.models import AbstractUser
from django.db import models
from django.db.models.functions import Lower


class User(AbstractUser):
    """The project's user from the first migration on, so it can grow without a painful swap later."""

    email = models.EmailField("email address")
    display_name = models.CharField(max_length=150, blank=True)

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
