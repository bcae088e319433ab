"""Stage caching: unchanged inputs skip, changed inputs or tampered outputs re-run."""

import pytest

from ehrjudge.pipeline.stages import StageRunner


def _builder(calls, text):
    def build(tmp):
        calls.append(text)
        (tmp / "out.txt").write_text(text)
    return build


def test_unchanged_inputs_skip_and_changed_inputs_rerun(tmp_path):
    # Setup
    calls = []
    runner = StageRunner(tmp_path)
    # Run
    first = runner.run("a", {"x": 1}, _builder(calls, "one"))
    again = runner.run("a", {"x": 1}, _builder(calls, "one"))
    changed = runner.run("a", {"x": 2}, _builder(calls, "two"))
    # Assert
    assert calls == ["one", "two"] and first == again and changed != first
    assert [r.skipped for r in runner.records] == [False, True, False]
    assert (tmp_path / "a" / "out.txt").read_text() == "two"


def test_tampered_output_and_force_rerun(tmp_path):
    calls = []
    StageRunner(tmp_path).run("a", {"x": 1}, _builder(calls, "one"))
    (tmp_path / "a" / "out.txt").write_text("edited")
    StageRunner(tmp_path).run("a", {"x": 1}, _builder(calls, "one"))
    StageRunner(tmp_path, force=frozenset({"a"})).run("a", {"x": 1}, _builder(calls, "one"))
    assert calls == ["one", "one", "one"]


def test_failed_stage_keeps_previous_output(tmp_path):
    calls = []
    runner = StageRunner(tmp_path)
    runner.run("a", {"x": 1}, _builder(calls, "one"))

    def broken(tmp):
        (tmp / "out.txt").write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        runner.run("a", {"x": 2}, broken)
    assert (tmp_path / "a" / "out.txt").read_text() == "one"
