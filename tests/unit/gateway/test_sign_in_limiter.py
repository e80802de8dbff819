from __future__ import annotations

import pytest

from gateway.sessions import SignInLimiter

pytestmark = pytest.mark.unit


class Ticks:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_an_account_waits_after_its_limit_until_the_oldest_failure_leaves_the_window() -> None:
    now = Ticks()
    limiter = SignInLimiter(per_account=3, per_client=100, window_s=60, now=now)
    for _ in range(3):
        assert limiter.retry_after("a@x.ru", "10.0.0.1") == 0
        limiter.failed("a@x.ru", "10.0.0.1")
        now.t += 1
    assert limiter.retry_after("a@x.ru", "10.0.0.1") == 57
    assert limiter.retry_after("b@x.ru", "10.0.0.1") == 0  # another account is not held up
    now.t += 57
    assert limiter.retry_after("a@x.ru", "10.0.0.1") == 0


def test_a_client_trying_many_accounts_is_limited() -> None:
    now = Ticks()
    limiter = SignInLimiter(per_account=5, per_client=4, window_s=60, now=now)
    for i in range(4):
        limiter.failed(f"u{i}@x.ru", "10.0.0.2")
    assert limiter.retry_after("new@x.ru", "10.0.0.2") > 0
    assert limiter.retry_after("new@x.ru", "10.0.0.3") == 0


def test_a_success_clears_the_accounts_failures() -> None:
    limiter = SignInLimiter(per_account=2, per_client=100, window_s=60, now=Ticks())
    limiter.failed("a@x.ru", "c")
    limiter.succeeded("a@x.ru")
    limiter.failed("a@x.ru", "c")
    assert limiter.retry_after("a@x.ru", "c") == 0
