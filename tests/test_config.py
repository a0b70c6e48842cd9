"""Configuration: precedence, the original design's names, validation errors, redaction."""

from __future__ import annotations

import tomllib
from datetime import date
from pathlib import Path

import pytest
from click.testing import CliRunner

from cryptolake.cli import cli
from cryptolake.config import SPECS, ConfigError, load_settings, redact_dsn

REPO = Path(__file__).resolve().parent.parent


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_any_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(None, {}, dotenv_file=tmp_path / "missing.env")
    assert settings.lake.root == Path("data/lake")
    assert settings.binance.base_url == "https://data-api.binance.vision"
    assert settings.collection.quote_asset == "USDT"
    assert settings.collection.interval == "1h"
    assert settings.collection.top_n == 50
    assert settings.scheduler.schedule == "0 */6 * * *"
    assert "USDC" in settings.collection.excluded_bases
    assert set(settings.sources.values()) == {"default"}


def test_precedence_file_dotenv_env_flag(tmp_path: Path) -> None:
    toml = write(
        tmp_path / "c.toml",
        "[binance]\ntimeout_s = 11\nconcurrency = 3\nmax_retries = 4\n[collection]\ntop_n = 7\n",
    )
    dotenv = write(tmp_path / ".env", "CRYPTOLAKE_BINANCE_TIMEOUT_S=12\nCRYPTOLAKE_BINANCE_CONCURRENCY=5\n")
    environ = {"CRYPTOLAKE_BINANCE_TIMEOUT_S": "13"}
    settings = load_settings(toml, environ, dotenv_file=dotenv, overrides={"collection.top_n": (9, "--top")})
    assert settings.binance.max_retries == 4 and settings.sources["binance.max_retries"] == str(toml)
    assert settings.binance.concurrency == 5
    assert settings.sources["binance.concurrency"] == ".env CRYPTOLAKE_BINANCE_CONCURRENCY"
    assert settings.binance.timeout_s == 13.0
    assert settings.sources["binance.timeout_s"] == "environment CRYPTOLAKE_BINANCE_TIMEOUT_S"
    assert settings.collection.top_n == 9 and settings.sources["collection.top_n"] == "--top"


def test_original_design_names(tmp_path: Path) -> None:
    environ = {
        "COLLECTION_START_DATE": "2023-05-01",
        "TOP_N_CRYPTOS": "20",
        "COLLECTION_SCHEDULE": "15 * * * *",
        "BINANCE_API_KEY": "k-123",
        "BINANCE_API_SECRET": "s-456",
    }
    settings = load_settings(None, environ, dotenv_file=None)
    assert settings.collection.start_date == date(2023, 5, 1)
    assert settings.collection.top_n == 20
    assert settings.scheduler.schedule == "15 * * * *"
    assert settings.binance.api_key == "k-123" and settings.binance.api_secret == "s-456"


def test_prefixed_name_wins_over_original_name() -> None:
    settings = load_settings(
        None, {"TOP_N_CRYPTOS": "20", "CRYPTOLAKE_COLLECTION_TOP_N": "30"}, dotenv_file=None
    )
    assert settings.collection.top_n == 30


def test_original_names_work_in_dotenv(tmp_path: Path) -> None:
    dotenv = write(tmp_path / ".env", "COLLECTION_START_DATE=2022-02-02\nTOP_N_CRYPTOS=3\n")
    settings = load_settings(None, {"TOP_N_CRYPTOS": "4"}, dotenv_file=dotenv)
    assert settings.collection.start_date == date(2022, 2, 2)
    assert settings.collection.top_n == 4  # the environment beats .env


