"""The connector registry and the helpers every connector shares (frequency aliases, inputs, id prefixes)."""

from __future__ import annotations

import pytest

from corpus.errors import MalformedInputError
from corpus.sources.common import expand_inputs, item_prefixes, parse_floats, source_freq
from corpus.sources.registry import get_connector


@pytest.mark.parametrize("kind", ["tsf", "m4", "ltsf", "wiki", "lotsa", "long"])
def test_every_builtin_connector_is_registered_with_strict_options(kind):
    connector = get_connector(kind)
    assert connector.name == kind and connector.description
    connector.parse_options({})  # defaults are enough
    with pytest.raises(ValueError, match=f"connector '{kind}' options: bogus: Extra inputs are not permitted"):
        connector.parse_options({"bogus": 1})


@pytest.mark.parametrize(
    ("given", "alias"),
    [("H", "h"), ("15T", "15min"), ("10S", "10s"), ("M", "ME"), ("A-DEC", "YE-DEC"), ("Q", "QE"), ("W-SUN", "W-SUN")],
)
def test_legacy_frequency_spellings_become_current_aliases(given, alias):
    assert source_freq(given) == alias


def test_unknown_frequency_is_an_error():
    with pytest.raises(MalformedInputError, match=r"f.csv: item a: unknown frequency 'often'"):
        source_freq("often", "f.csv", "item a")


def test_parse_floats_missing_tokens_and_errors():
    assert parse_floats(["1", "", "?", "2.5"], "f", "line 1").tolist()[::3] == [1.0, 2.5]
    with pytest.raises(MalformedInputError, match=r"f: line 9: value 3 is not a number: 'x'"):
        parse_floats(["1", "2", "x"], "f", "line 9")


def test_expand_inputs_lists_folders_and_globs_in_name_order(tmp_path):
    for name in ("b.csv", "a.csv.gz", "c.txt", ".hidden.csv"):
        (tmp_path / name).write_text("x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.csv").write_text("x")
    found = expand_inputs([str(tmp_path)], {}, [".csv"])
    assert found == [str(tmp_path / n) for n in ("a.csv.gz", "b.csv", "sub/d.csv")]
    assert expand_inputs([str(tmp_path / "*.txt")], {}, [".csv"]) == [str(tmp_path / "c.txt")]
    with pytest.raises(FileNotFoundError, match="no such file"):
        expand_inputs([str(tmp_path / "nope.csv")], {}, [".csv"])


def test_item_prefixes_only_when_several_files():
    assert item_prefixes(["/d/a.tsf"]) == {"/d/a.tsf": ""}
    assert item_prefixes(["/d/a.tsf", "/d/b.tsf.gz"]) == {"/d/a.tsf": "a/", "/d/b.tsf.gz": "b/"}
    assert item_prefixes(["/x/a.csv", "/y/a.csv"]) == {"/x/a.csv": "x/a.csv/", "/y/a.csv": "y/a.csv/"}
