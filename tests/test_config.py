"""Settings: one table, one parser, the environment passed in, README kept in step."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rules import config
from rules.core.settings import SETTINGS, ConfigError, parse_bool

REPO = Path(__file__).resolve().parents[1]


def _workspace(tmp_path: Path, table: str = "") -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "pyproject.toml").write_text(f"[tool.rules_keras]\n{table}")
    return tmp_path


def test_cache_dir_precedence_is_env_then_config_then_default(tmp_path: Path) -> None:
    ws = _workspace(tmp_path, 'cache_dir = "/from/config"\n')
    env_dir = tmp_path / "env"
    assert config.load(ws, {"RULES_KERAS_CACHE_DIR": str(env_dir)}).cache_dir == env_dir
    assert config.load(ws, {}).cache_dir == Path("/from/config")
    # An empty variable counts as unset.
    assert config.load(ws, {"RULES_KERAS_CACHE_DIR": ""}).cache_dir == Path("/from/config")
    assert config.load(ws, {"RULES_KERAS_CACHE_DIR": "~/x"}).cache_dir == Path.home() / "x"
    default = config.load(_workspace(tmp_path / "plain"), {}).cache_dir
    assert default is not None and "rules_keras" in str(default)
    assert config.load(ws, {"RULES_KERAS_CACHE": "0"}).cache_dir is None


def test_load_reads_only_the_environment_it_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RULES_KERAS_CACHE_DIR", str(tmp_path / "process"))
    monkeypatch.setenv("RULES_KERAS_SERVER", "0")
    settings = config.load(_workspace(tmp_path), {})
    assert settings.cache_dir != tmp_path / "process"
    assert settings.server is True


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RULES_KERAS_SERVER": "flase"},
         "RULES_KERAS_SERVER must be 1 or 0.*Did you mean 'false'"),
        ({"RULES_KERAS_CACHE": "ture"}, "RULES_KERAS_CACHE must be 1 or 0.*Did you mean 'true'"),
        ({"RULES_KERAS_LOCK_TIMEOUT": "soon"}, "RULES_KERAS_LOCK_TIMEOUT must be a number"),
        ({"RULES_KERAS_SERVER_IDLE_TIMEOUT": "-5"}, "seconds >= 0"),
    ],
)
def test_bad_environment_values_are_errors_with_a_suggestion(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        config.load(_workspace(tmp_path), env)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('cach_dir = "/x"\n', "unknown key 'cach_dir'. Did you mean 'cache_dir'"),
        ('server = "no"\n', r"server must be true or false"),
        ("serving_keep = 0\n", "serving_keep must be an integer >= 1"),
        ('cache_max_size = "lots"\n', "expected a size like '10G'"),
        ('remote_password = "x"\n',
         "secret: set it in the environment as RULES_KERAS_REMOTE_PASSWORD"),
        ('remote_cahce = "http://c"\n', "Did you mean 'remote_cache'"),
    ],
)
def test_bad_file_values_are_errors_naming_the_key(
    tmp_path: Path, table: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        config.load(_workspace(tmp_path, table), {})


def test_bool_words() -> None:
    for word in ("1", "true", "Yes", " on "):
        assert parse_bool(word, "X") is True
    for word in ("0", "false", "NO", "off"):
        assert parse_bool(word, "X") is False
    with pytest.raises(ConfigError, match="Received: ''"):
        parse_bool("", "X")


def test_readme_lists_every_setting_with_its_variable_and_default() -> None:
    """README's settings table is the user's copy of SETTINGS: the same rows, in the same order."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Configure", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([a-z_]+)` \| (`RULES_KERAS_[A-Z_]+`|—) \| (.*?) \|", section, re.M)
    assert [(key, env.strip("`")) for key, env, _ in rows] == [
        (s.key, s.env or "—") for s in SETTINGS
    ]
    for (_, _, default), setting in zip(rows, SETTINGS, strict=True):
        assert default.strip().strip("`") == _shown(setting.default), setting.key


def _shown(default: object) -> str:
    if default is None or default == ():
        return "—"
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, float) and default.is_integer():
        return str(int(default))
    return str(default)
