"""`manage.py export_posts`: the API's export writer from the command line, with a progress bar."""

import csv
import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from posts.models import PostStatus

pytestmark = pytest.mark.django_db


def test_it_exports_every_post_with_a_progress_bar(tmp_path, make_user, make_posts):
    alice, bob = make_user("alice"), make_user("bob")
    posts = make_posts(alice, 120) + make_posts(bob, 30, status=PostStatus.DRAFT)
    out, progress = tmp_path / "posts.csv", StringIO()

    call_command("export_posts", "--format", "csv", "--out", str(out), "--chunk-rows", "7", stderr=progress)

    rows = list(csv.DictReader(out.open(newline="")))
    assert sorted(int(row["id"]) for row in rows) == sorted(post.pk for post in posts)
    assert "100% of 150 posts" in progress.getvalue()
    assert "Exported 150 posts" in progress.getvalue()


def test_it_exports_one_authors_posts_as_json_lines(tmp_path, make_user, make_posts):
    alice, bob = make_user("alice"), make_user("bob")
    mine = make_posts(alice, 5) + make_posts(alice, 2, status=PostStatus.DRAFT)
    make_posts(bob, 3)
    out = tmp_path / "alice.jsonl"

    call_command("export_posts", "--format", "jsonl", "--out", str(out), "--author", "alice", stderr=StringIO())

    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(line["id"] for line in lines) == sorted(post.pk for post in mine)
    assert {line["author_username"] for line in lines} == {"alice"}


def test_bad_arguments_are_command_errors(tmp_path):
    with pytest.raises(CommandError, match="No user named"):
        call_command("export_posts", "--out", str(tmp_path / "x.csv"), "--author", "nobody")
    with pytest.raises(CommandError, match="Cannot write"):
        call_command("export_posts", "--out", str(tmp_path / "missing-dir" / "x.csv"))
