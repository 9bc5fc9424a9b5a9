import random
import time
from datetime import timedelta

from django.contrib.auth.hashers import make_password
from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from django.db.models import Count
from django.utils import timezone

from accounts.models import User
from posts import cache as posts_cache
from posts.models import Post, PostStatus

_USERNAME = "demo_user_{:05d}"
# Vocabulary of the demo texts; one line per group reads better than one word per line.
# fmt: off
_WORDS = (
    "async", "django", "postgres", "redis", "cache", "cursor", "index", "query", "latency", "throughput",
    "queue", "worker", "socket", "channel", "deploy", "release", "schema", "migration", "token",
    "session", "bucket", "window", "request", "response", "header", "client", "server", "design",
    "review", "benchmark", "profile", "trace", "metric", "alert", "incident", "backup", "replica",
    "shard", "partition", "vacuum",
)
# fmt: on
_POST_COLUMNS = ("author_id", "title", "body", "status", "created_at", "updated_at")
# Seeded, so two runs describe the same demo (the dates move with the day it is run).
_RANDOM_SEED = 20260101


class Command(BaseCommand):
    help = (
        "Create demo users and posts. Idempotent: running it again only tops each demo user up to "
        "--posts-per-user. Bulk inserts; 100k posts take seconds."
    )

    def add_arguments(self, parser):
        parser.add_argument("--users", type=int, default=10, help="demo users to have (default 10)")
        parser.add_argument("--posts-per-user", type=int, default=10, help="posts each demo user has (default 10)")
        parser.add_argument("--password", default="demo password", help="password of every demo user")
        parser.add_argument("--batch-size", type=int, default=5000)

    def handle(self, *args, users: int, posts_per_user: int, password: str, batch_size: int, **options):
        if users < 0 or posts_per_user < 0 or batch_size < 1:
            raise CommandError("--users and --posts-per-user must be >= 0, --batch-size >= 1")
        started = time.monotonic()
        authors = self._users(users, password)
        created = self._posts(authors, posts_per_user, batch_size)
        if created:
            posts_cache.lists_changed()
            if connection.vendor == "postgresql":
                # Fresh statistics, so the planner sees the new rows at once rather than after autovacuum
                # (stale user counts make it join in the wrong order).
                with connection.cursor() as cursor:
                    cursor.execute(f"ANALYZE {Post._meta.db_table}, {User._meta.db_table}")
        self.stdout.write(
            self.style.SUCCESS(
                f"{len(authors)} demo users (password {password!r}), {created} posts created, "
                f"{time.monotonic() - started:.1f} s."
            )
        )

    def _users(self, count: int, password: str) -> list[int]:
        names = [_USERNAME.format(i) for i in range(1, count + 1)]
        existing = set()
        for start in range(0, len(names), 10_000):
            chunk = names[start : start + 10_000]
            existing.update(User.objects.filter(username__in=chunk).values_list("username", flat=True))
        missing = [name for name in names if name not in existing]
        if missing:
            # One hash for all: hashing is deliberately slow, and these accounts are for demos only.
            hashed = make_password(password)
            User.objects.bulk_create(
                [
                    User(
                        username=name,
                        email=f"{name}@example.com",
                        display_name=name.replace("_", " ").title(),
                        password=hashed,
                    )
                    for name in missing
                ],
                batch_size=5000,
                ignore_conflicts=True,
            )
        ids = []
        for start in range(0, len(names), 10_000):
            chunk = names[start : start + 10_000]
            ids.extend(User.objects.filter(username__in=chunk).order_by("pk").values_list("pk", flat=True))
        return ids

    def _posts(self, authors: list[int], per_user: int, batch_size: int) -> int:
        have = dict(
            Post.objects.filter(author_id__in=authors)
            .values("author_id")
            .annotate(n=Count("id"))
            .values_list("author_id", "n")
        )
        wanted = [(author_id, per_user - have.get(author_id, 0)) for author_id in authors]
        total = sum(max(n, 0) for _, n in wanted)
        if not total:
            return 0
        rng = random.Random(_RANDOM_SEED)
        # Texts are drawn from a pool: generating 100k distinct ones would cost more than inserting them.
        titles = [" ".join(rng.choices(_WORDS, k=rng.randint(3, 8))).capitalize() for _ in range(2000)]
        bodies = [" ".join(rng.choices(_WORDS, k=rng.randint(30, 150))).capitalize() + "." for _ in range(2000)]
        now = timezone.now()
        created = 0
        batch: list[tuple] = []
        self._progress(0, total)
        for author_id, missing in wanted:
            for _ in range(max(missing, 0)):
                created_at = now - timedelta(microseconds=rng.randrange(365 * 24 * 3600 * 1_000_000))
                # Mostly published, some drafts: both visibility paths have data.
                status = PostStatus.PUBLISHED if rng.random() < 0.8 else PostStatus.DRAFT
                batch.append((author_id, rng.choice(titles), rng.choice(bodies), status.value, created_at, now))
                if len(batch) >= batch_size:
                    # Each batch commits on its own: an interrupted run keeps what it wrote, the next one tops up.
                    self._insert(batch)
                    created += len(batch)
                    batch.clear()
                    self._progress(created, total)
        if batch:
            self._insert(batch)
            created += len(batch)
            self._progress(created, total)
        self.stdout.write("")
        return created

    @staticmethod
    def _insert(rows: list[tuple]) -> None:
        if connection.vendor != "postgresql":
            Post.objects.bulk_create(Post(**dict(zip(_POST_COLUMNS, row, strict=True))) for row in rows)
            return
        # COPY: several times faster than multi-row INSERTs, and no model instances to build.
        columns = ", ".join(Post._meta.get_field(name).column for name in _POST_COLUMNS)
        with (
            connection.cursor() as cursor,
            cursor.cursor.copy(f"COPY {Post._meta.db_table} ({columns}) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(row)

    def _progress(self, done: int, total: int) -> None:
        width = 40
        filled = width * done // total
        self.stdout.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} posts", ending="")
        self.stdout.flush()
