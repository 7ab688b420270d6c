"""Outcome tables: the bundled real table loads; every malformed input is a one-line TableError."""
from __future__ import annotations

import json

import numpy as np
import pytest

from textrouter.errors import TableError
from textrouter.table import (BUNDLED_TABLE, DEFAULT_MAPPING, ActionMapping, load_table, outcome_matrix,
                              table_sha256, texts)

ROW = {"id": "a", "question": "What is said?", "choices": ["yes", "no"], "answer": "yes",
       "outcomes": {"d": 1, "t": 0}, "task": "speech"}


def write(tmp_path, rows, name="t.jsonl"):
    p = tmp_path / name
    p.write_text("\n".join(r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in rows) + "\n",
                 encoding="utf-8")
    return p


def row(**kw):
    return {**ROW, **kw}


def test_bundled_table_matches_its_readme():
    t = load_table(BUNDLED_TABLE, DEFAULT_MAPPING)
    assert len(t) == 499 and len(t.columns) == 8
    o = outcome_matrix(t, DEFAULT_MAPPING)
    assert o.shape == (499, 3)
    # accuracies listed in data/README.md: qwen2 direct 54.5, whisper asr 49.7, qwen2 caption 55.9
    assert np.round(100 * o.mean(0), 1).tolist() == [54.5, 49.7, 55.9]
    assert sorted({r.task for r in t.rows}) == ["music", "sound", "speech"]
    assert t.sha256 == table_sha256(BUNDLED_TABLE)
    # router input never carries metadata
    assert all("music" not in x.split("\n")[0] or "music" in r.question.lower() for x, r in zip(texts(t), t.rows))


def test_json_list_and_non_ascii(tmp_path):
    p = tmp_path / "t.json"
    p.write_text(json.dumps([row(question="Quelle est la langue parlée ? 日本語?"), row(id="b")]), encoding="utf-8")
    t = load_table(p, ActionMapping("d", {"asr": "t"}))
    assert len(t) == 2 and "日本語" in texts(t)[0]


@pytest.mark.parametrize("rows, fragment", [
    (["{not json"], ":1: bad JSON"),
    ([row(), row(question="  ")], ":2: missing or empty 'question'"),
    ([row(), {k: v for k, v in ROW.items() if k != "outcomes"} | {"id": "b"}], ":2: missing 'outcomes'"),
    ([row(outcomes={"d": 2, "t": 0})], "outcome 'd' is 2, not 0 or 1"),
    ([row(outcomes={"d": True, "t": 0})], "not 0 or 1"),
    ([row(), row()], ":2: duplicate id 'a'"),
    ([row(), row(id="b", outcomes={"d": 1})], ":2: missing outcome for mapped column 't'"),
])
def test_malformed_tables_are_one_line_errors(tmp_path, rows, fragment):
    p = write(tmp_path, rows)
    with pytest.raises(TableError) as exc:
        load_table(p, ActionMapping("d", {"asr": "t"}))
    msg = str(exc.value)
    assert fragment in msg and "\n" not in msg and str(p) in msg


def test_missing_file_and_unknown_column(tmp_path):
    with pytest.raises(TableError, match="not found"):
        load_table(tmp_path / "nope.jsonl")
    p = write(tmp_path, [row()])
    with pytest.raises(TableError, match=r"unknown outcome column 'whisper'.*columns are: d, t"):
        load_table(p, ActionMapping("d", {"asr": "whisper"}))


def test_mapping_parse_and_validation():
    m = ActionMapping.parse("qwen2_audio_direct", ["asr=whisper_asr_then_gpt4o", "caption = qwen2_caption_then_gpt4o"])
    assert m.actions == ["direct", "asr", "caption"]
    assert m.columns == ["qwen2_audio_direct", "whisper_asr_then_gpt4o", "qwen2_caption_then_gpt4o"]
    with pytest.raises(ValueError, match="NAME=COLUMN"):
        ActionMapping.parse("d", ["asr"])
    with pytest.raises(ValueError, match="twice"):
        ActionMapping.parse("d", ["asr=t", "asr=u"])
    with pytest.raises(ValueError, match="not 'direct'"):
        ActionMapping.parse("d", ["direct=t"])
    with pytest.raises(ValueError, match="--tool"):
        ActionMapping("d", {})