def test_lists_from_env_as_csv_or_toml_array() -> None:
    a = load_settings(None, {"CRYPTOLAKE_COLLECTION_SYMBOLS": "btc, ETHUSDT"}, dotenv_file=None)
    b = load_settings(None, {"CRYPTOLAKE_COLLECTION_SYMBOLS": '["BTC", "ethusdt"]'}, dotenv_file=None)
    assert a.collection.symbols == b.collection.symbols == ("BTC", "ETHUSDT")


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        (
            {"CRYPTOLAKE_BINANCE_TIMEOUT_S": "abc"},
            "binance.timeout_s = 'abc' (from environment CRYPTOLAKE_BINANCE_TIMEOUT_S) is invalid: expected a number > 0",
        ),
        (
            {"TOP_N_CRYPTOS": "0"},
            "collection.top_n = '0' (from environment TOP_N_CRYPTOS) is invalid: expected a whole number from 1 to 1000",
        ),
        (
            {"COLLECTION_SCHEDULE": "every hour"},
            "scheduler.schedule = 'every hour' (from environment COLLECTION_SCHEDULE) is invalid: expected a 5-field cron expression",
        ),
        ({"CRYPTOLAKE_COLLECTION_INTERVAL": "1H"}, "expected one of 1s 1m"),
        ({"COLLECTION_START_DATE": "yesterday"}, "expected a date YYYY-MM-DD"),
        ({"CRYPTOLAKE_BINANCE_BASE_URL": "ftp://x"}, "expected an http(s) URL"),
        ({"CRYPTOLAKE_BINANCE_BASE_URL": "https://api.binance.us"}, "different exchange"),
        ({"CRYPTOLAKE_BINANCE_WEIGHT_SHARE": "1.5"}, "binance.weight_share = '1.5'"),
        ({"CRYPTOLAKE_POSTGRES_DSN": "nonsense"}, "expected a PostgreSQL URL"),
    ],
)
def test_bad_values_name_key_source_and_form(environ: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(None, environ, dotenv_file=None)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def test_secret_values_are_not_echoed_in_errors() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(None, {"CRYPTOLAKE_POSTGRES_DSN": "postgresql:/broken:hunter2"}, dotenv_file=None)
    assert "hunter2" not in str(info.value)


def test_bad_file_values_name_the_file(tmp_path: Path) -> None:
    toml = write(tmp_path / "c.toml", "[binance]\nconcurrency = 'many'\n")
    with pytest.raises(ConfigError, match=r"binance.concurrency = 'many' \(from .*c.toml\)"):
        load_settings(toml, {}, dotenv_file=None)


def test_unknown_key_and_broken_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown setting 'binance.colour'"):
        load_settings(write(tmp_path / "a.toml", "[binance]\ncolour = 1\n"), {}, dotenv_file=None)
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path / "b.toml", "[binance\n"), {}, dotenv_file=None)
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", {}, dotenv_file=None)


def test_flag_values_are_validated() -> None:
    with pytest.raises(ConfigError, match=r"collection.interval = '2x' \(from --interval\)"):
        load_settings(None, {}, dotenv_file=None, overrides={"collection.interval": ("2x", "--interval")})


def test_dsn_redaction() -> None:
    assert redact_dsn("postgresql://bob:s3cret@db:5432/x") == "postgresql://bob:***@db:5432/x"
    assert redact_dsn("host=db password=s3cret user=bob") == "host=db password=*** user=bob"
    assert redact_dsn("postgresql://db/x?password=s3cret") == "postgresql://db/x?password=***"
    assert redact_dsn("postgresql://bob@db/x") == "postgresql://bob@db/x"


def test_repo_config_toml_lists_every_setting_with_its_default() -> None:
    document = tomllib.loads((REPO / "config.toml").read_text(encoding="utf-8"))
    in_file = {
        f"{section}.{name}": value for section, table in document.items() for name, value in table.items()
    }
    assert set(in_file) == {spec.key for spec in SPECS}
    settings = load_settings(REPO / "config.toml", {}, dotenv_file=None)
    defaults = load_settings(None, {}, dotenv_file=None)
    assert [row[1] for row in settings.describe()] == [row[1] for row in defaults.describe()]


def test_config_command_shows_sources_and_redacts_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "config.toml", "[lake]\nroot = 'mylake'\n")
    write(tmp_path / ".env", "BINANCE_API_KEY=key-very-secret\n")
    monkeypatch.setenv("CRYPTOLAKE_POSTGRES_DSN", "postgresql://u:pa55word@h/db")
    result = CliRunner().invoke(cli, ["config", "--json", "--base-url", "http://127.0.0.1:9"])
    assert result.exit_code == 0, result.output
    assert "key-very-secret" not in result.output and "pa55word" not in result.output
    import json

    rows = {row["key"]: row for row in json.loads(result.output)}
    assert rows["lake.root"]["value"] == "mylake" and rows["lake.root"]["source"] == "config.toml"
    assert (
        rows["binance.api_key"]["value"] == "***"
        and rows["binance.api_key"]["source"] == ".env BINANCE_API_KEY"
    )
    assert rows["postgres.dsn"]["value"] == "postgresql://u:***@h/db"
    assert rows["binance.base_url"]["source"] == "--base-url"
    table = CliRunner().invoke(cli, ["config"])
    assert table.exit_code == 0 and "key-very-secret" not in table.output and "lake.root" in table.output


def test_cli_bad_config_is_one_line_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CRYPTOLAKE_BINANCE_CONCURRENCY", "lots")
    result = CliRunner().invoke(cli, ["config"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "binance.concurrency = 'lots'" in lines[0]
    assert "Traceback" not in result.output
