import sys
import time
from functools import partial
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from accounts.models import User
from jobs.services import FORMATS, export_rows, write_export


class Command(BaseCommand):
    help = (
        "Export posts to a CSV or JSON Lines file, streaming (memory stays flat for any number of posts), with a "
        "progress bar. The same writer as the API's export jobs."
    )

    def add_arguments(self, parser):
        parser.add_argument("--format", choices=FORMATS, default="csv")
        parser.add_argument("--out", required=True, help="file to write ('-' for standard output)")
        parser.add_argument("--author", help="only this user's posts (drafts included); default: every post")
        parser.add_argument("--chunk-rows", type=int, default=2000, help="rows fetched per database round trip")

    def handle(self, *args, format: str, out: str, author: str | None, chunk_rows: int, **options):
        if chunk_rows < 1:
            raise CommandError("--chunk-rows must be at least 1.")
        if author is None:
            rows = export_rows(scope="all")
        else:
            owner = User.objects.filter(username=author).first()
            if owner is None:
                raise CommandError(f"No user named {author!r}.")
            rows = export_rows(scope="mine", owner_id=owner.pk)
        total = rows.count()
        started = time.monotonic()
        show_progress = out != "-" and options["verbosity"] > 0
        progress = _ProgressBar(total, self.stderr) if show_progress else None

        write = partial(
            write_export, rows.iterator(chunk_size=chunk_rows), fmt=format, total=total, on_progress=progress
        )
        if out == "-":
            written = write(sys.stdout)
        else:
            try:
                with Path(out).open("w", encoding="utf-8", newline="") as stream:
                    written = write(stream)
            except OSError as exc:
                raise CommandError(f"Cannot write {out}: {exc}") from exc
        if show_progress:
            progress(100)
            self.stderr.write("")
            self.stderr.write(f"Exported {written} posts to {out} in {time.monotonic() - started:.1f} s.")


class _ProgressBar:
    width = 40

    def __init__(self, total: int, stream) -> None:
        self.total = total
        self.stream = stream

    def __call__(self, percent: int) -> None:
        filled = self.width * percent // 100
        bar = "#" * filled + "." * (self.width - filled)
        self.stream.write(f"\r[{bar}] {percent:3d}% of {self.total} posts", ending="")
        self.stream.flush()
