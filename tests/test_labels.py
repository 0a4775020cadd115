"""Tests for rules.loading.labels: parsing, round-trips and error messages."""

from __future__ import annotations

import random
import string

import pytest

from rules.loading.labels import Label, LabelError, is_label, valid_name

_FIRST = string.ascii_letters + string.digits + "_"
_REST = _FIRST + ".-"


def _segment(rng: random.Random) -> str:
    return rng.choice(_FIRST) + "".join(rng.choice(_REST) for _ in range(rng.randrange(0, 8)))


def _random_label(rng: random.Random) -> str:
    package = "/".join(_segment(rng) for _ in range(rng.randrange(0, 4)))
    return f"//{package}:{_segment(rng)}"


@pytest.mark.parametrize(
    ("text", "package", "name"),
    [
        ("//a/b:c", "a/b", "c"),
        ("//a/b", "a/b", "b"),
        ("//a", "a", "a"),
        ("//:root_target", "", "root_target"),
        ("//models/mnist:mnist_serving", "models/mnist", "mnist_serving"),
        ("//a-b/c.d:e-f.g_h", "a-b/c.d", "e-f.g_h"),
    ],
)
def test_parse_absolute_forms(text: str, package: str, name: str) -> None:
    assert Label.parse(text) == Label(package, name)


def test_relative_label_uses_the_current_package() -> None:
    assert Label.parse(":c", "a/b") == Label("a/b", "c")
    assert Label.parse(":c", "") == Label("", "c")


def test_absolute_label_ignores_the_current_package() -> None:
    assert Label.parse("//x:y", "a/b") == Label("x", "y")


def test_str_is_canonical() -> None:
    assert str(Label("a/b", "c")) == "//a/b:c"
    assert str(Label.parse("//a/b")) == "//a/b:b"
    assert str(Label.parse(":c", "p")) == "//p:c"


def test_round_trip_over_many_generated_labels() -> None:
    rng = random.Random(1234)
    for _ in range(2000):
        text = _random_label(rng)
        label = Label.parse(text)
        assert str(label) == text
        assert Label.parse(str(label)) == label


def test_short_form_round_trips_through_the_canonical_form() -> None:
    rng = random.Random(99)
    for _ in range(500):
        package = "/".join(_segment(rng) for _ in range(rng.randrange(1, 4)))
        label = Label.parse(f"//{package}")
        assert label.name == package.rsplit("/", 1)[-1]
        assert Label.parse(str(label)) == label


def test_labels_order_by_package_then_name() -> None:
    labels = [Label.parse(t) for t in ("//b:a", "//a:z", "//a:b", "//:x")]
    assert [str(x) for x in sorted(labels)] == ["//:x", "//a:b", "//a:z", "//b:a"]


def test_labels_are_hashable_values() -> None:
    assert {Label.parse("//a:b"), Label.parse(":b", "a")} == {Label("a", "b")}


@pytest.mark.parametrize(
    "text",
    [
        "a/b:c",
        "",
        "//",
        "//a/b:",
        "//a//b:c",
        "//a/b/:c",
        "///a:c",
        "//a:b:c",
        "//a:b/c",
        "//a b:c",
        "//a:.hidden",
        "//../a:c",
        "//a/..:c",
        "//a:-x",
        "//a\\b:c",
    ],
)
def test_invalid_labels_name_the_input(text: str) -> None:
    with pytest.raises(LabelError) as info:
        Label.parse(text, "pkg")
    assert repr(text) in str(info.value)


def test_relative_label_without_a_package_is_an_error() -> None:
    with pytest.raises(LabelError, match="':c'"):
        Label.parse(":c")


def test_non_string_label_says_received() -> None:
    with pytest.raises(LabelError, match=r"Received: 42"):
        Label.parse(42)  # type: ignore[arg-type]


def test_label_error_is_a_value_error() -> None:
    assert issubclass(LabelError, ValueError)


def test_is_label_and_valid_name() -> None:
    assert is_label("//a:b") and is_label(":b")
    assert not is_label("weights.h5") and not is_label("a/b.keras")
    assert valid_name("mnist_serving") and valid_name("v1.2-rc")
    assert not valid_name("") and not valid_name(".x") and not valid_name("a/b")


@pytest.mark.parametrize("text", ["//a:c\n", "//a\n:c"])
def test_trailing_newline_is_not_part_of_a_valid_label(text: str) -> None:
    with pytest.raises(LabelError):
        Label.parse(text)


def test_valid_name_rejects_a_trailing_newline() -> None:
    assert not valid_name("x\n")
