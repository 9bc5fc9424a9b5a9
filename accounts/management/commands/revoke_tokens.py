from django.core.management.base import BaseCommand, CommandError

from accounts import services
from accounts.models import User


class Command(BaseCommand):
    help = "Log a user out everywhere: revoke every refresh token family and every access token issued so far."

    def add_arguments(self, parser):
        parser.add_argument("username")

    def handle(self, *args, username: str, **options):
        user = User.objects.filter(username__iexact=username).first()
        if user is None:
            raise CommandError(f"No user named {username!r}.")
        services.user_log_out_everywhere(user=user)
        self.stdout.write(self.style.SUCCESS(f"Revoked every token of {user.username!r}."))
