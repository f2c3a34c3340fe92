"""The SR-GNN protocol on hand-worked click logs and on the bundled raw sample."""

from pathlib import Path

import pytest

from sessionrec.data import (
    DataError, item_counts, load_dataset, prefixes, read_session_file, sessionize, read_clicks, validation_split,
)

SAMPLE = Path(__file__).resolve().parents[2] / "sessionrec" / "data" / "diginetica-sample.csv"


def write(tmp_path, text, name="clicks.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def digi(rows):
    return "session_id;user_id;item_id;timeframe;eventdate\n" + "\n".join(";".join(map(str, r)) for r in rows)


def test_protocol_hand_worked(tmp_path):
    # Items 10 and 20 are seen >= 5 times, 30 four times (dropped), 40 once (dropped).
    # Session dates: s1..s4 on 2016-01-01, s5 2016-01-05, s6 on 2016-01-20 (test window: > 01-13).
    rows = [
        # s1: clicks out of time order -> sorted by timeframe: 20 10 30 -> 30 dropped -> [20, 10]
        (1, "NA", 10, 200, "2016-01-01"), (1, "NA", 20, 100, "2016-01-01"), (1, "NA", 30, 300, "2016-01-01"),
        (2, "NA", 10, 1, "2016-01-01"), (2, "NA", 20, 2, "2016-01-01"), (2, "NA", 30, 3, "2016-01-01"),
        (3, "NA", 20, 1, "2016-01-01"), (3, "NA", 10, 2, "2016-01-01"), (3, "NA", 30, 3, "2016-01-01"),
        # s4: [10, 40] -> 40 dropped -> length 1 -> session dropped
        (4, "NA", 10, 1, "2016-01-01"), (4, "NA", 40, 2, "2016-01-01"),
        (5, "NA", 20, 1, "2016-01-05"), (5, "NA", 10, 2, "2016-01-05"), (5, "NA", 30, 3, "2016-01-05"),
        # s7: length 1 -> dropped before counting (its item 20 does not count)
        (7, "NA", 20, 1, "2016-01-05"),
        # s6: test session (last day)
        (6, "NA", 10, 1, "2016-01-20"), (6, "NA", 20, 2, "2016-01-20"), (6, "NA", 20, 3, "2016-01-20"),
    ]
    ds = sessionize(read_clicks(write(tmp_path, digi(rows))))
    # training sessions by date: s1, s2, s3 (01-01, file order kept), s5 (01-05); numbering by first
    # appearance: 20 -> 1, 10 -> 2.
    assert ds.train == [[1, 2], [2, 1], [1, 2], [1, 2]]
    assert ds.test == [[2, 1, 1]]
    assert ds.n_items == 2
    assert ds.raw_ids.tolist() == [-1, 20, 10]


def test_test_items_unseen_in_training_are_dropped(tmp_path):
    rows = [(s, "NA", i, t, "2016-01-01") for s in range(1, 4) for t, i in enumerate([1, 2])]
    rows += [(s, "NA", 3, 1, "2016-01-20") for s in (8, 9)] + [(s, "NA", 3, 2, "2016-01-20") for s in (8, 9)]
    rows += [(9, "NA", 1, 3, "2016-01-20"), (10, "NA", 1, 1, "2016-01-20"), (10, "NA", 2, 2, "2016-01-20")]
    rows += [(11, "NA", 3, 1, "2016-01-20"), (11, "NA", 1, 2, "2016-01-20")]
    ds = sessionize(read_clicks(write(tmp_path, digi(rows))), min_item_count=2)
    # item 3 only occurs in the test window: removed; s8 becomes empty, s9 [1] (dropped), s10 kept,
    # s11 -> [1] dropped
    assert ds.test == [[1, 2]]


def test_generic_csv_and_iso_timestamps(tmp_path):
    lines = ["session_id,item_id,timestamp"]
    for s in range(5):
        lines += [f"a{s},7,2020-01-01T00:00:0{s + 1}", f"a{s},8,2020-01-01T00:00:00"]
    lines += ["t,7,2020-01-30T00:00:00Z", "t,8,1580342401"]
    ds = sessionize(read_clicks(write(tmp_path, "\n".join(lines))))
    assert ds.train == [[1, 2]] * 5  # 8 first (time 0), then 7
    assert ds.test == [[2, 1]]


def test_bundled_sample_follows_the_protocol():
    ds = load_dataset(SAMPLE)
    assert (ds.n_items, len(ds.train), len(ds.test)) == (309, 469, 39)
    assert all(len(s) >= 2 for s in ds.train + ds.test)
    assert sorted({i for s in ds.train for i in s}) == list(range(1, ds.n_items + 1))
    assert all(1 <= i <= ds.n_items for s in ds.test for i in s)
    assert len(set(ds.raw_ids[1:].tolist())) == ds.n_items
    x, y = prefixes(ds.train)
    assert len(x) == sum(len(s) - 1 for s in ds.train) == len(y)


def test_prefixes_reference_order():
    x, y = prefixes([[1, 2, 3]])
    assert x == [[1, 2], [1]] and y.tolist() == [3, 2]


def test_validation_split_is_the_latest_whole_sessions():
    train = [[i, i + 1] for i in range(1, 21)]
    fit, valid = validation_split(train, 0.1)
    assert fit == train[:18] and valid == train[18:]
    with pytest.raises(DataError):
        validation_split([[1, 2]], 0.1)


def test_item_counts():
    assert item_counts([[1, 2, 2], [3]], 4).tolist() == [0, 1, 2, 1, 0]


@pytest.mark.parametrize(
    "content, message",
    [
        ("a;b;c\n1;2;3", "unrecognised header"),
        ("session_id;user_id;item_id;timeframe;eventdate\n1;NA;5;x;2016-01-01", "bad timeframe"),
        ("session_id;user_id;item_id;timeframe;eventdate\n1;NA;5;1;01/02/2016", "bad date"),
        ("session_id,item_id,timestamp\n1,5,yesterday", "bad timestamp"),
        ("session_id;user_id;item_id;timeframe;eventdate\n1;NA;5;1;2016-01-01", "no session survives"),
        ("", "unrecognised header"),
    ],
)
def test_bad_files_name_the_problem(tmp_path, content, message):
    path = write(tmp_path, content)
    with pytest.raises(DataError, match=message) as err:
        load_dataset(path)
    assert str(path) in str(err.value)


def test_missing_file_and_bad_session_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_dataset(tmp_path / "nope.csv")
    bad = write(tmp_path, "1 2 x\n", "train_sessions.txt")
    with pytest.raises(DataError, match=r"train_sessions.txt:1: expected space-separated"):
        read_session_file(bad)
    with pytest.raises(DataError, match="not a directory|no such file"):
        load_dataset(tmp_path / "missing_dir" / "x")
