import pytest

from entrypoints.settings import Settings


def test_defaults_apply_when_the_environment_sets_nothing() -> None:
    settings = Settings.from_environ({})
    assert settings.port == 3000
    assert settings.node_name_marker == "amazin-object-storage-node"
    assert settings.node_port == 9000
    assert settings.max_body_bytes is None


def test_each_setting_is_read_from_its_gateway_variable() -> None:
    settings = Settings.from_environ(
        {
            "GATEWAY_PORT": "8080",
            "GATEWAY_NODE_NAME_MARKER": "my-nodes",
            "GATEWAY_DISCOVERY_RESYNC_SECONDS": "0.5",
            "GATEWAY_MAX_BODY_BYTES": "1024",
            "GATEWAY_BUCKET": "things",
        }
    )
    assert settings.port == 8080
    assert settings.node_name_marker == "my-nodes"
    assert settings.discovery_resync_seconds == 0.5
    assert settings.max_body_bytes == 1024
    assert settings.bucket == "things"


def test_an_empty_variable_keeps_the_default() -> None:
    assert Settings.from_environ({"GATEWAY_MAX_BODY_BYTES": " "}).max_body_bytes is None


def test_a_malformed_value_names_its_variable() -> None:
    with pytest.raises(ValueError, match="GATEWAY_PORT='http'"):
        Settings.from_environ({"GATEWAY_PORT": "http"})
