"""One title reader for the score stage's examples and the report: movies.csv, u.item, and failures
that are warnings, never a failed stage."""

import pandas as pd
import pytest

from cfmodel.errors import InputError
from cfmodel.score.stage import print_examples
from cfmodel.storage import Storage
from cfmodel.titles import parse_titles, read_titles
from helpers import logged

EXAMPLES = pd.DataFrame({"user_id": [7, 7, 9], "rank": [1, 2, 1], "item_id": [1, 2, 2],
                         "score": [4.5, 4.0, 3.5], "fallback": [False, False, True]})


def test_titles_from_movies_csv_and_latin1_u_item():
    csv = parse_titles("movieId,title,genres\n1,Amélie (2001),Comedy\n".encode("utf-8"), "movies.csv")
    assert csv.iloc[0].tolist() == [1, "Amélie (2001)"]
    item = parse_titles("1|Café Society (1995)|01-Jan-1995||http://x|0|1\n".encode("latin-1"), "ml-100k/u.item")
    assert item.iloc[0].tolist() == [1, "Café Society (1995)"]
    with pytest.raises(InputError, match="needs columns movieId and title"):
        parse_titles(b"id,name\n1,x\n", "titles.csv")
    with pytest.raises(InputError, match="not a movies.csv or u.item"):
        parse_titles(b"\xff\xfe\x00garbage", "movies.csv")


def test_score_examples_with_u_item_titles(spark, tmp_path, capsys):
    """The MovieLens 100K case that used to fail a finished score stage with an AnalysisException."""
    titles = tmp_path / "ml-100k" / "u.item"
    titles.parent.mkdir()
    titles.write_bytes("1|Toy Story (1995)|01-Jan-1995||http://x|0|1\n2|GoldenEye (1995)|01-Jan-1995||x|1|0\n"
                       .encode("latin-1"))
    print_examples(Storage(spark), EXAMPLES, str(titles))
    out = capsys.readouterr().out
    assert "1. 1        4.50  Toy Story (1995)" in out and "user 9 (fallback):" in out
    assert "GoldenEye (1995)" in out


@pytest.mark.parametrize("content", [None, b"id,name\n1,x\n"])
def test_missing_or_wrong_titles_file_is_a_warning(spark, tmp_path, capsys, content):
    path = tmp_path / "movies.csv"
    if content is not None:
        path.write_bytes(content)
    with logged("cfmodel") as lines:  # on the logger itself: jobs run in-process may have stopped it propagating
        assert read_titles(Storage(spark), str(path)) is None
        print_examples(Storage(spark), EXAMPLES, str(path))
    assert any("movies are shown by id" in line for line in lines)
    out = capsys.readouterr().out
    assert "user 7:" in out and "1. 1        4.50" in out  # the lists still print, by id
