"""Which command-line words select targets, and what each pattern or relative label names."""

from __future__ import annotations

from pathlib import Path

import pytest

from rules.command_line import aliases, selected_labels, selected_words
from rules.loading.labels import Label
from rules.loading.patterns import PatternError

LABELS = [Label("models/vision/a", "e"), Label("models/vision/a", "e2"),
          Label("models/vision/b", "e"), Label("models/text", "e"), Label("lib", "w")]
TASKS = {str(label) for label in LABELS} | {"export", "explain", "cache_gc"}


@pytest.mark.parametrize(("argv", "words"), [
    (["//m/..."], ["//m/..."]),
    (["-n", "2", "-v", "2", "--continue", "run", ":e"], [":e"]),
    (["--verbosity=2", "-a", "export", "e"], ["export", "e"]),
    (["list", "//m/..."], []),
    (["clean", ":e"], []),
])
def test_selected_words_skip_options_their_values_and_other_commands(
    argv: list[str], words: list[str]
) -> None:
    assert selected_words(argv) == words


def _names(words: list[str], cwd: str = "") -> dict[str, list[str]]:
    root = Path("/ws")
    found = aliases(words, TASKS, LABELS, root, root / cwd, takes_rest={"explain"})
    return {a.word: [str(label) for label in a.labels] for a in found}


def test_patterns_name_a_subtree_or_a_package() -> None:
    assert _names(["//models/vision/..."]) == {"//models/vision/...": [
        "//models/vision/a:e", "//models/vision/a:e2", "//models/vision/b:e"]}
    assert _names(["//models/vision/a:all"]) == {"//models/vision/a:all": [
        "//models/vision/a:e", "//models/vision/a:e2"]}


def test_relative_labels_resolve_in_the_current_package() -> None:
    assert _names([":e", "e2"], cwd="models/vision/a") == {
        ":e": ["//models/vision/a:e"], "e2": ["//models/vision/a:e2"]}
    assert _names(["...", "b:all"], cwd="models/vision") == {
        "...": ["//models/vision/a:e", "//models/vision/a:e2", "//models/vision/b:e"],
        "b:all": ["//models/vision/b:e"]}


def test_task_names_option_values_and_positional_arguments_are_left_to_doit() -> None:
    assert _names(["export", "//lib:w", "2", "5G"]) == {}
    assert _names(["explain", ":nope"], cwd="lib") == {}


def test_an_unknown_label_suggests_the_closest() -> None:
    with pytest.raises(PatternError, match=r"Did you mean '//models/vision/a:e'"):
        _names(["//models/vison/a:e"])
    with pytest.raises(PatternError, match=r"no target 'e22' in package '//models/vision/a' "
                                           r"\(//models/vision/a:e22\).*Did you mean '"):
        _names(["e22"], cwd="models/vision/a")


def test_the_selected_labels_are_what_the_words_name_or_all() -> None:
    # What a cold build's size is counted over (the server's route, BENCHMARKS section 8).
    def chosen(words: list[str]) -> frozenset[str] | None:
        found = aliases(words, TASKS, LABELS, Path("/ws"), Path("/ws"))
        return selected_labels(words, found, LABELS)

    assert chosen([]) is None and chosen(["export"]) is None
    assert chosen(["//models/vision/...", "//lib:w"]) == {
        "//models/vision/a:e", "//models/vision/a:e2", "//models/vision/b:e", "//lib:w"}
    assert chosen(["cache_gc"]) == frozenset()
