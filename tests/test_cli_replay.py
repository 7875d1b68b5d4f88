"""``kdstream replay`` / ``kdstream evaluate`` command lines (embedded broker, no servers)."""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
from pathlib import Path

import pytest

from kdstream.cli_replay import add_parsers
from kdstream.errors import ConfigError
from kdstream.replay import SyntheticConfig, generate
from kdstream.stream import encode_event

BAD = {4: b"not json at all", 9: b'{"v": 1, "user": "u1"}', 17: b"[1, 2, 3]"}


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="kdstream")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parsers(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))


def _log_bytes(n_events: int = 300, bad: dict[int, bytes] | None = None) -> bytes:
    """JSONL with ``bad`` lines inserted at those 1-based line numbers."""
    cols = generate(SyntheticConfig(n_users=30, n_items=40, n_events=n_events, seed=2))
    good = iter(encode_event(e) for e in cols.to_events())
    bad = bad or {}
    lines = []
    for lineno in range(1, n_events + len(bad) + 1):
        lines.append(bad[lineno] if lineno in bad else next(good))
    return b"\n".join(lines) + b"\n"


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "events.jsonl"
    path.write_bytes(_log_bytes(bad=BAD))
    return path


def test_replay_counts_and_reports_bad_lines(log: Path, capsys: pytest.CaptureFixture) -> None:
    assert _main(["replay", str(log), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "300 events sent, 3 lines rejected" in out
    listed = [int(n) for n in re.findall(r"^  line (\d+):", out, flags=re.M)]
    assert listed == sorted(BAD)
    assert "learned 300 events" in out  # the embedded pipeline ran on the replay


def test_replay_reads_stdin(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    data = _log_bytes(n_events=120, bad={2: b"{broken"})
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    assert _main(["replay", "-", "--format", "jsonl", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "120 events sent, 1 lines rejected" in out
    assert re.search(r"^  line 2:", out, flags=re.M)


def test_replay_limit(log: Path, capsys: pytest.CaptureFixture) -> None:
    assert _main(["replay", str(log), "--limit", "50", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "50 events sent" in out
    assert "learned 50 events" in out


def test_replay_progress_goes_to_stderr(log: Path, capsys: pytest.CaptureFixture) -> None:
    assert _main(["replay", str(log), "--limit", "10"]) == 0
    captured = capsys.readouterr()
    assert "replay -> kd.events 10/10" in captured.err
    assert "events/s" in captured.err
    assert "events/s" not in captured.out


def test_replay_rejects_unknown_broker(log: Path) -> None:
    with pytest.raises(ConfigError, match="broker"):
        _main(["replay", str(log), "--broker", "redis://x:1", "--no-progress"])


def test_replay_rejects_bad_flags(log: Path, capsys: pytest.CaptureFixture) -> None:
    for argv in (["--speed", "-1"], ["--limit", "0"], ["--format", "parquet"]):
        with pytest.raises(SystemExit):
            _main(["replay", str(log), *argv])
    capsys.readouterr()


def test_evaluate_writes_the_report(
    log: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out_dir = tmp_path / "out"
    argv = [
        "evaluate",
        str(log),
        "--variants",
        "popularity,student,river-mf",
        "--seed",
        "3",
        "--batch",
        "64",
        "--river-sample",
        "2",
        "--out",
        str(out_dir),
        "--no-progress",
    ]
    assert _main(argv) == 0
    printed = capsys.readouterr().out
    assert "| variant | HR@10 | NDCG@10 | MRR | events/s |" in printed
    report = json.loads((out_dir / "report.json").read_text())
    assert list(report["variants"]) == ["popularity", "student", "river-mf"]
    meta = report["metadata"]
    assert (meta["events"], meta["batch_size"], meta["seed"], meta["sample_every"]) == (
        300,
        64,
        3,
        2,
    )
    assert meta["rejected_lines"] == 3
    assert (out_dir / "report.md").exists() and (out_dir / "curves.png").exists()


def test_evaluate_rejects_unknown_variant(log: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="variants"):
        _main(["evaluate", str(log), "--variants", "popularity,als", "--out", str(tmp_path)])


def _retail_csv(tmp_path: Path) -> Path:
    """A RetailRocket-style log: millisecond times, behaviour column, one bad timestamp."""
    rows = ["timestamp;visitorid;event;itemid"]
    for k in range(200):
        event = ("view", "addtocart", "transaction")[k % 3]
        rows.append(f"{1_433_221_332_000 + 1000 * k};v{k % 17};{event};{k * 7 % 31}")
    rows.insert(50, "soon;v1;view;3")
    path = tmp_path / "events.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_replay_reads_a_generic_csv_from_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = _retail_csv(tmp_path)
    argv = ["replay", str(path), "--sep", ";", "--user-col", "visitorid", "--item-col", "itemid",
            "--time-col", "0", "--type-col", "event", "--time-unit", "ms", "--no-progress"]
    assert _main(argv) == 0
    out = capsys.readouterr().out
    assert "200 events sent, 1 lines rejected" in out and "format csv" in out
    assert re.search(r"^  line 51: time is not a number", out, flags=re.M)


def test_evaluate_reads_a_generic_csv_from_flags(tmp_path: Path) -> None:
    path = _retail_csv(tmp_path)
    out_dir = tmp_path / "out"
    argv = ["evaluate", str(path), "--format", "csv", "--sep", ";", "--user-col", "1",
            "--item-col", "3", "--time-col", "0", "--time-unit", "ms", "--variants", "popularity",
            "--no-progress", "--out", str(out_dir)]
    assert _main(argv) == 0
    report = json.loads((out_dir / "report.json").read_text())
    meta = report["metadata"]
    assert meta["format"] == "csv" and meta["rejected_lines"] == 1
    assert report["variants"]["popularity"]["events"] == 200


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--format", "csv", "--user-col", "u"], "needs --item-col, --time-col"),
        (["--format", "jsonl", "--user-col", "u"], "--user-col: only used with --format csv"),
        (["--format", "csv"], "needs --user-col, --item-col, --time-col"),
    ],
)
def test_csv_flags_name_what_is_missing(tmp_path: Path, argv: list[str], message: str) -> None:
    path = _retail_csv(tmp_path)
    with pytest.raises(ConfigError, match=re.escape(message)):
        _main(["replay", str(path), "--no-progress", *argv])
