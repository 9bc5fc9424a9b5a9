"""Test-only settings: the project's own, with one extra endpoint that takes as long as it is asked to
(tests/deploy/slow_urls.py). The graceful-shutdown test needs a request that is still running when the server is
told to stop; the public app has no endpoint that is slow on purpose, and should not get one."""

from config.settings import *  # noqa: F403

ROOT_URLCONF = "tests.deploy.slow_urls"
