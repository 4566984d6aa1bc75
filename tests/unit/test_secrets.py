"""Secrets: Redis passwords masked wherever settings are shown, and secrets read from files
(``STREAMPROC_<NAME>_FILE``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamproc.errors import ConfigError, masked_url
from streamproc.settings import KNOWN_VARIABLES, SECRET_FILES, Settings, shown_values

PASSWORD = "hunter2-Secret"


@pytest.mark.parametrize("url", [
    f"redis://:{PASSWORD}@cache:6379/0",
    f"rediss://app:{PASSWORD}@cache.example:6380/3",
    f"redis://default:{PASSWORD}@[::1]:6379/0",
    f"redis://cache:6379/0?password={PASSWORD}",
    f"unix://app:{PASSWORD}@/run/redis.sock?db=2",
])
def test_passwords_are_masked_in_urls_repr_and_shown_values(url: str) -> None:
    assert PASSWORD not in masked_url(url) and "***" in masked_url(url)
    settings = Settings.from_env({"STREAMPROC_REDIS_URL": url})
    assert PASSWORD not in repr(settings)
    assert PASSWORD not in str(shown_values(settings))


def test_an_invalid_url_is_reported_without_its_password() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"STREAMPROC_REDIS_URL": f"http://app:{PASSWORD}@cache:6379/0"})
    assert PASSWORD not in str(info.value) and "app:***@cache" in str(info.value)


def test_secrets_are_read_from_files_and_their_source_shown(tmp_path: Path) -> None:
    assert {f"STREAMPROC_{n}_FILE" for n in SECRET_FILES} <= KNOWN_VARIABLES
    assert set(SECRET_FILES) >= {"MODEL_SECRET", "REDIS_URL", "API_KEYS", "API_ADMIN_TOKEN"}
    url, token = tmp_path / "redis-url", tmp_path / "admin"
    url.write_text(f"redis://app:{PASSWORD}@cache:6379/2\n")
    token.write_text("  spaces count  ")
    settings = Settings.from_env({"STREAMPROC_REDIS_URL_FILE": str(url),
                                  "STREAMPROC_API_ADMIN_TOKEN_FILE": str(token)})
    assert settings.redis_url == f"redis://app:{PASSWORD}@cache:6379/2"  # the line end dropped
    assert settings.api_admin_token == "  spaces count  "
    assert settings.sources["REDIS_URL"] == f"file {url} (STREAMPROC_REDIS_URL_FILE)"
    rows = {name: (value, source) for name, value, source in shown_values(settings)}
    assert rows["STREAMPROC_REDIS_URL"][0] == "redis://app:***@cache:6379/2"
    assert rows["STREAMPROC_API_ADMIN_TOKEN"] == (
        "(set, 16 characters)", f"file {token} (STREAMPROC_API_ADMIN_TOKEN_FILE)")


def test_a_file_and_the_variable_both_set_or_an_unreadable_file_is_an_error(
        tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text(PASSWORD)
    with pytest.raises(ConfigError, match="both STREAMPROC_MODEL_SECRET and"):
        Settings.from_env({"STREAMPROC_MODEL_SECRET": "x" * 20,
                           "STREAMPROC_MODEL_SECRET_FILE": str(secret)})
    for path in (tmp_path / "missing", tmp_path):
        with pytest.raises(ConfigError, match="STREAMPROC_API_KEYS_FILE") as info:
            Settings.from_env({"STREAMPROC_API_KEYS_FILE": str(path)})
        assert str(path) in str(info.value)
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        Settings.from_env({"STREAMPROC_MODEL_SECRET_FILE": str(tmp_path / "empty")})
