import pytest

from domain.errors import InvalidObjectId
from domain.object_id import ObjectId


@pytest.mark.parametrize("value", ["a", "Z", "0", "abc123XYZ", "a" * 32, "0123456789" * 3 + "ab"])
def test_ids_of_1_to_32_ascii_letters_and_digits_are_valid(value: str) -> None:
    assert ObjectId(value).value == value
    assert str(ObjectId(value)) == value


@pytest.mark.parametrize(
    "value",
    [
        "",
        "a" * 33,
        "a-b",
        "a_b",
        "a b",
        "a/b",
        "a.b",
        "abc\n",
        "\nabc",
        "é",
        "abc\u0661",  # Arabic-Indic digit one: isalnum() but not ASCII
        "\uff41\uff42\uff43",  # fullwidth letters
        "a%2Fb",
    ],
)
def test_anything_else_is_an_invalid_object_id(value: str) -> None:
    with pytest.raises(InvalidObjectId):
        ObjectId(value)


def test_invalid_id_error_quotes_the_rejected_value() -> None:
    with pytest.raises(InvalidObjectId, match="'a-b'"):
        ObjectId("a-b")


def test_equal_ids_are_equal_and_hash_alike() -> None:
    assert ObjectId("abc") == ObjectId("abc")
    assert len({ObjectId("abc"), ObjectId("abc"), ObjectId("abd")}) == 2
