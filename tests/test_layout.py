"""Where a line goes, kept true by the tree itself: domains reach sockets through core/events.py, never by
importing chat; posts know nothing of the apps built on them; the chat consumers only speak the protocol (reads in
chat.selectors, frames in chat.schemas, the room flow in chat.services)."""

import ast
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    return [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names] + [
        node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
    ]


@pytest.mark.parametrize("domain", ["accounts", "posts", "jobs", "webhooks"])
def test_no_domain_imports_chat_to_reach_sockets(domain):
    for module in (PROJECT_ROOT / domain).rglob("*.py"):
        chat = [name for name in imported_modules(module) if name == "chat" or name.startswith("chat.")]
        assert chat == [], module


def test_posts_hold_only_posts():
    """Jobs and webhooks build on posts; posts tell them what happened by signal (posts.signals), never by import."""
    for module in (PROJECT_ROOT / "posts").rglob("*.py"):
        if module.parent.name == "migrations":
            continue
        others = [name for name in imported_modules(module) if name.split(".")[0] in {"jobs", "webhooks"}]
        assert others == [], module


DOMAINS = ("accounts", "posts", "jobs", "webhooks", "chat")


@pytest.mark.parametrize("domain", DOMAINS)
def test_apps_read_one_another_through_selectors_not_models(domain):
    """The user model is everyone's (the auth model); any other app's rows are read through its selectors."""
    others = {f"{other}.models" for other in DOMAINS if other not in (domain, "accounts")}
    for module in (PROJECT_ROOT / domain).rglob("*.py"):
        if module.parent.name == "migrations":
            continue
        assert [name for name in imported_modules(module) if name in others] == [], module


def test_the_chat_consumers_hold_no_orm_call_and_no_frame_parsing():
    tree = ast.parse((PROJECT_ROOT / "chat" / "consumers.py").read_text())
    attributes = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    assert not attributes & {"objects", "afirst", "aget", "acount", "aexists", "filter", "values_list", "loads"}
