"""The embedded pipeline end to end: DLQ, soft labels reaching the learner, determinism."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from kdstream.demo import demo_config, run_demo
from kdstream.stream import DeadLetter, Event
from kdstream.stream._runtime import EmbeddedPipeline, PipelineConfig


def _events(n: int, seed: int = 0) -> list[Event]:
    rng = np.random.default_rng(seed)
    return [
        Event(f"u{rng.integers(20)}", f"i{rng.integers(40)}", "view", 1_700_000_000.0 + k)
        for k in range(n)
    ]


def test_bad_records_go_to_dlq_and_good_ones_are_learned():
    p = EmbeddedPipeline(PipelineConfig(variants=("popularity", "student"), batch_size=16))
    good = _events(50)
    p.produce(good[:25])
    bad = [b"not json", b'{"user": "u1"}', b'{"user": "u1", "item": "i1", "ts": "yesterday"}']
    p.produce_raw(bad, [None, "u1", "u1"])
    p.produce(good[25:])
    stats = p.run()
    assert stats.events == 50
    assert stats.dead_lettered == 3
    dlq = p.log.read(p.config.dlq_topic, 0, 0, 10)
    reasons = [DeadLetter.from_bytes(r.value).reason for r in dlq]
    assert len(reasons) == 3
    assert any("item" in r for r in reasons)
    assert any("ts" in r for r in reasons)
    assert p.learner("student").events_learned == 50


def test_teacher_soft_labels_reach_the_student():
    cfg = demo_config(6_000, seed=3)
    cfg = replace(cfg, teacher=replace(cfg.teacher, dim=16, epochs=2, max_len=20))
    p = EmbeddedPipeline(cfg)
    from kdstream.replay import SyntheticConfig, generate

    stream = generate(SyntheticConfig(n_users=200, n_items=150, n_events=6_000, seed=3))
    p.produce(stream.to_events())
    stats = p.run()
    assert stats.teacher_refreshes >= 2
    assert stats.soft_labels_applied > 0
    kd = p.learner("student+kd")
    assert kd.teacher_version >= 1
    assert kd.user_labels.has.any()
    assert not p.learner("student").user_labels.has.any()  # the plain student ignores them
    kd.student.check_finite()


@pytest.mark.slow
def test_demo_is_deterministic_and_reports_every_variant():
    a = run_demo(4_000, seed=5, progress=False)
    b = run_demo(4_000, seed=5, progress=False)
    assert a["variants"] == b["variants"]
    assert set(a["variants"]) == {"popularity", "student", "student+kd", "teacher"}
    assert a["events"] == 4_000
    assert a["teacher_refreshes"] >= 1
    for m in a["variants"].values():
        assert 0.0 <= m["ndcg@10"] <= m["hr@10"] <= 1.0
    json.dumps(a)


def test_cli_demo_json(capsys):
    from kdstream.cli import main

    assert main(["demo", "--events", "3000", "--seed", "1", "--json", "--no-progress"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) >= {"events", "variants", "events_per_s", "teacher_refreshes"}
    assert out["events"] == 3000


def test_cli_demo_teacher_flags_reach_the_pipeline(monkeypatch, capsys):
    from kdstream import demo
    from kdstream.cli import main

    seen = []
    real = demo.demo_config

    def spy(n, seed, teacher_epochs=demo.DEMO_TEACHER_EPOCHS, teacher_dim=demo.DEMO_TEACHER_DIM):
        cfg = real(n, seed, teacher_epochs, teacher_dim)
        seen.append((cfg.teacher.epochs, cfg.teacher.dim))
        return cfg

    monkeypatch.setattr(demo, "demo_config", spy)
    argv = ["demo", "--events", "2500", "--json", "--no-progress"]
    assert main([*argv, "--teacher-epochs", "2", "--teacher-dim", "16"]) == 0
    assert main(argv) == 0
    assert seen == [(2, 16), (demo.DEMO_TEACHER_EPOCHS, demo.DEMO_TEACHER_DIM)]
    capsys.readouterr()


def test_cli_demo_stream_settings_reach_the_generator(monkeypatch, capsys):
    from kdstream import demo
    from kdstream.cli import main

    configs = []
    real = demo.generate

    def spy(cfg):
        configs.append(cfg)
        return real(cfg)

    monkeypatch.setattr(demo, "generate", spy)
    argv = ["demo", "--events", "2500", "--json", "--no-progress", "--set", "n_items=300",
            "--set", "series_len_mean=3", "--set", "series_weight=2", "--set", "series_open=1"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    cfg = configs[0]
    assert (cfg.n_items, cfg.series_len_mean, cfg.series_weight, cfg.series_open) == (
        300, 3.0, 2.0, True)
    assert out["stream"] == {"n_items": 300, "series_len_mean": 3.0, "series_weight": 2.0,
                             "series_open": True}
    assert out["events"] == 2500


@pytest.mark.parametrize(
    ("setting", "message"),
    [("colour=red", "got 'colour=red'"), ("n_items=many", "n_items: expected an int, got 'many'"),
     ("p_negative=2", "SyntheticConfig.p_negative must be in")],
)
def test_cli_demo_bad_stream_setting_is_one_clear_error(capsys, setting, message):
    from kdstream.cli import main

    assert main(["demo", "--events", "2000", "--no-progress", "--set", setting]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kdstream: error:") and message in err


def test_dead_letters_kept_in_memory_are_capped_all_are_on_the_dlq() -> None:
    from kdstream.stream._runtime import RECENT_DEAD_LETTERS

    pipe = EmbeddedPipeline(PipelineConfig(variants=("popularity",), batch_size=500))
    n = RECENT_DEAD_LETTERS + 700
    pipe.produce_raw([b"not json %d" % k for k in range(n)], [None] * n)
    pipe.run()
    assert pipe.stats.dead_lettered == n
    assert len(pipe.dead_letters) == RECENT_DEAD_LETTERS
    assert len({d.raw for d in pipe.dead_letters}) == RECENT_DEAD_LETTERS and all(
        d.reason for d in pipe.dead_letters)
    assert sum(pipe.log.end_offsets(pipe.config.dlq_topic).values()) == n  # none lost
