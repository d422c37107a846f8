"""Every command, given a bad path, file, format, URL or number, ends in one line that says what
is wrong — a non-zero exit, never a traceback. No broker is needed: each case is refused before
one would be asked (the address given points nowhere, so a case that reached it would say so)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from ridestream import cli

NOT_TLC = "a,b\n1,2\n"

CASES = [
    (["replay", "tip", "--output", "x.xlsx"], "the output must end in .parquet, .csv, .jsonl"),
    (["replay", "tip", "--from", "nowhere"], "'nowhere' is not a position"),
    (["replay", "nope"], "unknown service 'nope'"),
    (["train", "--data", "{tmp}/missing"], "missing: no such file or folder"),
    (["train", "--data", "{tmp}/notlc.csv"], "missing TLC column"),
    (["score-batch", "--input", "{tmp}/notlc.csv"], "missing TLC column"),
    (["score-batch", "--input", "{tmp}/notlc.csv", "--db", "foo://x"], "not a database URL ridestream can open"),
    (["score-batch", "--input", "{tmp}/notlc.csv", "--db", "not a url"], "not a database URL ridestream can open"),
    (["score-batch"], "give the trips with --input"),
    (["score-batch", "--input-db", "sqlite:///{tmp}/t.db"], "--input-db needs --table"),
    (["score-batch", "--input-db", "sqlite:///{tmp}/t.db", "--table", "t", "--since", "soon"], "--since 'soon'"),
    (["report", "--db", "sqlite:///{tmp}/none.db"], "no results database at"),
    (["report", "--db", "foo://bar"], "not a database URL ridestream can open"),
    (["bench", "--events", "-1"], "Invalid value for '--events'"),
    (["consume", "nope"], "unknown service 'nope'"),
    (["consume", "tip", "--model", "{tmp}/missing"], "missing: no model artifact there"),
    (["consume", "tip", "--model", "vNope"], "no single tip model has version 'vNope'"),
    (["produce", "--rate", "abc"], "'abc': expected events a second"),
    (["models", "show", "nope"], "no model 'nope'"),
    (["models", "alias", "tip", "champion", "vNope"], "has no version or alias 'vNope'"),
    (["broker", "start", "--port", "0"], "Invalid value for '--port'"),
    (["topics", "create", "--partitions", "0"], "invalid setting RIDESTREAM_EVENTS_PARTITIONS"),
]


@pytest.mark.parametrize(("argv", "expected"), CASES, ids=[" ".join(a) for a, _ in CASES])
def test_a_bad_invocation_is_one_line_and_a_non_zero_exit(argv, expected, tmp_path, monkeypatch, capsys):
    (tmp_path / "notlc.csv").write_text(NOT_TLC)
    for var in [v for v in list(os.environ) if v.startswith("RIDESTREAM_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")  # nothing listens there
    monkeypatch.setenv("RIDESTREAM_CONNECT_TIMEOUT_S", "1")
    monkeypatch.setenv("COLUMNS", "400")
    monkeypatch.setattr(sys, "argv", ["ridestream", *(a.replace("{tmp}", str(tmp_path)) for a in argv)])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code not in (0, None)
    text = capsys.readouterr()
    said = text.out + text.err
    assert "Traceback" not in said and "no Kafka broker answered" not in said
    assert expected in " ".join(said.split()), said
    assert not Path("x.xlsx").exists()


def test_an_error_nobody_foresaw_is_still_one_line_and_minus_v_shows_its_traceback(tmp_path, monkeypatch, capsys):
    from consumers import batch  # score-batch imports it when it runs

    def broken(*args, **kwargs):
        raise KeyError("a [bracketed] key")

    monkeypatch.setattr(batch, "score_batch_files", broken)
    monkeypatch.setattr(sys, "argv", ["ridestream", "score-batch", "--input", "x.csv", "--db", f"sqlite:///{tmp_path}/r.db"])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 1
    said = capsys.readouterr().err
    assert "unexpected KeyError: 'a [bracketed] key' — rerun with -v for the traceback" in " ".join(said.split())
    assert "Traceback" not in said
    monkeypatch.setattr(sys, "argv", ["ridestream", "-v", *sys.argv[1:]])
    with pytest.raises(KeyError):
        cli.main()
