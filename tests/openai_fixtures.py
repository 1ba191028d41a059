"""Pytest fixtures for the fake OpenAI server (import or list in ``pytest_plugins``).

Usage in a test module::

    pytest_plugins = ["tests.openai_fixtures"]

    def test_x(openai_server):
        ...  # openai_server.base_url, openai_server.enqueue(...)
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.openai_server import FakeOpenAIServer


@pytest.fixture
def openai_server() -> Iterator[FakeOpenAIServer]:
    """A started :class:`FakeOpenAIServer` (default reply, no latency), stopped after the test."""
    with FakeOpenAIServer() as server:
        yield server
