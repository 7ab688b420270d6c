"""The router folder: `router.json` (metadata + file hashes), `tokenizer.json`, ONNX model(s).

A router folder is what `audiorouter export` writes and what `textrouter.load_router` reads:

```
router.json        metadata below; written LAST (atomically), so a folder is complete or invalid
tokenizer.json     the encoder's fast tokenizer, truncation = max_length, dynamic padding
model.onnx         fp32: input_ids, attention_mask int64 [batch, seq] -> logits float32 [batch, A]
                   (by default with onnxruntime's fused BERT contrib ops: onnxruntime-only)
model.int8.onnx    dynamic int8 quantisation of model.onnx (the default router ships only this)
```

`router.json` fields: format_version, package_version, actions (action 0 = "direct"),
direct_action, column_mapping, encoder, max_length, input_template, reward, table {sha256, name,
n_rows}, metrics (export checks), created (UTC ISO 8601), files {name: sha256}.

This module imports only the standard library at import time; `validate_folder` imports
tokenizers / onnxruntime lazily (never torch).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

from textrouter.errors import RouterLoadError

FORMAT_VERSION = 1
SUPPORTED_FORMAT_VERSIONS = (1,)
ROUTER_JSON = "router.json"
TOKENIZER_FILE = "tokenizer.json"
MODEL_FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx"}  # precision -> file name
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "logits"
INPUT_TEMPLATE = "question-choices-v1"  # textrouter.text.format_input
REQUIRED_KEYS = ("format_version", "actions", "direct_action", "max_length", "files")

_FIX_EXPORT = "re-export it with `audiorouter export CHECKPOINT_DIR`"


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def utc_now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file in the same folder + os.replace: readers never see half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; router files are meant to be shared/read
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def package_version() -> str:
    try:
        from importlib.metadata import version

        return version("audiorouter")
    except Exception:  # not installed (running from a source tree)
        return "0+unknown"


def write_router_json(folder: str | os.PathLike, meta: Mapping[str, Any],
                      files: Iterable[str] | None = None) -> dict:
    """Write `folder/router.json` from `meta`, hashing the router files present in `folder`.

    `files` defaults to every known router file that exists (tokenizer + ONNX models). Fields
    missing from `meta` get defaults (format_version, package_version, created, input_template).
    Returns the dict written.
    """
    folder = Path(folder)
    if files is None:
        files = [n for n in (TOKENIZER_FILE, *MODEL_FILES.values()) if (folder / n).is_file()]
    doc = dict(meta)
    doc.setdefault("format_version", FORMAT_VERSION)
    doc.setdefault("package_version", package_version())
    doc.setdefault("input_template", INPUT_TEMPLATE)
    doc.setdefault("created", utc_now_iso())
    actions = list(doc.get("actions") or [])
    if not actions or actions[0] != "direct":
        raise ValueError(f"actions must start with 'direct' (got {actions}); put the direct action first")
    doc.setdefault("direct_action", "direct")
    doc["files"] = {name: sha256_file(folder / name) for name in sorted(files)}
    atomic_write_text(folder / ROUTER_JSON, json.dumps(doc, indent=2, sort_keys=False) + "\n")
    return doc


def read_router_json(folder: str | os.PathLike) -> dict:
    """Parse and structurally check `folder/router.json` (no file hashing)."""
    folder = Path(folder)
    if not folder.exists():
        from textrouter.runtime import available_routers  # the registry lives with the runtime

        raise RouterLoadError(f"router folder {folder} does not exist; pass a folder written by "
                              f"`audiorouter export` or a bundled router name ({', '.join(available_routers())})")
    if not folder.is_dir():
        raise RouterLoadError(f"{folder} is a file, not a router folder; pass the folder that holds router.json")
    path = folder / ROUTER_JSON
    if not path.is_file():
        hint = ""
        if (folder / "router" / ROUTER_JSON).is_file():
            hint = f" ({folder / 'router'} holds one: export writes there, pass that folder)"
        raise RouterLoadError(f"{folder} has no {ROUTER_JSON}{hint}; pass a router folder or {_FIX_EXPORT}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RouterLoadError(f"{path} is not valid JSON ({exc}); {_FIX_EXPORT}") from None
    if not isinstance(doc, dict):
        raise RouterLoadError(f"{path} must hold a JSON object; {_FIX_EXPORT}")
    missing = [k for k in REQUIRED_KEYS if k not in doc]
    if missing:
        raise RouterLoadError(f"{path} lacks {', '.join(missing)}; {_FIX_EXPORT}")
    version = doc["format_version"]
    if version not in SUPPORTED_FORMAT_VERSIONS:
        raise RouterLoadError(
            f"{path} has format_version {version!r} but this audiorouter reads "
            f"{list(SUPPORTED_FORMAT_VERSIONS)}; upgrade audiorouter or {_FIX_EXPORT}")
    actions = doc["actions"]
    if (not isinstance(actions, list) or not actions or actions[0] != "direct"
            or not all(isinstance(a, str) and a for a in actions) or len(set(actions)) != len(actions)):
        raise RouterLoadError(f"{path}: actions must be a list of unique names starting with 'direct' "
                              f"(got {actions!r}); {_FIX_EXPORT}")
    if not isinstance(doc["files"], dict):
        raise RouterLoadError(f"{path}: files must map file name -> sha256; {_FIX_EXPORT}")
    if not isinstance(doc["max_length"], int) or doc["max_length"] < 8:
        raise RouterLoadError(f"{path}: max_length must be an integer >= 8 (got {doc['max_length']!r}); "
                              f"{_FIX_EXPORT}")
    return doc


def model_file(meta: Mapping[str, Any], precision: str) -> str:
    """File name of the ONNX model for `precision`, checking the folder lists it."""
    if precision not in MODEL_FILES:
        raise ValueError(f"precision must be one of {sorted(MODEL_FILES)} (got {precision!r})")
    name = MODEL_FILES[precision]
    if name not in meta["files"]:
        have = [p for p, n in MODEL_FILES.items() if n in meta["files"]]
        raise RouterLoadError(f"this router folder has no {precision} model ({name}); use precision="
                              f"{have[0]!r} or re-export with `audiorouter export` (--int8 for int8)"
                              if have else f"this router folder lists no ONNX model; {_FIX_EXPORT}")
    return name


def check_hashes(folder: Path, meta: Mapping[str, Any], names: Iterable[str]) -> None:
    """Each named file exists and matches its sha256 in router.json."""
    for name in names:
        path = folder / name
        expected = meta["files"].get(name)
        if expected is None:
            raise RouterLoadError(f"{folder / ROUTER_JSON} does not list {name}; {_FIX_EXPORT}")
        if not path.is_file():
            raise RouterLoadError(f"{path} is missing; copy the whole router folder or {_FIX_EXPORT}")
        actual = sha256_file(path)
        if actual != expected:
            raise RouterLoadError(f"{path} sha256 {actual[:12]}... differs from router.json "
                                  f"({str(expected)[:12]}...): the file was changed or truncated; "
                                  f"copy it again or {_FIX_EXPORT}")


def check_expectations(meta: Mapping[str, Any], expected_table_sha256: str | None = None,
                       expected_actions: Iterable[str] | None = None, where: str = "router") -> None:
    """Optional guards: the router was trained on this table / routes over these actions."""
    if expected_table_sha256 is not None:
        actual = (meta.get("table") or {}).get("sha256")
        if actual != expected_table_sha256:
            raise RouterLoadError(
                f"{where} was trained on table sha256 {str(actual)[:12]}... not the expected "
                f"{expected_table_sha256[:12]}...; use the router trained on that table or retrain "
                "with `audiorouter train TABLE` + `audiorouter export`")
    if expected_actions is not None:
        expected = list(expected_actions)
        if list(meta["actions"]) != expected:
            raise RouterLoadError(f"{where} routes over actions {meta['actions']} but {expected} were "
                                  "expected; pick a router trained with that column mapping or retrain")


def load_tokenizer(folder: Path, max_length: int):
    """The folder's tokenizers.Tokenizer with truncation at max_length and dynamic padding."""
    from tokenizers import Tokenizer

    path = folder / TOKENIZER_FILE
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception on a corrupt file
        raise RouterLoadError(f"{path} is not a valid tokenizers file ({str(exc).splitlines()[0][:80]}); "
                              f"{_FIX_EXPORT}") from None
    tok.enable_truncation(max_length=max_length)
    pad_id = tok.token_to_id("[PAD]")
    tok.enable_padding(pad_id=0 if pad_id is None else pad_id, pad_token="[PAD]")  # to longest in batch
    return tok


