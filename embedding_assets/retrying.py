"""Retries for transient faults of MongoDB and Redis: exponential backoff with jitter, bounded.

Everything retried here is idempotent: reads, SET of a whole value, conditional Lua writes.
Whole-step failures are left to Dagster's RetryPolicy on the assets.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import pymongo.errors
import redis.exceptions
import tenacity

from embedding_assets import settings

T = TypeVar("T")
log = logging.getLogger("embedding_assets.retry")

TRANSIENT = (
    pymongo.errors.AutoReconnect,  # includes NetworkTimeout, connection reset, primary stepped down
    pymongo.errors.ServerSelectionTimeoutError,
    pymongo.errors.ExecutionTimeout,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,  # a restarted server still loading its data
    redis.exceptions.TryAgainError,
)
# Faults that look like connection errors but are configuration: waiting never fixes them.
NOT_TRANSIENT = (
    redis.exceptions.AuthenticationError,  # a ConnectionError in redis-py
    redis.exceptions.AuthenticationWrongNumberOfArgsError,
)
# Long enough to ride out a server restart; bounded so a dead server still fails the step.
MAX_SECONDS = float(settings.get("EA_RETRY_SECONDS"))


def is_transient(error: BaseException) -> bool:
    if not isinstance(error, TRANSIENT) or isinstance(error, NOT_TRANSIENT):
        return False
    return not certificate_refused(error)


def certificate_refused(error: BaseException) -> bool:
    """A TLS certificate that does not verify (either driver): no wait makes it trusted."""
    return "certificate verify failed" in str(error).lower()


def transient(fn: Callable[..., T]) -> Callable[..., T]:
    """Retry ``fn`` on transient faults (decorator)."""
    return tenacity.retry(
        retry=tenacity.retry_if_exception(is_transient),
        wait=tenacity.wait_exponential_jitter(multiplier=0.2, max=8.0),
        stop=tenacity.stop_after_delay(MAX_SECONDS),
        before_sleep=tenacity.before_sleep_log(log, logging.WARNING),
        reraise=True,
    )(fn)
