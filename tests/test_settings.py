"""Settings come from MERCHANT_CODE_* variables and bad values are named, not guessed at."""

from __future__ import annotations

import pytest

from merchant_code.settings import Settings, SettingsError


def test_no_variables_gives_the_embedded_defaults() -> None:
    settings = Settings.from_env({"PATH": "/usr/bin", "HOME": "/root"})
    assert settings.database_url is None
    assert settings.pg_data == "./var/pg"
    assert settings.base_url == "http://127.0.0.1:8000"


def test_values_are_read_from_strings_and_overrides_win() -> None:
    env = {"MERCHANT_CODE_WORKERS": "4", "MERCHANT_CODE_SCHEDULER": "false", "MERCHANT_CODE_PORT": "9000"}
    settings = Settings.from_env(env, port=9100)
    assert (settings.workers, settings.scheduler, settings.port) == (4, False, 9100)


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(AttributeError):
        settings.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MERCHANT_CODE_PORT": "abc"}, "MERCHANT_CODE_PORT='abc': expected a whole number"),
        ({"MERCHANT_CODE_PORT": "70000"}, "MERCHANT_CODE_PORT='70000': expected a whole number <= 65535"),
        ({"MERCHANT_CODE_WORKERS": "0"}, "MERCHANT_CODE_WORKERS='0'"),
        ({"MERCHANT_CODE_SCHEDULER": "maybe"}, "expected true or false"),
        (
            {"MERCHANT_CODE_DATABASE_URL": "mysql://h/db"},
            "MERCHANT_CODE_DATABASE_URL must start with postgresql://",
        ),
        ({"MERCHANT_CODE_DATABASE_URL": "postgresql://h:port/db"}, "port that is not a number"),
        ({"MERCHANT_CODE_DATABASE_URL": "postgresql://h:5432"}, "names no database"),
        ({"MERCHANT_CODE_PUBLIC_URL": "qr.example.org"}, "MERCHANT_CODE_PUBLIC_URL must look like"),
        ({"MERCHANT_CODE_POOL_MIN": "20", "MERCHANT_CODE_POOL_MAX": "5"}, "POOL_MIN cannot be larger"),
        ({"MERCHANT_CODE_PROT": "8000"}, "MERCHANT_CODE_PROT is not a setting"),
    ],
)
def test_a_bad_value_is_refused_with_the_variable_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_the_test_suites_own_variable_is_not_taken_for_a_typo() -> None:
    Settings.from_env({"MERCHANT_CODE_TEST_DATABASE_URL": "postgresql://x/y"})