def check_session(session, meta: Mapping[str, Any], path: Path) -> None:
    """An onnxruntime session has our input names and an output of width len(actions)."""
    names = [i.name for i in session.get_inputs()]
    if sorted(names) != sorted(INPUT_NAMES):
        raise RouterLoadError(f"{path} takes inputs {names}, not {list(INPUT_NAMES)}: it is not an "
                              f"audiorouter router model; {_FIX_EXPORT}")
    for inp in session.get_inputs():
        if inp.type != "tensor(int64)":
            raise RouterLoadError(f"{path} input {inp.name} is {inp.type}, expected tensor(int64); {_FIX_EXPORT}")
    outputs = session.get_outputs()
    if len(outputs) != 1 or len(outputs[0].shape) != 2:
        raise RouterLoadError(f"{path} must have one [batch, actions] output; {_FIX_EXPORT}")
    width = outputs[0].shape[1]
    if width != len(meta["actions"]):
        raise RouterLoadError(f"{path} outputs {width} logits but router.json lists "
                              f"{len(meta['actions'])} actions {meta['actions']}; the model and "
                              f"router.json belong to different routers: {_FIX_EXPORT}")


def open_session(path: Path, threads: int | None = None):
    """onnxruntime CPU session with full graph optimisation; RouterLoadError if not ONNX."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if threads is not None:
        if int(threads) < 1:
            raise ValueError(f"threads must be >= 1 (got {threads})")
        opts.intra_op_num_threads = int(threads)  # 0 would mean "all cores"
    opts.inter_op_num_threads = 1
    # idle intra-op threads sleep instead of spinning: the router shares the CPU with audio tools
    # and the reasoner (with 1 thread there is no pool, so single-question latency is unaffected)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3  # errors only: no optimiser chatter on stderr
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        text = str(exc).replace(str(path), "<file>")  # the path is already named once below
        first = " ".join(text.split())[:160] if text.strip() else type(exc).__name__
        raise RouterLoadError(f"{path} is not a loadable ONNX model ({first}); {_FIX_EXPORT}") from None


def validate_folder(folder: str | os.PathLike, precision: str | None = None,
                    expected_table_sha256: str | None = None,
                    expected_actions: Iterable[str] | None = None,
                    check_onnx: bool = True) -> dict:
    """Check a router folder completely; return its router.json dict or raise RouterLoadError.

    precision None checks every model listed; otherwise only that one (and it must exist).
    check_onnx False skips opening the ONNX sessions (the runtime checks its own session).
    """
    folder = Path(folder)
    meta = read_router_json(folder)
    check_expectations(meta, expected_table_sha256, expected_actions, where=str(folder))
    if precision is None:
        precisions = [p for p, n in MODEL_FILES.items() if n in meta["files"]]
        if not precisions:
            raise RouterLoadError(f"{folder / ROUTER_JSON} lists no ONNX model; {_FIX_EXPORT}")
    else:
        precisions = [precision]
    models = [model_file(meta, p) for p in precisions]
    check_hashes(folder, meta, [TOKENIZER_FILE, *models])
    load_tokenizer(folder, meta["max_length"])
    if check_onnx:
        for name in models:
            check_session(open_session(folder / name, threads=1), meta, folder / name)
    return meta
