"""cli/datasets.py and the pieces of cli/pipeline.py and cli/resumable.py that do not need a server:
formats, audio paths, resumable JSONL, atomic JSON, the failure guard, and one routed question on
real audio."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli import datasets, pipeline, resumable

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "audio"


# ---------------------------------------------------------------------------------------------
# datasets
# ---------------------------------------------------------------------------------------------

def _mmau_rows():
    return [
        {"id": "q1", "audio_id": "./clips/speech.wav", "question": "What is said?", "choices": ["a", "b"],
         "answer": "a", "dataset": "x", "task": "speech", "split": "test-mini", "category": "Reasoning",
         "sub-category": "Phonemes", "difficulty": "easy"},
        {"id": "q2", "audio_id": "./clips/birds.wav", "question": "Which animal?", "choices": ["bird", "dog"],
         "answer": "bird", "task": "sound", "sub-category": "Events"},
    ]


def _mmar_rows():
    return [{"id": "m1", "audio_path": "clips/speech.wav", "question": "Who?", "choices": ["x", "y"],
             "answer": "x", "modality": "speech", "category": "Semantic", "sub-category": "s"}]


def test_available_formats_lists_the_three():
    assert datasets.available_formats() == ["mmau", "mmar", "jsonl"]


def test_mmau_json_detected_and_audio_relative_to_file(tmp_path):
    f = tmp_path / "mmau.json"
    f.write_text(json.dumps(_mmau_rows()))
    ds = datasets.load_dataset(f)
    assert ds.format == "mmau" and ds.container == "json" and len(ds) == 2
    q = ds.questions[0]
    assert Path(q.audio).resolve() == (tmp_path / "clips" / "speech.wav").resolve()
    assert q.group == "speech" and q.answer == "a" and q.choices == ("a", "b") and q.error is None
    assert q.row["sub-category"] == "Phonemes"  # original row kept for the predictions file


def test_mmar_jsonl_and_json_detected_with_audio_root(tmp_path):
    root = tmp_path / "audio"
    root.mkdir()
    f = tmp_path / "mmar.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in _mmar_rows()) + "\n")
    ds = datasets.load_dataset(f, audio_root=root)
    assert ds.format == "mmar" and ds.container == "jsonl"
    assert Path(ds.questions[0].audio) == root / "clips" / "speech.wav"
    assert ds.questions[0].group == "Semantic"
    g = tmp_path / "mmar.json"
    g.write_text(json.dumps(_mmar_rows()))
    assert datasets.load_dataset(g).format == "mmar"


def test_own_jsonl_without_answers(tmp_path):
    f = tmp_path / "ours.jsonl"
    f.write_text(json.dumps({"id": "a", "audio": str(EXAMPLES / "birds-10s.wav"), "question": "What?",
                             "choices": ["x", "y"]}) + "\n")
    ds = datasets.load_dataset(f)
    assert ds.format == "jsonl" and not ds.has_answers
    assert ds.questions[0].audio == str(EXAMPLES / "birds-10s.wav")  # absolute paths kept


def test_row_without_choices_is_an_error_row_not_a_crash(tmp_path):
    f = tmp_path / "ours.jsonl"
    rows = [{"id": "ok", "audio": "a.wav", "question": "Q?", "choices": ["x", "y"]},
            {"id": "bad", "audio": "a.wav", "question": "Q?"}]
    f.write_text("\n".join(json.dumps(r) for r in rows))
    ds = datasets.load_dataset(f)
    assert ds.questions[0].error is None
    assert "choices" in ds.questions[1].error and "bad" in ds.questions[1].error


@pytest.mark.parametrize("content, fragment", [
    ("", "empty"),
    ("[{\"id\": 1,", "not valid JSON"),
    ('{"id": "a", "audio": "x.wav", "question": "q", "choices": ["a"]}\nnot json\n', "line 2"),
    ('[{"id": "a", "foo": 1}]', "cannot tell the format"),
    ('[{"id": "a", "audio": "x", "question": "q", "choices": ["a","b"]},'
     ' {"id": "a", "audio": "y", "question": "q", "choices": ["a","b"]}]', "duplicate id"),
])
def test_bad_dataset_files_raise_one_line(tmp_path, content, fragment):
    f = tmp_path / "d.json"
    f.write_text(content)
    with pytest.raises(datasets.DatasetError) as exc:
        datasets.load_dataset(f)
    assert fragment in str(exc.value) and "\n" not in str(exc.value)


def test_missing_dataset_and_unknown_format(tmp_path):
    with pytest.raises(datasets.DatasetError, match="does not exist"):
        datasets.load_dataset(tmp_path / "nope.json")
    f = tmp_path / "d.json"
    f.write_text(json.dumps(_mmau_rows()))
    with pytest.raises(datasets.DatasetError, match="available formats: mmau, mmar, jsonl"):
        datasets.load_dataset(f, fmt="csv")
    assert len(datasets.load_dataset(f, limit=1)) == 1


# ---------------------------------------------------------------------------------------------
# resumable output
# ---------------------------------------------------------------------------------------------

def test_jsonl_appender_keeps_complete_rows_and_drops_a_torn_line(tmp_path):
    p = tmp_path / "out.jsonl"
    with resumable.JsonlAppender(p) as a:
        a.write({"id": "1"})
        a.write({"id": "2"})
    with open(p, "ab") as fh:  # a kill in the middle of a write leaves a partial line
        fh.write(b'{"id": "3", "outc')
    b = resumable.JsonlAppender(p)
    assert [r["id"] for r in b.rows] == ["1", "2"]
    b.write({"id": "3"})
    b.close()
    lines = p.read_text().splitlines()
    assert [json.loads(x)["id"] for x in lines] == ["1", "2", "3"]


def test_jsonl_appender_refuses_a_corrupt_middle_line(tmp_path):
    p = tmp_path / "out.jsonl"
    p.write_text('{"id": "1"}\ngarbage\n{"id": "2"}\n')
    with pytest.raises(pipeline.PipelineError, match="line 2"):
        resumable.JsonlAppender(p)


def test_write_json_atomic_replaces_and_leaves_no_temp(tmp_path):
    p = tmp_path / "pred.json"
    resumable.write_json_atomic(p, [{"a": 1}])
    resumable.write_json_atomic(p, [{"a": 2}])
    assert json.loads(p.read_text()) == [{"a": 2}]
    assert [x.name for x in tmp_path.iterdir()] == ["pred.json"]


def test_failure_guard_stops_after_n_consecutive_timeouts():
    from reasoner.errors import ReasonerTimeout, ReasonerUnavailable

    g = resumable.FailureGuard(3)
    g.ok()
    g.failed(ReasonerTimeout("t1"))
    g.failed(ReasonerTimeout("t2"))
    g.ok()  # a success resets the count
    g.failed(ReasonerTimeout("t3"))
    g.failed(ReasonerTimeout("t4"))
    with pytest.raises(ReasonerUnavailable, match="3 consecutive"):
        g.failed(ReasonerTimeout("t5"))


def test_failure_guard_stops_at_once_when_never_reached():
    from reasoner.errors import ReasonerUnavailable

    g = resumable.FailureGuard(5)
    with pytest.raises(ReasonerUnavailable, match="refused"):
        g.failed(ReasonerUnavailable("connection refused at http://127.0.0.1:9/v1"))


def test_is_correct_normalises_whitespace_and_case():
    assert resumable.is_correct(" Male  voice", "male voice")
    assert not resumable.is_correct(None, "a")
    assert not resumable.is_correct("a", None)


def test_evidence_for_prompt_drops_volatile_fields():
    env = {"tool": "asr", "result": {"text": "hi"}, "elapsed_s": 0.3, "cached": True}
    assert pipeline.evidence_for_prompt(env) == {"tool": "asr", "result": {"text": "hi"}}
    assert pipeline.evidence_for_prompt(None) is None


# ---------------------------------------------------------------------------------------------
# the join: audio check, router <-> tools
# ---------------------------------------------------------------------------------------------

def test_check_audio_rejects_bad_files_before_routing(tmp_path):
    from toolcache.errors import AudioError

    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n" * 20)
    for bad in (tmp_path / "missing.wav", empty, text):
        with pytest.raises(AudioError) as exc:
            pipeline.check_audio(bad)
        assert str(bad.name) in str(exc.value)
    sha = pipeline.check_audio(EXAMPLES / "birds-10s.wav")
    assert len(sha) == 64


class _FakeRouterShape:
    """Only the attributes check_router_tools reads (a router folder is B2's; its check is real)."""

    def __init__(self, actions):
        self.actions = actions
        self.meta = {"direct_action": actions[0]}


def test_router_actions_must_be_toolcache_tools():
    import toolcache

    assert pipeline.check_router_tools(_FakeRouterShape(["direct", "asr"])) == ["asr"]
    with pytest.raises(pipeline.PipelineError) as exc:
        pipeline.check_router_tools(_FakeRouterShape(["direct", "caption"]))
    msg = str(exc.value)
    assert "caption" in msg and "router actions: direct, caption" in msg
    assert all(t in msg for t in toolcache.available_tools())


def test_check_tools_names_valid_choices():
    assert pipeline.check_tools(["asr", " "]) == ["asr"]
    with pytest.raises(pipeline.PipelineError, match="available tools"):
        pipeline.check_tools(["nope"])


def test_reasoner_config_validates_name_and_timeout():
    with pytest.raises(ValueError, match="available reasoners"):
        pipeline.ReasonerConfig(name="gpt9")
    with pytest.raises(ValueError, match="timeout"):
        pipeline.ReasonerConfig(name="openai", timeout_s=0)
    assert pipeline.ReasonerConfig.from_cli(None, "http://h:1/v1", None, None).name == "openai"
    assert not pipeline.ReasonerConfig.from_cli(None, None, None, None).enabled


def test_jsonl_appender_streams_without_holding_rows_and_cuts_a_long_torn_line(tmp_path):
    p = tmp_path / "out.jsonl"
    with resumable.JsonlAppender(p, keep_rows=False) as a:
        first = a.write({"id": "1"})
        second = a.write({"id": "2", "pad": "x" * 100})
        assert a.rows == []  # nothing kept in memory
    with open(p, "ab") as fh:  # a torn row longer than the 64 KiB scan block
        fh.write(b'{"id": "3", "pad": "' + b"y" * 200_000)
    b = resumable.JsonlAppender(p, keep_rows=False)
    assert [(off, r["id"]) for off, r in b.iter_rows()] == [(first, "1"), (second, "2")]
    assert b.read_at(second)["pad"] == "x" * 100
    b.close()
    assert p.read_bytes().endswith(b"}\n") and len(p.read_bytes()) < 1000


def test_json_list_writer_is_atomic_and_read_back_row_by_row(tmp_path):
    p = tmp_path / "pred.json"
    p.write_text('[{"old": true}]')
    w = resumable.JsonListWriter(p)
    w.write({"id": "a"})
    w.write({"id": "b", "text": "line\nbreak"})
    assert json.loads(p.read_text()) == [{"old": True}]  # untouched until commit
    w.commit()
    assert json.loads(p.read_text()) == [{"id": "a"}, {"id": "b", "text": "line\nbreak"}]
    assert [r["id"] for r in resumable.iter_json_list(p)] == ["a", "b"]
    # a list written by another program (indented) is parsed whole
    p.write_text(json.dumps([{"id": "x"}, {"id": "y"}], indent=2))
    assert [r["id"] for r in resumable.iter_json_list(p)] == ["x", "y"]
    assert [x.name for x in tmp_path.iterdir()] == ["pred.json"]
