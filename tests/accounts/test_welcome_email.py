"""Registration's welcome email, end to end: a real server takes the registration, a real Celery worker sends
the mail, and Django's file backend stands in for the SMTP server so the test can read what was sent."""

import re
import time
from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest

from tests.conftest import DEFAULT_PASSWORD
from tests.helpers import http_json

pytestmark = pytest.mark.django_db(transaction=True)

# Django's file backend ends every message it writes with this line.
_MESSAGE_END = b"\n" + b"-" * 79 + b"\n"
EMAIL_DEADLINE_SECONDS = 30


@pytest.fixture
def mail_dir(tmp_path):
    path = tmp_path / "mail"
    path.mkdir()
    return path


@pytest.fixture
def child_process_overrides(mail_dir):
    # Server and worker configured alike, as they would be in production.
    return {
        "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
        "EMAIL_FILE_PATH": str(mail_dir),
    }


@pytest.fixture
def register(configured_live_server_process):
    def post(username: str, email: str) -> tuple[int, dict]:
        return http_json(
            f"{configured_live_server_process.base_url}/api/v1/auth/register",
            method="POST",
            body={"username": username, "email": email, "password": DEFAULT_PASSWORD},
        )

    return post


def sent_emails(mail_dir) -> list[EmailMessage]:
    """Every message written so far; one still being written (no end line yet) is left for the next look."""
    messages = []
    for path in sorted(mail_dir.iterdir()):
        *complete, _unfinished = path.read_bytes().split(_MESSAGE_END)
        messages += [message_from_bytes(raw, policy=policy.default) for raw in complete]
    return messages


def wait_for_email_to(mail_dir, address: str, worker) -> EmailMessage:
    deadline = time.monotonic() + EMAIL_DEADLINE_SECONDS
    while time.monotonic() < deadline:
        for message in sent_emails(mail_dir):
            if message["To"] == address:
                return message
        time.sleep(0.1)
    pytest.fail(f"no email to {address} within {EMAIL_DEADLINE_SECONDS}s; worker log:\n{worker.log()}")


def test_registering_sends_the_new_user_a_welcome_email(register, celery_worker_process, mail_dir):
    status, body = register("newcomer", "newcomer@example.com")
    assert status == 201, body

    message = wait_for_email_to(mail_dir, "newcomer@example.com", celery_worker_process)
    assert message["Subject"] == "Welcome!"
    assert "'newcomer'" in message.get_content()
    # The worker did the sending, not the web process: the task was delivered to it.
    assert re.search(r"Task accounts\.tasks\.send_welcome_email\[[0-9a-f-]+\] received", celery_worker_process.log())
    assert [m["To"] for m in sent_emails(mail_dir)] == ["newcomer@example.com"]


def test_a_refused_registration_sends_nothing(register, celery_worker_process, mail_dir, make_user):
    make_user("taken", email="taken@example.com")

    status, body = register("TAKEN", "someone-else@example.com")
    assert (status, body["code"]) == (409, "username_taken")
    status, body = register("someone-else", "Taken@Example.com")
    assert (status, body["code"]) == (409, "email_taken")

    # The worker takes tasks in the order they were queued, so once a later registration's email is out,
    # anything the refused ones had queued would have been sent already.
    status, body = register("latecomer", "latecomer@example.com")
    assert status == 201, body
    wait_for_email_to(mail_dir, "latecomer@example.com", celery_worker_process)

    assert [m["To"] for m in sent_emails(mail_dir)] == ["latecomer@example.com"]
