"""The Redis server the tests use: ARBITER_TEST_REDIS_URL (CI sets it; unset, they skip), and a
key prefix of each test's own, since one server may serve several test runs at once."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import pytest

REDIS_ENV = "ARBITER_TEST_REDIS_URL"


@pytest.fixture
def redis_url() -> str:
    url = os.environ.get(REDIS_ENV)
    if not url:
        pytest.skip(f"set {REDIS_ENV} (e.g. redis://127.0.0.1:6379/15) to run the Redis tests")
    return url


@pytest.fixture
async def redis_prefix(redis_url: str) -> AsyncIterator[str]:
    """A key prefix no other test uses; its keys are deleted afterwards."""
    from redis.asyncio import Redis

    prefix = f"arbiter-test-{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = Redis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()
