"""Router folder validation: every broken folder is refused with a one-line RouterLoadError.

Uses copies of the bundled default router (real int8 ONNX + real tokenizer), damaged one way each.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from textrouter.errors import RouterError, RouterLoadError
from textrouter.folder import (MODEL_FILES, ROUTER_JSON, TOKENIZER_FILE, read_router_json,
                               sha256_file, validate_folder, write_router_json)
from textrouter.runtime import DEFAULT_ROUTER_DIR, load_router

INT8 = MODEL_FILES["int8"]


@pytest.fixture
def router_copy(tmp_path) -> Path:
    dst = tmp_path / "router"
    shutil.copytree(DEFAULT_ROUTER_DIR, dst)
    return dst


def _rewrite_meta(folder: Path, **changes) -> None:
    meta = json.loads((folder / ROUTER_JSON).read_text())
    meta.update(changes)
    (folder / ROUTER_JSON).write_text(json.dumps(meta))


def _rehash(folder: Path) -> None:
    """Simulate someone regenerating router.json after swapping a file (hashes match again)."""
    meta = json.loads((folder / ROUTER_JSON).read_text())
    names = list(meta.pop("files"))
    write_router_json(folder, meta, files=names)


def _assert_one_line_refusal(folder, match: str, **kwargs) -> str:
    with pytest.raises(RouterLoadError, match=match) as info:
        load_router(folder, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg and len(msg) < 400
    return msg


def test_default_router_folder_is_valid_and_int8_only():
    meta = validate_folder(DEFAULT_ROUTER_DIR)
    assert meta["actions"][0] == "direct" and "asr" in meta["actions"]
    assert set(meta["files"]) == {TOKENIZER_FILE, INT8}
    for name, digest in meta["files"].items():
        assert sha256_file(DEFAULT_ROUTER_DIR / name) == digest
    m = meta["metrics"]
    assert m["fp32_vs_torch_max_abs_diff"] < 1e-4
    assert m["int8_vs_fp32_agreement"] >= 0.99
    assert m["check_table"]["n_questions"] == 499
    assert len(meta["table"]["sha256"]) == 64
    assert meta["column_mapping"]


def test_missing_folder_and_missing_router_json(tmp_path, router_copy):
    _assert_one_line_refusal(tmp_path / "nope", "does not exist")
    (router_copy / ROUTER_JSON).unlink()
    _assert_one_line_refusal(router_copy, "has no router.json")
    # a checkpoint folder with router/ inside: the message names the folder to pass
    ckpt = router_copy.parent / "ckpt"
    shutil.copytree(DEFAULT_ROUTER_DIR, ckpt / "router")
    msg = _assert_one_line_refusal(ckpt, "has no router.json")
    assert str(ckpt / "router") in msg


def test_corrupt_json_and_unsupported_format(router_copy):
    (router_copy / ROUTER_JSON).write_text('{"format_version": 1, "actions": [')
    _assert_one_line_refusal(router_copy, "not valid JSON")
    shutil.copyfile(DEFAULT_ROUTER_DIR / ROUTER_JSON, router_copy / ROUTER_JSON)
    _rewrite_meta(router_copy, format_version=99)
    msg = _assert_one_line_refusal(router_copy, "format_version 99")
    assert "upgrade audiorouter" in msg


def test_changed_file_fails_the_hash(router_copy):
    middle = (router_copy / INT8).stat().st_size // 2
    with open(router_copy / INT8, "r+b") as fh:  # flip one byte in the middle of the weights
        fh.seek(middle)
        b = fh.read(1)
        fh.seek(middle)
        fh.write(bytes([b[0] ^ 0xFF]))
    _assert_one_line_refusal(router_copy, "sha256 .* differs")
    (router_copy / TOKENIZER_FILE).unlink()
    _assert_one_line_refusal(router_copy, "tokenizer.json is missing")


def test_corrupt_tokenizer(router_copy):
    (router_copy / TOKENIZER_FILE).write_text('{"model": "nothing useful"}')
    _rehash(router_copy)
    _assert_one_line_refusal(router_copy, "not a valid tokenizers file")


def test_output_width_must_match_actions(router_copy):
    mapping = {"direct": "qwen2_audio_direct", "asr": "whisper_asr_then_gpt4o", "chords": "some_column"}
    _rewrite_meta(router_copy, actions=["direct", "asr", "chords"], column_mapping=mapping)
    msg = _assert_one_line_refusal(router_copy, "outputs 2 logits but router.json lists 3 actions")
    assert "audiorouter export" in msg


def test_not_onnx_and_foreign_onnx(router_copy):
    (router_copy / INT8).write_bytes(b"this is not a protobuf" * 100)
    _rehash(router_copy)
    _assert_one_line_refusal(router_copy, "not a loadable ONNX model")

    # a real, valid ONNX model that is not a router: one float input "x" -> Identity
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "foreign",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # an IR version every onnxruntime >= 1.14 reads
    onnx.save(model, str(router_copy / INT8))
    _rehash(router_copy)
    _assert_one_line_refusal(router_copy, r"takes inputs \['x'\]")


def test_expected_table_and_actions(router_copy):
    meta = read_router_json(router_copy)
    load_router(router_copy, expected_table_sha256=meta["table"]["sha256"], expected_actions=meta["actions"])
    _assert_one_line_refusal(router_copy, "trained on table sha256", expected_table_sha256="0" * 64)
    _assert_one_line_refusal(router_copy, "routes over actions", expected_actions=["direct", "chords"])


def test_missing_precision_names_the_one_available():
    msg = _assert_one_line_refusal(DEFAULT_ROUTER_DIR, "no fp32 model", precision="fp32")
    assert "'int8'" in msg
    with pytest.raises(ValueError, match="precision must be one of"):
        load_router(DEFAULT_ROUTER_DIR, precision="fp16")


def test_write_router_json_is_atomic_and_requires_direct_first(tmp_path, router_copy):
    with pytest.raises(ValueError, match="start with 'direct'"):
        write_router_json(router_copy, {"actions": ["asr", "direct"], "max_length": 128})
    meta = read_router_json(router_copy)
    before = (router_copy / ROUTER_JSON).read_text()
    meta.pop("files")
    doc = write_router_json(router_copy, meta)
    assert set(doc["files"]) == {TOKENIZER_FILE, INT8}
    assert json.loads((router_copy / ROUTER_JSON).read_text())["files"] == json.loads(before)["files"]
    assert not list(router_copy.glob(".*.tmp"))  # no temp files left behind
    assert isinstance(RouterLoadError("x"), RouterError)
