"""Settings come from KFLOOP_* variables; flags override; bad values are refused."""

from pathlib import Path

import pytest

from kfloop.config import Settings
from kfloop.errors import ConfigError


def test_defaults_without_environment():
    settings = Settings.from_env({})
    assert settings.home == Path(".kfloop") and not settings.uses_s3 and settings.s3_bucket == "kfloop"


def test_environment_is_read_and_typed():
    settings = Settings.from_env(
        {
            "KFLOOP_HOME": "/data/kf",
            "KFLOOP_S3_ENDPOINT": "minio:9000",
            "KFLOOP_S3_SECURE": "true",
            "KFLOOP_S3_BUCKET": "models",
            "OTHER": "x",
        }
    )
    assert settings.home == Path("/data/kf") and settings.uses_s3 and settings.s3_secure is True
    assert settings.s3_bucket == "models"


def test_flags_override_and_none_means_not_given():
    settings = Settings.from_env({"KFLOOP_S3_BUCKET": "env"}).replace(s3_bucket="flag", home=None)
    assert settings.s3_bucket == "flag" and settings.home == Path(".kfloop")


def test_bad_boolean_names_the_variable():
    with pytest.raises(ConfigError, match="KFLOOP_S3_SECURE"):
        Settings.from_env({"KFLOOP_S3_SECURE": "maybe"})


def test_secrets_are_not_in_the_repr():
    settings = Settings(s3_access_key="AKIAEXAMPLE", s3_secret_key="very-secret")
    assert "very-secret" not in repr(settings) and "AKIAEXAMPLE" not in repr(settings)


def test_storage_env_points_children_at_the_same_store(tmp_path):
    env = Settings(home=tmp_path, s3_endpoint="127.0.0.1:9000", s3_access_key="a", s3_secret_key="b").storage_env()
    assert env["KFLOOP_HOME"] == str(tmp_path.resolve())
    assert Settings.from_env(env).s3_endpoint == "127.0.0.1:9000"


def test_settings_the_platform_sets_are_read_under_the_platforms_names():
    settings = Settings.from_env(
        {"K_SINK": "http://broker", "K_CE_OVERRIDES": '{"extensions": {}}', "KF_PIPELINES_SA_TOKEN_PATH": "/t"}
    )
    assert (settings.sink_url, settings.kfp_token_path) == ("http://broker", "/t")
    assert settings.ce_overrides == '{"extensions": {}}'
    assert Settings.from_env({"KFLOOP_SINK_URL": "http://elsewhere"}).sink_url is None


def test_service_settings_have_defaults_and_are_read_from_kfloop_variables():
    assert Settings.from_env({}).gateway_url == "http://127.0.0.1:8080"
    settings = Settings.from_env({"KFLOOP_KFP_HOST": "http://kfp:8888", "KFLOOP_ROLLOUT_TARGET": "kubernetes"})
    assert (settings.kfp_host, settings.rollout_target) == ("http://kfp:8888", "kubernetes")


def test_the_control_token_is_in_home_unless_a_file_is_named(tmp_path):
    assert Settings.from_env({"KFLOOP_HOME": str(tmp_path)}).control_token_path == tmp_path.resolve() / "control-token"
    named = Settings.from_env({"KFLOOP_HOME": str(tmp_path), "KFLOOP_CONTROL_TOKEN_FILE": str(tmp_path / "s" / "t")})
    assert named.control_token_path == tmp_path.resolve() / "s" / "t"
    assert named.storage_env()["KFLOOP_CONTROL_TOKEN_FILE"] == str(tmp_path.resolve() / "s" / "t")
    assert "KFLOOP_CONTROL_TOKEN_FILE" not in Settings.from_env({"KFLOOP_HOME": str(tmp_path)}).storage_env()
