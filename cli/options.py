"""CLI options shared by `route`, `collect` and `batch` (one definition, one help text).

typer reads an option's declaration from the parameter default, so one `typer.Option(...)` object
can serve several commands. Help texts list valid names from the registries.
"""
from __future__ import annotations

import typer

from cli.datasets import available_formats
from reasoner import available_reasoners  # light: the back-ends import lazily
from reasoner.options import AUDIO_PARTS, ENV_URL
from textrouter.runtime import available_routers  # light: onnxruntime/tokenizers load in load_router

REASONER_HELP = (f"Reasoner back-end: {', '.join(available_reasoners())} (--reasoner-url or ${ENV_URL} "
                 "alone means openai).")
FORMAT_HELP = f"Dataset format: {', '.join(available_formats())} (default: auto-detect)."

# The frozen reasoner.
REASONER = typer.Option(None, "--reasoner", help=REASONER_HELP)
REASONER_URL = typer.Option(None, "--reasoner-url", help=f"OpenAI-compatible base URL, e.g. http://host:8000/v1 "
                            f"(default: ${ENV_URL}; no user:password@ in it: the key goes in $OPENAI_API_KEY).")
MODEL = typer.Option(None, "--model", "--reasoner-model", help="Reasoner model id (served name or local folder).")
TIMEOUT = typer.Option(None, "--timeout", help="Reasoner request timeout, seconds.")
RETRIES = typer.Option(None, "--retries", help="Reasoner retries after a timeout/5xx/429 (default: back-end's; "
                       "a refused connection is never retried).")
AUDIO_PART = typer.Option(None, "--audio-part", help=f"How the openai reasoner gets the audio: {', '.join(AUDIO_PARTS)} "
                          "(none: a text-only chat model answers from question, choices and tool evidence; "
                          "default input_audio).")

# The router.
ROUTER_DIR = typer.Option(None, "--router", help=f"Router folder, or a bundled router: {', '.join(available_routers())} "
                          "(default: default).")
PRECISION = typer.Option("int8", "--precision", help="Router weights: int8 or fp32 (the bundled routers ship int8 only).")

# Datasets (collect, batch).
AUDIO_ROOT = typer.Option(None, "--audio-root", help="Folder audio paths are relative to (default: the dataset's folder).")
FORMAT = typer.Option(None, "--format", help=FORMAT_HELP)
LIMIT = typer.Option(None, "--limit", help="Only the first N questions.")
CONCURRENCY = typer.Option(8, "--concurrency", help="Questions whose reasoner requests go out together.")
MAX_FAILURES = typer.Option(5, "--max-failures", help="Stop after this many consecutive reasoner failures.")
AS_JSON = typer.Option(False, "--json", help="Print the summary as one JSON document.")
