"""The CLI: thin commands over the library, readable one-line errors, documented with examples."""

import json

import pytest

from sessionrec.cli import build_parser, main


def commands():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return sub.choices


def test_every_command_is_documented_with_an_example():
    names = set(commands())
    assert {"train", "evaluate", "export", "serve", "rollback", "demo", "build-engine", "recommend"} <= names
    for name, parser in commands().items():
        assert "Example" in (parser.description or ""), f"{name} --help has no example"


def test_train_then_evaluate(tmp_path, sample_path, capsys):
    out = tmp_path / "run"
    assert main(["train", str(sample_path), "--out", str(out), "--epochs", "1", "--dim", "16",
                 "--batch-size", "50", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["best_epoch"] == 1 and 0 <= summary["valid"]["HR@20"] <= 100
    assert (out / "best.pt").is_file() and (out / "last.pt").is_file() and (out / "training.png").is_file()
    # resume: the run continues from last.pt for one more epoch
    assert main(["train", str(sample_path), "--out", str(out), "--epochs", "2", "--dim", "16",
                 "--batch-size", "50", "--quiet", "--resume"]) == 0
    history = json.loads((out / "history.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2]
    capsys.readouterr()
    result = tmp_path / "eval.json"
    assert main(["evaluate", str(out / "best.pt"), "--data", str(sample_path), "--baselines", "pop,spop",
                 "--json", str(result)]) == 0
    table = capsys.readouterr().out
    assert "| POP |" in table and "| S-POP |" in table and "HR@20" in table
    rows = json.loads(result.read_text())
    assert [r["name"] for r in rows][1:] == ["POP", "S-POP"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "/nonexistent/clicks.csv", "--out", "OUT"], "/nonexistent/clicks.csv: no such file"),
        (["export", "/nonexistent/best.pt", "--repository", "REPO"], "no such checkpoint"),
        (["evaluate", "/nonexistent/best.pt", "--data", "SAMPLE"], "no such checkpoint"),
        (["serve", "--repository", "REPO"], "no live model version"),
        (["rollback", "--repository", "REPO"], "no previous version"),
    ],
)
def test_errors_are_one_readable_line(tmp_path, sample_path, capsys, argv, message):
    argv = [a.replace("OUT", str(tmp_path / "o")).replace("REPO", str(tmp_path / "repo"))
            .replace("SAMPLE", str(sample_path)) for a in argv]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and f"sessionrec {argv[0]}: error:" in err


def test_tiny_dataset_is_refused_with_a_clear_message(tmp_path, capsys):
    tiny = tmp_path / "tiny.csv"
    rows = ["session_id,item_id,timestamp"] + [f"s{s},{i},{s * 10 + t}" for s in range(6) for t, i in enumerate([1, 2])]
    rows += ["t,1,1000000", "t,2,1000001"]
    tiny.write_text("\n".join(rows))
    assert main(["train", str(tiny), "--out", str(tmp_path / "o"), "--quiet"]) == 1
    assert "too little data" in capsys.readouterr().err
