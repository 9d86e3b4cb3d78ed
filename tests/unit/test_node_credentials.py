from adapters.docker import credentials_from_env
from adapters.s3.buckets import _NodeKey
from domain.node import Credentials, Node, NodeState
from tests.fakes import make_node


def test_root_user_and_password_are_the_keys() -> None:
    env = ["PATH=/bin", "MINIO_ROOT_USER=alice", "MINIO_ROOT_PASSWORD=secret=with=equals"]
    assert credentials_from_env(env) == Credentials("alice", "secret=with=equals")


def test_legacy_access_and_secret_keys_are_the_fallback() -> None:
    env = ["MINIO_ACCESS_KEY=bob", "MINIO_SECRET_KEY=bobsecret"]
    assert credentials_from_env(env) == Credentials("bob", "bobsecret")


def test_root_keys_win_over_legacy_ones_as_in_minio() -> None:
    env = [
        "MINIO_ACCESS_KEY=old",
        "MINIO_SECRET_KEY=oldsecret",
        "MINIO_ROOT_USER=new",
        "MINIO_ROOT_PASSWORD=newsecret",
    ]
    assert credentials_from_env(env) == Credentials("new", "newsecret")


def test_rustfs_keys_are_read_after_minios_pairs() -> None:
    rustfs = ["RUSTFS_ACCESS_KEY=rusty", "RUSTFS_SECRET_KEY=rustysecret"]
    assert credentials_from_env(rustfs) == Credentials("rusty", "rustysecret")
    assert credentials_from_env(
        [*rustfs, "MINIO_ACCESS_KEY=bob", "MINIO_SECRET_KEY=bobsecret"]
    ) == Credentials("bob", "bobsecret")
    assert credentials_from_env(["RUSTFS_ACCESS_KEY=rusty"]) is None


def test_a_half_set_pair_does_not_count() -> None:
    assert credentials_from_env(["MINIO_ROOT_USER=alice"]) is None
    assert credentials_from_env(["MINIO_ROOT_USER=alice", "MINIO_SECRET_KEY=x12345678"]) is None


def test_a_container_without_environment_has_no_keys() -> None:
    assert credentials_from_env(None) is None


def test_a_node_never_shows_its_secret_key() -> None:
    node = make_node("node-1")
    assert node.credentials.secret_key not in repr(node)
    assert node.credentials.secret_key not in str(node)


def test_the_storage_adapters_key_of_a_node_never_shows_the_secret() -> None:
    node = Node("n1", "10.0.0.1", 9000, Credentials("visible", "hidden-secret"), NodeState.UP)
    shown = repr(_NodeKey.of(node))
    assert "visible" in shown
    assert "hidden-secret" not in shown
