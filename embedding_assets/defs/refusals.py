"""Refusals no retry can fix: a command the Redis user's ACL does not allow, a certificate that
does not verify, a runtime whose vectors disagree with torch's (its verdict is kept). A step
that meets one fails once, in one line, instead of after its retries; its documents stay
unwritten in the shard state, so the next run (once the cause is fixed) takes them."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import dagster as dg

from embedding_assets.embedders.exported import RuntimeRefused
from embedding_assets.stores.feature_store import AccessDenied, TLSRefused

F = TypeVar("F", bound=Callable[..., object])


def fail_once_on_refusal(fn: F) -> F:
    """Decorates an asset's or a check's function (under ``@dg.asset``)."""

    @functools.wraps(fn)
    def wrapper(*args: object, **kwargs: object) -> object:
        try:
            return fn(*args, **kwargs)
        except (AccessDenied, TLSRefused, RuntimeRefused) as err:
            raise dg.Failure(str(err), allow_retries=False) from None

    return wrapper  # type: ignore[return-value]
