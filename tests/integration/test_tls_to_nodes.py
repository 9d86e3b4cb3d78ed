"""TLS between the gateway and its nodes (GATEWAY_NODE_SCHEME=https, GATEWAY_NODE_CA_FILE).

Two nodes serve HTTPS only, with a certificate this test makes and signs with a CA of its own,
mounted where MinIO looks for it (/root/.minio/certs: the stand-in honours the same place). The
gateway speaks TLS to them and checks their chain against that CA; a gateway that trusts another
CA, or speaks plain HTTP, is refused by them.
"""

from __future__ import annotations

import hashlib
import ssl
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import httpx
import pytest
from testcontainers.core.container import DockerContainer

from tests.certificates import Authority
from tests.integration.support import (
    MINIO_IMAGE,
    ROOT_KEY_NAMES,
    TEST_LABELS,
    GatewayServer,
    new_run_marker,
    wait_for,
)

MINIO_CERTS_DIR = "/root/.minio/certs"


@dataclass
class TlsFleet:
    marker: str
    ca_file: Path
    other_ca_file: Path
    addresses: list[str]


def https_answers(address: str, ca_file: Path) -> bool:
    context = ssl.create_default_context(cafile=str(ca_file))
    context.check_hostname = False
    try:
        httpx.get(f"https://{address}/", verify=context, timeout=2)
    except httpx.TransportError:
        return False
    return True


@pytest.fixture(scope="module")
def tls_fleet(docker_client: docker.DockerClient) -> Iterator[TlsFleet]:
    marker = new_run_marker()
    authority, stranger = Authority.new("fleet CA"), Authority.new("some other CA")
    started: list[DockerContainer] = []
    with tempfile.TemporaryDirectory(prefix="amazin-tls-") as directory:
        root = Path(directory)
        (root / "ca.pem").write_bytes(authority.pem())
        (root / "other-ca.pem").write_bytes(stranger.pem())
        certs = root / "certs"
        certs.mkdir()
        certificate, key = authority.issue("amazin-object-storage-node")
        (certs / "public.crt").write_bytes(certificate)
        (certs / "private.key").write_bytes(key)
        try:
            addresses = []
            for index in (1, 2):
                container = (
                    DockerContainer(MINIO_IMAGE)
                    .with_name(f"{marker}-{index}")
                    .with_command("server /data")
                    .with_env(ROOT_KEY_NAMES[0], f"tlsuser{index}")
                    .with_env(ROOT_KEY_NAMES[1], f"tls-secret-{uuid.uuid4().hex[:12]}")
                    .with_volume_mapping(str(certs), MINIO_CERTS_DIR, "ro")
                    .with_kwargs(labels=TEST_LABELS)
                )
                container.start()
                started.append(container)
                wrapped = container.get_wrapped_container()
                wrapped.reload()
                networks = wrapped.attrs["NetworkSettings"]["Networks"]
                ip = next(n["IPAddress"] for _, n in sorted(networks.items()) if n["IPAddress"])
                addresses.append(f"{ip}:9000")
            for address in addresses:
                wait_for(
                    lambda address=address: https_answers(address, root / "ca.pem"),
                    30,
                    f"the node at {address} to answer over TLS",
                )
            yield TlsFleet(marker, root / "ca.pem", root / "other-ca.pem", addresses)
        finally:
            for container in started:
                container.stop()
                container.get_docker_client().client.close()


def test_objects_round_trip_over_tls_to_nodes_that_speak_only_tls(
    tls_fleet: TlsFleet, figures: dict[str, str]
) -> None:
    with (
        GatewayServer.for_marker(
            tls_fleet.marker, node_scheme="https", node_ca_file=str(tls_fleet.ca_file)
        ) as server,
        httpx.Client(base_url=server.base_url, timeout=60) as http,
    ):
        bodies = {f"tls{i}": hashlib.sha256(b"%d" % i).digest() * (i + 1) for i in range(12)}
        for object_id, body in bodies.items():
            assert http.put(f"/object/{object_id}", content=body).status_code == 201
        for object_id, body in bodies.items():
            assert http.get(f"/object/{object_id}").content == body
        ranged = http.get("/object/tls3", headers={"Range": "bytes=2-5"})
        assert ranged.status_code == 206
        assert ranged.content == bodies["tls3"][2:6]
        listed = http.get("/objects", params={"prefix": "tls"}).json()["objects"]
        assert {entry["id"] for entry in listed} == set(bodies)
        assert http.delete("/object/tls0").status_code == 204
        assert http.get("/object/tls0").status_code == 404
        nodes = http.get("/health/ready").json()["nodes"]
        assert [node["state"] for node in nodes] == ["up", "up"]
    # The nodes speak nothing but TLS: plain HTTP to them is refused.
    for address in tls_fleet.addresses:
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://{address}/", timeout=2)
    figures["TLS to nodes (https, the fleet's own CA)"] = "12 objects round-trip, ranged, listed"


def test_a_gateway_that_trusts_another_ca_is_refused_by_the_nodes_and_answers_503(
    tls_fleet: TlsFleet,
) -> None:
    with (
        GatewayServer.for_marker(
            tls_fleet.marker, node_scheme="https", node_ca_file=str(tls_fleet.other_ca_file)
        ) as server,
        httpx.Client(base_url=server.base_url, timeout=60) as http,
    ):
        response = http.put("/object/stranger", content=b"never stored")
        assert response.status_code == 503
        assert response.json()["error"] == "node_unavailable"
        assert "certificate" in response.json()["detail"].lower()


def test_a_gateway_speaking_plain_http_to_tls_nodes_answers_503(tls_fleet: TlsFleet) -> None:
    with (
        GatewayServer.for_marker(tls_fleet.marker) as server,
        httpx.Client(base_url=server.base_url, timeout=60) as http,
    ):
        response = http.put("/object/plain", content=b"never stored")
        assert response.status_code == 503
        assert response.json()["error"] == "node_unavailable"
