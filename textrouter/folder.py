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
direct_action, column_mapping, encoder, engine, max_length, input_template, truncation, reward,
table {sha256, name, n_rows}, metrics (export checks), created (UTC ISO 8601), files {name: sha256}.

What `read_router_json` refuses (one line each, `<problem>; <fix>`): format_version that is not
the integer 1 (1.0 and true are refused), actions that are not unique names starting with
"direct", direct_action other than actions[0], a non-empty column_mapping whose keys are not the
actions (a relabelled action would route with another action's probabilities), an engine
not in textrouter.encoders.available_encoders(), a malformed truncation. Legacy defaults for
fields a format 1 folder may lack: engine "minilm", direct_action actions[0], column_mapping {}
(not checked), truncation the default policy of textrouter.text (identical input whenever it fits).

What loading checks against the model (`check_model_limits`, `probe_session`): the tokenizer's
vocabulary fits the model's word-embedding rows, max_length fits its position embeddings (both
read from the ONNX graph by textrouter.onnx_graph), and one probe inference of max_length tokens
that include the highest token id runs and gives finite logits. So a folder that loads does not
crash onnxruntime at route time.

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
    doc.setdefault("truncation", truncation_of(doc).to_dict())
    doc["files"] = {name: sha256_file(folder / name) for name in sorted(files)}
    check_meta(doc, folder / ROUTER_JSON)  # never write a folder that would not load
    atomic_write_text(folder / ROUTER_JSON, json.dumps(doc, indent=2, sort_keys=False) + "\n")
    return doc


def read_router_json(folder: str | os.PathLike) -> dict:
    """Parse and structurally check `folder/router.json` (no file hashing)."""
    folder = Path(folder)
    if not folder.exists():
        from textrouter.bundled import available_routers

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
    check_meta(doc, path)
    return doc


def check_meta(doc: Mapping[str, Any], path: Path | str = ROUTER_JSON) -> None:
    """Field-level checks of a router.json dict (see the module docstring); RouterLoadError."""
    version = doc["format_version"]
    # bool is an int subclass and 1.0 == 1: only the integer itself is a version
    if type(version) is not int or version not in SUPPORTED_FORMAT_VERSIONS:
        raise RouterLoadError(
            f"{path} has format_version {version!r} but this audiorouter reads the integer(s) "
            f"{list(SUPPORTED_FORMAT_VERSIONS)}; upgrade audiorouter or {_FIX_EXPORT}")
    actions = doc["actions"]
    if (not isinstance(actions, list) or not actions or actions[0] != "direct"
            or not all(isinstance(a, str) and a for a in actions) or len(set(actions)) != len(actions)):
        raise RouterLoadError(f"{path}: actions must be a list of unique names starting with 'direct' "
                              f"(got {actions!r}); {_FIX_EXPORT}")
    if doc["direct_action"] != actions[0]:
        raise RouterLoadError(f"{path}: direct_action {doc['direct_action']!r} is not actions[0] "
                              f"{actions[0]!r} (logit 0 is the direct action); set it to {actions[0]!r} or "
                              f"{_FIX_EXPORT}")
    mapping = doc.get("column_mapping")
    if mapping is not None:
        if not isinstance(mapping, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                    for k, v in mapping.items()):
            raise RouterLoadError(f"{path}: column_mapping must map action -> outcome column; {_FIX_EXPORT}")
        # as sets: checkpoints store the mapping with sorted keys, the order is not the logits'
        if mapping and set(mapping) != set(actions):
            raise RouterLoadError(
                f"{path}: actions {actions} do not match column_mapping {sorted(mapping)} (the model's "
                f"logits follow the training mapping, so a renamed action would route with another "
                f"action's probabilities); restore the actions the router was trained with or retrain "
                f"with `audiorouter train --tool NAME=COLUMN`")
    if "engine" in doc:
        from textrouter.encoders import available_encoders

        if doc["engine"] not in available_encoders():
            raise RouterLoadError(f"{path}: engine {doc['engine']!r} is unknown; valid: "
                                  f"{', '.join(available_encoders())} (upgrade audiorouter or {_FIX_EXPORT})")
    if not isinstance(doc["files"], dict):
        raise RouterLoadError(f"{path}: files must map file name -> sha256; {_FIX_EXPORT}")
    if type(doc["max_length"]) is not int or doc["max_length"] < 8:
        raise RouterLoadError(f"{path}: max_length must be an integer >= 8 (got {doc['max_length']!r}); "
                              f"{_FIX_EXPORT}")
    try:
        truncation_of(doc)
    except ValueError as exc:
        raise RouterLoadError(f"{path}: {exc}; {_FIX_EXPORT}") from None
    if doc.get("decision") is not None:  # textrouter.decision: the fitted margin / tool budget
        from textrouter.decision import DecisionRule

        try:
            DecisionRule.from_dict(doc["decision"], actions)
        except ValueError as exc:
            raise RouterLoadError(f"{path}: decision {exc}; retrain with `audiorouter train` or {_FIX_EXPORT}") from None


