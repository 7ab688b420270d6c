"""`audiorouter export CKPT [--out OUT]`: training checkpoint -> ONNX router folder (fp32 + int8)."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from cli.errors import friendly_errors


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
    as_json: bool = typer.Option(False, "--json", help="Print router.json as one JSON document."),
) -> None:
    """Export a trained router to ONNX, quantise to int8 and check both against torch."""
    with friendly_errors():
        from textrouter.export import ExportOptions, QuantOptions, export_checkpoint

        options = ExportOptions(int8=int8, fp32=fp32, quant=QuantOptions(method=quant, weight_type=weight_type),
                                check_table=str(check_table) if check_table else None, optimize=optimize)
        if not ckpt.is_dir():
            raise FileNotFoundError(f"checkpoint folder {ckpt} does not exist; train one with "
                                    f"`audiorouter train TABLE --out {ckpt}`")
        from rich.console import Console

        err = Console(stderr=True)
        with err.status("exporting") as status:
            out_dir, doc = export_checkpoint(ckpt, out, options,
                                             progress=lambda msg: status.update(msg))
        if as_json:
            print(json.dumps({"router": str(out_dir), **doc}, indent=2))
            return
        _print_summary(out_dir, doc)


def _print_summary(out_dir: Path, doc: dict) -> None:
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
    print(f"route with: audiorouter route --router {out_dir} ...", file=sys.stderr)
