"""Login throttling on the dashboard's token form: after five wrong tokens from one address,
each further one locks that address out for twice as long (429 with ``Retry-After``), other
addresses are unaffected, a valid token clears the record, and memory stays bounded."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from pgqueue import AsyncQueue
from pgqueue.http import create_app
from pgqueue.http.dashboard.throttle import LoginThrottle
from pgqueue.http.settings import HttpSettings
from tests.conftest import Database

TOKEN = "operator-token-0123456789"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_lockouts_double_after_the_free_failures_and_are_capped() -> None:
    clock = Clock()
    throttle = LoginThrottle(free_failures=3, base_seconds=2, max_seconds=10, clock=clock)
    assert [throttle.failed("a") for _ in range(3)] == [0, 0, 0]
    assert throttle.retry_after("a") == 0
    lockouts = []
    for _ in range(4):
        lockouts.append(throttle.failed("a"))
        assert throttle.retry_after("a") == lockouts[-1]
        clock.now += lockouts[-1]
        assert throttle.retry_after("a") == 0
    assert lockouts == [2, 4, 8, 10]
    assert throttle.retry_after("b") == 0
    throttle.succeeded("a")
    assert throttle.failed("a") == 0  # a valid token started the count again


def test_records_are_forgotten_and_bounded() -> None:
    clock = Clock()
    throttle = LoginThrottle(free_failures=0, max_seconds=60, forget_seconds=60, max_entries=3,
                             clock=clock)  # fmt: skip
    for address in ("a", "b", "c", "d"):
        throttle.failed(address)
    assert len(throttle) == 3
    assert throttle.retry_after("a") == 0  # the oldest was dropped
    assert throttle.retry_after("d") == 1
    clock.now += 61
    assert throttle.failed("d") == 1  # forgotten: counted from one again


@pytest.mark.parametrize(
    "options",
    [
        {"free_failures": -1},
        {"base_seconds": 0},
        {"max_seconds": 0.5},
        {"forget_seconds": 1},
        {"max_entries": 0},
    ],
)
def test_unusable_limits_are_refused(options: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="login throttle"):
        LoginThrottle(**options)  # type: ignore[arg-type]


@pytest.fixture
async def login(
    db: Database,
) -> AsyncIterator[tuple[Callable[[str, str], httpx.AsyncClient], Clock]]:
    queue = AsyncQueue(db.dsn, schema=db.schema)
    clock = Clock()
    settings = HttpSettings(
        dsn=db.dsn,
        schema=db.schema,
        api_token=TOKEN,
        extra={"dashboard_login_throttle": LoginThrottle(clock=clock)},
    )
    app = create_app(queue, settings)
    clients: list[httpx.AsyncClient] = []

    def client_from(address: str, _: str = "") -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app, client=(address, 40000))
        clients.append(httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1"))
        return clients[-1]

    yield client_from, clock
    for client in clients:
        await client.aclose()
    await queue.close()


async def test_the_login_form_answers_429_with_a_growing_retry_after(
    login: tuple[Callable[[str, str], httpx.AsyncClient], Clock],
) -> None:
    client_from, clock = login
    guesser, other = client_from("203.0.113.7", ""), client_from("198.51.100.2", "")

    async def attempt(client: httpx.AsyncClient, token: str) -> httpx.Response:
        return await client.post("/ui/login", data={"token": token, "next": "/"})

    for n in range(5):
        assert (await attempt(guesser, f"wrong-{n}")).status_code == 401
    sixth = await attempt(guesser, "wrong-5")
    assert sixth.status_code == 429 and sixth.headers["retry-after"] == "1"
    assert "Try again in 1 s." in sixth.text
    locked = await attempt(guesser, TOKEN)  # even the right token waits
    assert locked.status_code == 429 and locked.headers["retry-after"] == "1"
    assert (await attempt(other, TOKEN)).status_code == 303  # another address is not slowed

    clock.now += 1
    seventh = await attempt(guesser, "wrong-6")
    assert seventh.status_code == 429 and seventh.headers["retry-after"] == "2"
    clock.now += 2
    assert (await attempt(guesser, TOKEN)).status_code == 303
    for n in range(5):  # the valid token cleared the record
        assert (await attempt(guesser, f"again-{n}")).status_code == 401


async def test_token_links_are_throttled_with_the_form(
    login: tuple[Callable[[str, str], httpx.AsyncClient], Clock],
) -> None:
    client_from, clock = login
    guesser = client_from("203.0.113.9", "")
    for n in range(5):
        page = await guesser.get("/ui/kinds", params={"token": f"wrong-{n}"})
        assert page.status_code == 303 and page.headers["location"].startswith("/ui/login")
    assert (await guesser.get("/ui/kinds", params={"token": "wrong-5"})).status_code == 303
    locked = await guesser.get("/ui/kinds", params={"token": TOKEN})
    assert locked.status_code == 429 and locked.headers["retry-after"] == "1"
    form = await guesser.post("/ui/login", data={"token": TOKEN, "next": "/"})
    assert form.status_code == 429  # one count for both ways in
    clock.now += 1
    assert (await guesser.get("/ui/kinds", params={"token": TOKEN})).status_code == 303