def truncation_of(meta: Mapping[str, Any]):
    """The folder's textrouter.text.Truncation (field absent: the documented default)."""
    from textrouter.text import Truncation

    return Truncation.from_meta(meta.get("truncation"))


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


def check_model_limits(path: Path, meta: Mapping[str, Any], tokenizer) -> dict:
    """The tokenizer's ids and max_length fit the model's embedding tables (read from the graph).

    Returns {"vocab_rows", "positions"} (None where the graph has no such table)."""
    from textrouter.onnx_graph import OnnxParseError, embedding_limits, read_graph

    try:
        rows, positions = embedding_limits(read_graph(path))
    except (OnnxParseError, OSError) as exc:
        raise RouterLoadError(f"{path} is not a readable ONNX model ({exc}); {_FIX_EXPORT}") from None
    vocab = tokenizer.get_vocab_size(with_added_tokens=True)
    if rows is not None and vocab > rows:
        raise RouterLoadError(
            f"{path.parent / TOKENIZER_FILE} has {vocab} tokens but {path.name} embeds only {rows}: "
            f"the tokenizer belongs to another model; copy the router's own tokenizer.json back or "
            f"{_FIX_EXPORT}")
    max_length = int(meta["max_length"])
    if positions is not None and max_length > positions:
        raise RouterLoadError(
            f"{path.parent / ROUTER_JSON}: max_length {max_length} exceeds the {positions} positions "
            f"{path.name} was built for; set max_length back to the trained value (<= {positions}; "
            f"export writes it, 128 by default) or {_FIX_EXPORT}")
    return {"vocab_rows": rows, "positions": positions}


PROBE_MAX_TOKENS = 4096  # probe length cap when the graph names no position table (minilm-static)


def probe_session(session, meta: Mapping[str, Any], tokenizer, path: Path, limits: Mapping[str, Any]) -> None:
    """One inference of the longest input the router will see, holding the highest token id.

    Catches what the graph checks cannot name (any onnxruntime failure on a real-size input) and
    a model whose logits are not finite (e.g. exported from diverged weights). ~1 ms on the fast
    router, ~25 ms on the default one (128 tokens, 1 thread)."""
    import numpy as np

    vocab = tokenizer.get_vocab_size(with_added_tokens=True)
    length = int(meta["max_length"])
    if limits.get("positions") is None:
        length = min(length, PROBE_MAX_TOKENS)
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    ids = np.resize(np.array([1996, 2003, vocab - 1], dtype=np.int64) % max(vocab, 1), length)
    ids[0] = cls if cls is not None else ids[0]
    ids[-1] = sep if sep is not None else ids[-1]
    feed = {"input_ids": ids[None, :], "attention_mask": np.ones((1, length), dtype=np.int64)}
    try:
        (logits,) = session.run(None, feed)
    except Exception as exc:  # onnxruntime raises its own exception classes (InvalidArgument, Fail, ...)
        raise RouterLoadError(f"{path} fails on a {length}-token probe input ({ort_message(exc)}); "
                              f"the model, tokenizer.json and router.json max_length do not belong together: "
                              f"{_FIX_EXPORT}") from None
    if logits.shape != (1, len(meta["actions"])) or not np.isfinite(logits).all():
        raise RouterLoadError(f"{path} gives non-finite or mis-shaped logits {logits.shape} on a probe input: "
                              f"the model is broken (diverged weights?); retrain, then {_FIX_EXPORT}")


def ort_message(exc: BaseException, path: Path | None = None) -> str:
    """onnxruntime's error text on one short line (its messages span lines and repeat the path)."""
    text = str(exc)
    if path is not None:
        text = text.replace(str(path), "<file>")
    first = " ".join(text.split())
    return (first[:160] + "...") if len(first) > 160 else (first or type(exc).__name__)


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
    # fatal only: no optimiser chatter, and a failing run (turned into RouterError by the caller)
    # does not also print onnxruntime's own red log line on stderr
    opts.log_severity_level = 4
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise RouterLoadError(f"{path} is not a loadable ONNX model ({ort_message(exc, path)}); "
                              f"{_FIX_EXPORT}") from None


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
    tokenizer = load_tokenizer(folder, meta["max_length"])
    for name in models:
        session = None
        if check_onnx:  # onnxruntime first: it names a file that is not ONNX at all best
            session = open_session(folder / name, threads=1)
            check_session(session, meta, folder / name)
        limits = check_model_limits(folder / name, meta, tokenizer)
        if session is not None:
            probe_session(session, meta, tokenizer, folder / name, limits)
    return meta


def load_checked(folder: Path, meta: Mapping[str, Any], precision: str, threads: int | None = None):
    """(tokenizer, session) of a router folder after every load check: hashes, tokenizer, model
    signature, vocabulary / positions against the graph, one probe inference."""
    name = model_file(meta, precision)
    check_hashes(folder, meta, [TOKENIZER_FILE, name])
    tokenizer = load_tokenizer(folder, int(meta["max_length"]))
    session = open_session(folder / name, threads=threads)
    check_session(session, meta, folder / name)
    limits = check_model_limits(folder / name, meta, tokenizer)
    probe_session(session, meta, tokenizer, folder / name, limits)
    return tokenizer, session
