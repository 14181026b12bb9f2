"""The reliability tests reuse the app tests' launched studio (127.0.0.1, free port) and its API client."""

from tests.app.conftest import client, studio  # noqa: F401  (pytest finds fixtures by name here)
