import pytest

from services.core.errors import SettingsError
from services.core.settings import (
    Settings,
    descriptions,
    environ,
    in_effect,
    load_settings,
    markdown_table,
)


def test_values_are_read_and_converted_from_the_environment() -> None:
    s = load_settings(
        {
            "FERRY_DATABASE_URL": "postgresql://db/ferry",
            "FERRY_PORT": "9001",
            "FERRY_DIRECT_EXPORT_MAX_ROWS": "250",
            "FERRY_SSE_HEARTBEAT_SECONDS": "2.5",
            "HOME": "/root",  # other variables are none of Ferry's business
        }
    )
    assert s.database_url == "postgresql://db/ferry"
    assert s.port == 9001
    assert s.direct_export_max_rows == 250
    assert s.sse_heartbeat_seconds == 2.5
    assert s.import_max_bytes == 50 * 1024 * 1024  # default kept


def test_an_unknown_ferry_variable_is_refused_by_name() -> None:
    with pytest.raises(SettingsError, match="FERRY_DATABSE_URL is not a Ferry setting"):
        load_settings({"FERRY_DATABSE_URL": "postgresql://typo"})


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("FERRY_PORT", "eighty", "FERRY_PORT: Expected `int`"),
        ("FERRY_PORT", "70000", "FERRY_PORT: Expected `int` <= 65535"),
        ("FERRY_MAX_EXPORTS_PER_USER", "0", "FERRY_MAX_EXPORTS_PER_USER: Expected `int` >= 1"),
        ("FERRY_LOG_FORMAT", "xml", "FERRY_LOG_FORMAT: Invalid enum value 'xml'"),
        ("FERRY_S3_PART_SIZE", "1024", "FERRY_S3_PART_SIZE: Expected `int` >= 5242880"),
    ],
)
def test_a_malformed_value_names_its_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({name: value})
    assert message in str(caught.value)


def test_empty_values_mean_default() -> None:
    assert load_settings({"FERRY_PORT": ""}).port == Settings().port


def test_every_setting_is_described_and_the_readme_shows_the_table() -> None:
    from pathlib import Path

    described = descriptions()
    assert list(described) == list(Settings.__struct_fields__)
    assert all(meaning.endswith(".") for meaning in described.values())
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    table = markdown_table()
    assert "| `FERRY_PORT` | `8000` | Port the api listens on. |" in table
    assert table in readme, "README's table is stale: paste `ferry settings --markdown`"


def test_the_values_in_effect_mark_the_environment_and_mask_secrets() -> None:
    lines = in_effect(
        {
            "FERRY_DATABASE_URL": "postgresql://ferry:hunter2@db:5432/ferry?sslmode=require",
            "FERRY_REDIS_URL": "redis://:hunter3@cache:6379/2",
            "FERRY_S3_ENDPOINT_URL": "http://minio:9000/?password=hunter4",
            "FERRY_JWT_SECRET": "hunter5",
            "FERRY_S3_SECRET_ACCESS_KEY": "hunter6",
            "FERRY_PORT": "9001",
            "FERRY_HOST": "",  # empty means default
        }
    )
    shown = {line.split()[0]: line.split(maxsplit=2)[1:] for line in lines}
    assert len(shown) == len(Settings.__struct_fields__)
    assert shown["FERRY_DATABASE_URL"] == [
        "env",
        "postgresql://ferry:***@db:5432/ferry?sslmode=require",
    ]
    assert shown["FERRY_REDIS_URL"] == ["env", "redis://:***@cache:6379/2"]
    assert shown["FERRY_S3_ENDPOINT_URL"] == ["env", "http://minio:9000/?password=***"]
    assert shown["FERRY_JWT_SECRET"] == ["env", "***"]
    assert shown["FERRY_S3_SECRET_ACCESS_KEY"] == ["env", "***"]
    assert shown["FERRY_PORT"] == ["env", "9001"]
    assert shown["FERRY_HOST"] == ["default", "127.0.0.1"]
    assert shown["FERRY_JWT_JWKS_URL"] == ["default", "(empty)"]
    assert "hunter" not in "\n".join(lines)


def test_storage_backend_follows_the_bucket() -> None:
    assert Settings().storage_backend == "local"
    assert Settings(s3_bucket="exports").storage_backend == "s3"


def test_a_child_process_gets_the_same_settings_through_its_environment() -> None:
    s = Settings(
        database_url="postgresql://db/ferry",
        worker_drain_seconds=2.5,
        xlsx_engine="xlsxwriter",
        s3_secret_access_key="s3cret",
    )
    env = environ(s)
    assert load_settings(env) == s
    assert "FERRY_PORT" not in env  # defaults stay defaults
    assert env["FERRY_WORKER_DRAIN_SECONDS"] == "2.5"
