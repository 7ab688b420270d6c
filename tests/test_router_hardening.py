"""Router folders that pass the old validation but crashed or misrouted (issue 12 items 1 and 10),
and long inputs that lost their choices (issue 16 item 5). Real bundled routers (int8 ONNX, real
tokenizer), damaged one way each; no mocks."""
from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from textrouter.bundled import BUNDLED_ROUTERS
from textrouter.errors import RouterError, RouterLoadError
from textrouter.folder import (MODEL_FILES, ROUTER_JSON, TOKENIZER_FILE, load_tokenizer, open_session,
                               read_router_json, validate_folder, write_router_json)
from textrouter.runtime import Router, load_router
from textrouter.text import InputFitter, Truncation, format_input

INT8 = MODEL_FILES["int8"]
REPO = Path(__file__).resolve().parent.parent
# ~2000 tokens: the question of issue 16 (its choices vanished behind the 128-token cut)
LONG_Q = ("The recording was made outdoors on a windy afternoon near a busy road, and several "
          "people can be heard in the background while the main speaker explains the plan. ") * 70 \
         + "Which sound is heard right after the speaker stops talking?"


def _copy(tmp_path: Path, name: str) -> Path:
    dst = tmp_path / name
    shutil.copytree(BUNDLED_ROUTERS[name], dst)
    return dst


from test_router_folder import _rehash, _rewrite_meta as _edit_meta  # noqa: E402 - shared folder edits


def _refused(folder: Path, match: str) -> str:
    with pytest.raises(RouterLoadError, match=match) as info:
        load_router(folder, threads=1)
    msg = str(info.value)
    assert "\n" not in msg and len(msg) < 500 and "; " in msg  # one line: <problem>; <fix>
    with pytest.raises(RouterLoadError, match=match):
        validate_folder(folder)  # the validator agrees with the loader
    return msg


def _swap_in_bigger_tokenizer(folder: Path) -> list[str]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
    new = [f"zqxtoken{i}" for i in range(40)]
    tok.add_tokens(new)  # ids 30522.. : past the model's 30522 embedding rows
    (folder / TOKENIZER_FILE).write_text(tok.to_str())
    _rehash(folder)
    return new


# ---------------------------------------------------------------------------------------------
# issue 12 item 1: a folder that loads must not crash at route time


@pytest.mark.parametrize("name", ["default", "fast"])
def test_swapped_tokenizer_is_refused_at_load(tmp_path, name):
    folder = _copy(tmp_path, name)
    _swap_in_bigger_tokenizer(folder)
    msg = _refused(folder, "tokenizer.json has 30562 tokens but model.int8.onnx embeds only 30522")
    assert "copy the router's own tokenizer.json back" in msg


def test_onnxruntime_failure_while_routing_is_a_router_error(tmp_path):
    # Bypass the load checks (a Router built by hand from a swapped tokenizer): the route-time
    # onnxruntime failure itself (QEmbedLayerNormalization index out of range) must be one line.
    folder = _copy(tmp_path, "default")
    new = _swap_in_bigger_tokenizer(folder)
    meta = read_router_json(folder)
    router = Router(folder, meta, open_session(folder / INT8, threads=1), load_tokenizer(folder, 128), "int8")
    for call in (lambda: router.route(f"What does {new[-1]} say?", ["a", "b"]),
                 lambda: router.route_batch([f"Is {new[0]} here?", "plain question?"])):
        with pytest.raises(RouterError, match="onnxruntime failed on this input") as info:
            call()
        assert "\n" not in str(info.value) and "re-export" in str(info.value)


def test_max_length_past_the_position_embeddings_is_refused(tmp_path):
    folder = _copy(tmp_path, "default")
    _edit_meta(folder, max_length=100000)
    msg = _refused(folder, "max_length 100000 exceeds the 512 positions")
    assert "128 by default" in msg


def test_fast_router_has_no_positions_and_routes_a_10k_character_question(tmp_path):
    folder = _copy(tmp_path, "fast")
    _edit_meta(folder, max_length=100000)  # a table look-up: any length works (the probe ran it)
    router = load_router(folder, threads=1)
    out = router.route("x" * 10 + " word" * 2000, ["yes", "no"])
    assert out["action"] in router.actions and out["truncated"] is False


