"""Settings and token checks, without a server."""

from __future__ import annotations

import pytest

from pgqueue.http.auth import Role, role_of_token
from pgqueue.http.settings import HttpSettings, InvalidSettings


def test_settings_from_env_and_overrides() -> None:
    env = {
        "PGQUEUE_DSN": "postgresql://x/y",
        "PGQUEUE_HTTP_PORT": "9001",
        "PGQUEUE_HTTP_KINDS": "a, b,,c",
        "PGQUEUE_MAX_BODY_BYTES": "4096",
        "PGQUEUE_HTTP_RUN_WORKERS": "false",
    }
    settings = HttpSettings.from_env(env, port=None, host="127.0.0.2")
    assert settings.port == 9001 and settings.host == "127.0.0.2"
    assert settings.kinds == ("a", "b", "c")
    assert settings.max_body_bytes == 4096
    assert settings.binds_loopback and not settings.auth_enabled
    assert HttpSettings.from_env({}).host == "127.0.0.1"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PGQUEUE_HTTP_PORT": "x"}, "PGQUEUE_HTTP_PORT must be a number"),
        ({"PGQUEUE_API_TOKEN": "same-token", "PGQUEUE_READ_TOKEN": "same-token"}, "must differ"),
        ({"PGQUEUE_READ_TOKEN": " padded-token "}, "without surrounding spaces"),
        ({"PGQUEUE_HTTP_DEFAULT_KIND": " "}, "must not be empty"),
        ({"PGQUEUE_HTTP_RUN_WORKERS": "1"}, "needs the app's queue"),
        ({"PGQUEUE_HTTP_DRAIN_SECONDS": "0"}, "must be > 0"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidSettings, match=message):
        HttpSettings.from_env(env)


def test_roles_of_tokens() -> None:
    open_settings = HttpSettings()
    assert role_of_token(open_settings, None) is Role.OPERATOR
    settings = HttpSettings(api_token="operator-token", read_token="reader-token")
    assert role_of_token(settings, "operator-token") is Role.OPERATOR
    assert role_of_token(settings, "reader-token") is Role.READ
    assert role_of_token(settings, "reader-token ") is None
    assert role_of_token(settings, None) is None
    only_read = HttpSettings(read_token="reader-token")
    assert role_of_token(only_read, "reader-token") is Role.READ
    assert role_of_token(only_read, "") is None
