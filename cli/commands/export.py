"""`audiorouter export CKPT [--out OUT]`: training checkpoint -> ONNX router folder (fp32 + int8).

Progress (one bar step per export stage, elapsed time) goes to stderr; the summary table to
stdout. The summary says which int8 method was kept and why, which router actions are not
runnable toolcache tools (`audiorouter route` refuses such a router) and prints a next command
that works: `route` for a runnable router, otherwise the `train` command that maps columns to
toolcache tools. cli joins the packages: this module may import toolcache, textrouter never does.
"""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Optional

import typer

from cli.errors import friendly_errors
from textrouter.causal_scorer import DEFAULT_SCORE, SCORES  # plain data (no torch)

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_CLIP = REPO / "examples" / "audio" / "speech-two-speakers.wav"  # checkout only (MIT, see its README)
EXAMPLE_QUESTION = "What is the first speaker talking about?"


def register(app: typer.Typer) -> None:
    app.command("export")(export)


def export(
    ckpt: Path = typer.Argument(..., help="Checkpoint folder written by `audiorouter train --out`."),
    out: Optional[Path] = typer.Option(None, "--out", "-o",
                                       help="Router folder to write (default: CKPT/router)."),
    int8: bool = typer.Option(True, "--int8/--no-int8", help="Write model.int8.onnx (dynamic int8)."),
    fp32: bool = typer.Option(True, "--fp32/--no-fp32", help="Keep model.onnx (fp32) in the folder."),
    check_table: Optional[Path] = typer.Option(
        None, "--check-table",
        help="Questions (JSONL table) for the fp32-vs-torch and int8-vs-fp32 checks "
             "(default: the bundled 499-question MMAU-mini dev table)."),
    quant: str = typer.Option("auto", "--quant",
                              help="int8 method: auto (first of dynamic, dynamic-ffn2-fp32, blockwise that "
                                   "keeps >= 99% agreement with fp32), dynamic, dynamic-ffn2-fp32, blockwise."),
    weight_type: str = typer.Option("qint8", "--weight-type", help="dynamic methods: qint8 or quint8 weights."),
    optimize: bool = typer.Option(True, "--optimize/--no-optimize",
                                  help="Fuse the BERT graph (onnxruntime transformer optimizer) before int8."),
    score: Optional[str] = typer.Option(
        None, "--score", help="causal-lm checkpoints only: what each action's log-probability is of; "
                              + "; ".join(f"{k}: {v}" for k, v in SCORES.items()) + f" (default {DEFAULT_SCORE})."),
    as_json: bool = typer.Option(False, "--json", help="Print router.json (+ router, tools, next) as one JSON document."),
) -> None:
    """Export a trained router to ONNX, quantise to int8 and check both against torch."""
    with friendly_errors():
        from textrouter.export import ExportOptions, QuantOptions, export_checkpoint

        options = ExportOptions(int8=int8, fp32=fp32, quant=QuantOptions(method=quant, weight_type=weight_type),
                                check_table=str(check_table) if check_table else None, optimize=optimize)
        if not ckpt.is_dir():
            raise FileNotFoundError(f"checkpoint folder {ckpt} does not exist; train one with "
                                    f"`audiorouter train TABLE --out {ckpt}`")
        if _is_causal(ckpt):   # a generative <tool_call> router (train --encoder causal-lm)
            out_dir, doc = _export_causal(ckpt, out, check_table, int8, score)
        else:
            if score is not None:
                from textrouter.causal_lm import CHECKPOINT_META

                raise ValueError(f"--score applies to causal-lm checkpoints only and {ckpt} is not one (no "
                                 f"{CHECKPOINT_META}); drop --score")
            out_dir, doc = _run_with_progress(ckpt, out, options, export_checkpoint)
        tools = tool_status(doc)
        hint = next_command(out_dir, doc, tools)
        if as_json:
            print(json.dumps({"router": str(out_dir), **doc, "tools": tools, "next": hint}, indent=2))
            return
        _print_summary(out_dir, doc, tools, hint)


def _is_causal(ckpt: Path) -> bool:
    from textrouter.causal_lm import CHECKPOINT_META

    return (ckpt / CHECKPOINT_META).is_file()


def _export_causal(ckpt: Path, out: Optional[Path], check_table: Optional[Path], int8: bool, score: Optional[str]):
    """textrouter.causal_export under a status spinner on stderr: (router folder, router.json dict)."""
    from rich.console import Console

    from textrouter.causal_export import export_checkpoint as export_causal

    console = Console(stderr=True)
    with console.status("exporting the causal-lm router") as status:
        doc = export_causal(ckpt, out, check_table=str(check_table) if check_table else None, int8=int8,
                            say=lambda text: status.update(str(text)), score=score or DEFAULT_SCORE)
    return (out if out is not None else ckpt / "router"), doc