def test_probe_inference_refuses_a_model_with_non_finite_logits(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    folder = _copy(tmp_path, "fast")
    model = onnx.load(str(folder / INT8))
    for init in model.graph.initializer:  # the folded head's bias ([A] linear, [K] mixture) -> NaN
        arr = numpy_helper.to_array(init)
        if arr.dtype == np.float32 and arr.ndim == 1 and arr.size > 1:
            init.CopyFrom(numpy_helper.from_array(np.full_like(arr, np.nan), init.name))
            break
    else:
        pytest.fail("no 1-D float32 bias initializer in the fast router")
    onnx.save(model, str(folder / INT8))
    _rehash(folder)
    _refused(folder, "non-finite or mis-shaped logits")


# ---------------------------------------------------------------------------------------------
# issue 12 item 10: router.json fields checked


@pytest.mark.parametrize("changes, match", [
    ({"actions": ["direct", "chords"]}, r"actions \[.direct., .chords.\] do not match column_mapping"),
    ({"engine": "bert-huge"}, "engine 'bert-huge' is unknown; valid: minilm, minilm-static"),
    ({"format_version": 1.0}, "format_version 1.0"),
    ({"format_version": True}, "format_version True"),
    ({"direct_action": "asr"}, "direct_action 'asr' is not actions"),
    ({"max_length": 128.0}, "max_length must be an integer"),
    ({"truncation": {"policy": "middle-out"}}, "truncation policy must be one of"),
])
def test_router_json_fields_are_validated(tmp_path, changes, match):
    folder = _copy(tmp_path, "default")
    _edit_meta(folder, **changes)
    with pytest.raises(RouterLoadError, match=match):
        read_router_json(folder)
    _refused(folder, match)


def test_legacy_folder_without_new_fields_loads_with_documented_defaults(tmp_path):
    folder = _copy(tmp_path, "fast")
    meta = json.loads((folder / ROUTER_JSON).read_text())
    for key in ("engine", "column_mapping", "truncation"):
        meta.pop(key, None)
    (folder / ROUTER_JSON).write_text(json.dumps(meta))
    router = load_router(folder, threads=1)
    assert router.engine == "minilm" and router.truncation == Truncation()
    # write_router_json refuses to write what would not load
    meta.pop("files")
    with pytest.raises(RouterLoadError, match="direct_action"):
        write_router_json(folder, {**meta, "direct_action": "qwen2_audio_direct"})


# ---------------------------------------------------------------------------------------------
# issue 16 item 5: long inputs keep their choices


@pytest.fixture(scope="module", params=["default", "fast"])
def bundled(request):
    return load_router(request.param, threads=1)


def test_two_choice_sets_on_a_2000_token_question_route_differently(bundled):
    assert len(bundled._fitter._raw.encode(LONG_Q).ids) > 1500
    a = bundled.route(LONG_Q, ["a dog barking", "a car horn", "church bells"])
    b = bundled.route(LONG_Q, ["the speaker laughs", "a door closes", "applause"])
    assert a["truncated"] and b["truncated"]
    assert a["probs"] != b["probs"]
    # the choices and the question's last words are in the router input; its start too
    ids, cut = bundled._fitter.fit(LONG_Q, ["the speaker laughs", "a door closes", "applause"])
    text = bundled._tokenizer.decode(ids)
    assert cut and len(ids) == bundled.max_length
    assert text.startswith("question : the recording was made outdoors")
    assert "right after the speaker stops talking?" in text.replace(" ?", "?")
    assert text.endswith("( a ) the speaker laughs ( b ) a door closes ( c ) applause")
    # batched routing applies the same policy
    batch = bundled.route_batch([(LONG_Q, ["a dog barking", "a car horn", "church bells"]),
                                 (LONG_Q, ["the speaker laughs", "a door closes", "applause"])])
    assert [x["truncated"] for x in batch] == [True, True]
    assert batch[0]["probs"] != batch[1]["probs"]


def test_folder_recording_tail_policy_gets_the_old_cut(tmp_path):
    folder = _copy(tmp_path, "fast")
    _edit_meta(folder, truncation={"policy": "tail-v1", "head_fraction": 0.5})
    _rehash(folder)
    router = load_router(folder, threads=1)
    a = router.route(LONG_Q, ["a dog barking", "a car horn"])
    b = router.route(LONG_Q, ["the speaker laughs", "a door closes"])
    assert a["truncated"] and a["probs"] == b["probs"]  # the runtime applies what the folder records


def test_cutting_words_before_tokenising_changes_nothing(bundled):
    """The pre-cut (max_length words, head + tail) is what makes a 2000-token question cheap; it
    must give exactly the tokens an exact fit of the whole question gives."""

    class NoPrecut(InputFitter):
        def _precut(self, question):
            return question, False

    exact = NoPrecut(bundled._tokenizer, bundled.max_length, bundled.truncation)
    for q in (LONG_Q, "naïve café 这是 " * 400, "one " * 127 + "two", "short?"):
        for choices in (None, ["yes", "no"], ["a much longer choice with many words in it"] * 4):
            got, cut = bundled._fitter.fit(q, choices)
            want, cut2 = exact.fit(q, choices)
            assert got == want and cut == cut2, (q[:30], choices)
            assert len(got) <= bundled.max_length


def test_cut_in_the_token_sequence_equals_tokenising_the_cut_text(bundled):
    """The fitter cuts token ids (one tokenisation); the same words as text give the same ids."""
    words = LONG_Q.split()
    ids, _ = bundled._fitter.fit(LONG_Q, ["yes", "no"])
    raw = bundled._fitter._raw
    full = raw.encode(format_input(LONG_Q, ["yes", "no"])).ids
    same_start = next(i for i, (x, y) in enumerate(zip(ids, full)) if x != y)
    same_end = next(i for i, (x, y) in enumerate(zip(ids[::-1], full[::-1])) if x != y)

    def n_tokens(ws):
        return len(raw.encode(" ".join(ws), add_special_tokens=False).ids)

    # words whose tokens make up the kept head / tail ([CLS] question : | ... | choices ... [SEP])
    h = next(k for k in range(1, 200) if n_tokens(words[:k]) >= same_start - 3)
    t = next(k for k in range(1, 200) if n_tokens(words[-k:]) >= same_end - len(raw.encode(
        "\nChoices: (A) yes (B) no", add_special_tokens=False).ids) - 1)
    cut_text = format_input(" ".join(words[:h] + words[-t:]), ["yes", "no"])
    assert raw.encode(cut_text).ids == ids


def test_training_features_use_the_same_fitted_input():
    from tokenizers import Tokenizer

    from textrouter.text import encode_fitted

    tok = Tokenizer.from_file(str(BUNDLED_ROUTERS["fast"] / TOKENIZER_FILE))
    tok.enable_truncation(max_length=128)
    router = load_router("fast", threads=1)
    texts = [format_input(LONG_Q, ["x", "y"]), format_input("short one?", ["x", "y"]), "no template"]
    ids, mask, truncated = encode_fitted(tok, texts, 128)
    assert truncated.tolist() == [True, False, False]
    for i, t in enumerate(texts[:2]):
        tokens, _ = router._fitter.fit_text(t)
        assert ids[i, :mask[i].sum()].tolist() == tokens


# ---------------------------------------------------------------------------------------------
# item 7: folder and runtime do not import each other


def _textrouter_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level == 1:
                mod = "textrouter." + mod
            if mod.startswith("textrouter."):
                names.add(mod.split(".")[1])
        elif isinstance(node, ast.Import):
            names.update(a.name.split(".")[1] for a in node.names if a.name.startswith("textrouter."))
    return names


def test_runtime_side_modules_form_no_import_cycle():
    core = ("folder", "runtime", "bundled", "text", "onnx_graph", "errors")
    graph = {m: _textrouter_imports(REPO / "textrouter" / f"{m}.py") & set(core) for m in core}
    assert "runtime" not in graph["folder"]

    def reaches(src, dst, seen=()):
        return any(n == dst or (n not in seen and reaches(n, dst, (*seen, n))) for n in graph[src])

    assert not [m for m in core if reaches(m, m)], graph
