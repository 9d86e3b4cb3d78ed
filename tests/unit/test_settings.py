import re
import ssl
from pathlib import Path

import pytest

from adapters.s3.transport import MinioSettings, node_tls
from entrypoints.settings import Settings
from tests.certificates import Authority


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


def test_nodes_are_spoken_to_over_plain_http_unless_the_fleet_is_set_to_https(
    tmp_path: Path,
) -> None:
    assert node_tls(minio_settings(Settings.from_environ({}))) is None
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(Authority.new("fleet CA").pem())
    settings = Settings.from_environ(
        {"GATEWAY_NODE_SCHEME": "https", "GATEWAY_NODE_CA_FILE": str(ca_file)}
    )
    context = node_tls(minio_settings(settings))
    assert context is not None
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert [entry["subject"] for entry in context.get_ca_certs()] == [
        ((("commonName", "fleet CA"),),)
    ]


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"GATEWAY_NODE_SCHEME": "ftp"}, "GATEWAY_NODE_SCHEME='ftp' is not one of http, https"),
        ({"GATEWAY_NODE_CA_FILE": "/etc/hostname"}, "set it to https"),
        (
            {"GATEWAY_NODE_SCHEME": "https", "GATEWAY_NODE_CA_FILE": "/no/such/ca.pem"},
            "GATEWAY_NODE_CA_FILE='/no/such/ca.pem' is not a readable file",
        ),
    ],
)
def test_a_tls_setting_that_cannot_work_stops_the_gateway_naming_its_variable(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        Settings.from_environ(environ)


def minio_settings(settings: Settings) -> MinioSettings:
    return MinioSettings(
        bucket=settings.bucket,
        connect_timeout_seconds=1,
        first_byte_timeout_seconds=1,
        idle_timeout_seconds=1,
        part_size_bytes=settings.part_size_bytes,
        download_chunk_bytes=settings.download_chunk_bytes,
        scheme=settings.node_scheme,
        ca_file=settings.node_ca_file,
    )