def _run_with_progress(ckpt: Path, out: Optional[Path], options, export_checkpoint):
    """export_checkpoint under a rich progress bar on stderr: one step per stage, elapsed time."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
               TextColumn("{task.completed}/{task.total} stages"), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task("loading checkpoint", total=None)

        def on_stage(msg: str) -> None:
            step, total = getattr(msg, "step", None), getattr(msg, "total", None)
            text = getattr(msg, "text", str(msg))
            if step is None:
                bar.update(task, description=text)
            else:  # stage `step` starts: the ones before it are done
                bar.update(task, description=text, total=total, completed=step - 1)

        result = export_checkpoint(ckpt, out, options, progress=on_stage)
        bar.update(task, description="done", completed=bar.tasks[0].total or 1, total=bar.tasks[0].total or 1)
    return result


def tool_status(doc: dict) -> dict:
    """{"runnable": [...], "not_tools": [...], "toolcache_tools": [...]} for the router's tool actions."""
    from toolcache import available_tools

    tools = available_tools()
    direct = doc.get("direct_action") or doc["actions"][0]
    routed = [a for a in doc["actions"] if a != direct]
    return {"runnable": [a for a in routed if a in tools], "not_tools": [a for a in routed if a not in tools],
            "toolcache_tools": tools}


def next_command(out_dir: Path, doc: dict, tools: dict) -> list[str]:
    """argv of a command that works next: route with this router, or retrain with tool actions."""
    if not tools["not_tools"]:
        clip = EXAMPLE_CLIP if EXAMPLE_CLIP.is_file() else Path("CLIP.wav")
        argv = ["audiorouter", "route", EXAMPLE_QUESTION, "--audio", str(clip), "--router", str(out_dir)]
        if "model.int8.onnx" not in doc["files"]:
            argv += ["--precision", "fp32"]  # route's default precision is int8
        return argv
    mapping = doc.get("column_mapping") or {}
    from textrouter.export import DEV_TABLE
    from textrouter.folder import sha256_file

    info = doc.get("table") or {}
    table = info.get("name") or "TABLE.jsonl"
    if DEV_TABLE.is_file() and info.get("sha256") == sha256_file(DEV_TABLE):
        table = str(DEV_TABLE)  # trained on the bundled table: a path that works from any folder
    argv = ["audiorouter", "train", table, "--direct", mapping.get("direct", "DIRECT_COLUMN")]
    keep = [(a, mapping[a]) for a in tools["runnable"] if a in mapping]
    if not keep:  # no column is mapped to a runnable tool: show the shape with the bundled pair
        keep = [("asr", "whisper_asr_then_gpt4o")]
    for name, column in keep:
        argv += ["--tool", f"{name}={column}"]
    if doc.get("engine", "minilm") != "minilm":
        argv += ["--encoder", str(doc["engine"])]
    return argv + ["--out", "CKPT"]


def _print_summary(out_dir: Path, doc: dict, tools: dict, hint: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    m = doc["metrics"]
    table = Table(title=f"router folder {out_dir}")
    table.add_column("check")
    table.add_column("value", justify="right")
    table.add_column("limit", justify="right")
    n = m["check_table"]["n_questions"]
    table.add_row("actions", ", ".join(doc["actions"]), "")
    table.add_row(f"fp32 ONNX vs torch, max |dp| ({n} q)", f"{m['fp32_vs_torch_max_abs_diff']:.2e}", "< 1e-4")
    if "int8_vs_fp32_agreement" in m:
        table.add_row("int8 vs fp32, same action", f"{m['int8_vs_fp32_agreement']:.1%}", ">= 99%")
        table.add_row("int8 vs fp32, max |dp|", f"{m['int8_vs_fp32_max_abs_diff']:.3f}", "")
        table.add_row("model.int8.onnx", f"{m['int8_bytes'] / 1e6:.1f} MB ({m['quantization']['method']})", "")
    table.add_row("model.onnx", f"{m['fp32_bytes'] / 1e6:.1f} MB" if "model.onnx" in doc["files"]
                  else "not kept", "")
    table.add_row("export time", f"{m['export_seconds']:.1f} s", "")
    Console().print(table)
    say = Console(stderr=True, highlight=False, soft_wrap=True)
    if "quantization" in m:
        say.print(f"int8: {m['quantization'].get('reason', m['quantization']['method'])}", markup=False)
    command = shlex.join(hint)
    if tools["not_tools"]:
        say.print(f"note: action(s) {', '.join(tools['not_tools'])} are not toolcache tools "
                  f"({', '.join(tools['toolcache_tools'])}), so `audiorouter route` and `batch` refuse this "
                  f"router; map each column to a tool name with --tool NAME=COLUMN, e.g. "
                  f"--tool asr=whisper_asr_then_gpt4o", markup=False)
        say.print(f"retrain with: {command}", markup=False)
    else:
        say.print(f"route with: {command}", markup=False)
    sys.stderr.flush()
