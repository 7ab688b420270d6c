"""Plant one bug at a time in a private copy of the repo and check that the relevant tests fail.

    python scripts/mutation_check.py              # every mutant (a few minutes on 2 cores)
    python scripts/mutation_check.py --list       # the mutants, and whether each still applies
    python scripts/mutation_check.py --only grpo_kl_sign --only parse_margin_zero
    python scripts/mutation_check.py --baseline   # also run each mutant's tests unmutated first
    python scripts/mutation_check.py --json       # one JSON document instead of the table

A mutant is a textual replacement (file, old snippet -> new snippet) of a plausible bug: a sign
flipped, a check dropped, an atomic write made direct. Each is applied alone to a copy of the
repository in a temp folder (`shutil.copytree`, never the working tree), only the test files that
cover that code run (`pytest -x`), and the mutant is

    killed    the tests failed (the bug would be caught)
    survived  the tests passed (a gap in the suite)
    stale     the old snippet is no longer in the file (the code changed): update the mutant
    timeout   the tests ran past --timeout (counted apart from killed)
    error     pytest could not run (exit 2-5 other than a test failure): see the detail column

Imports in the test run resolve to the copy (PYTHONPATH=copy, cwd=copy, no .pyc written), so the
editable install of the working tree is not used. This script is on demand: it is not collected by
pytest (tests/ holds the suite) and nothing in the suite runs it.

Exit code: 0 when no mutant survived (stale ones are listed but do not fail), 1 otherwise.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
COPY_IGNORE = shutil.ignore_patterns(".git", ".venv", "venv", "__pycache__", "*.pyc", "*.egg-info",
                                     ".pytest_cache", "runs", ".mypy_cache", ".ruff_cache")
DEFAULT_TIMEOUT_S = 900.0  # per mutant; the slowest relevant test set takes ~2 min on 2 cores


@dataclass(frozen=True)
class Mutant:
    """One planted bug: replace the first occurrence of `old` by `new` in `file`."""

    name: str
    file: str               # path relative to the repo root
    old: str
    new: str
    tests: tuple[str, ...]  # pytest arguments: files or node ids (relative to the repo root)
    what: str               # the bug, in words
    k: str | None = None    # optional pytest -k expression to narrow the run


M = Mutant
MUTANTS: list[Mutant] = [
    # --- toolcache/cache.py -------------------------------------------------------------------
    M("cache_put_two_transactions", "toolcache/cache.py",
      'self._fault("put:after-insert")',
      'c.execute("COMMIT"); c.execute("BEGIN IMMEDIATE"); self._fault("put:after-insert")',
      ("tests/test_cache_fault.py", "tests/test_cache.py"),
      "entry INSERT and total_size update in two transactions"),
    M("cache_total_size_not_updated", "toolcache/cache.py",
      "WHERE name='total_size' RETURNING value\",\n                             (db,))",
      "WHERE name='total_size' RETURNING value\",\n                             (0,))",
      ("tests/test_cache.py", "tests/test_cache_fault.py"),
      "total_size never grows (the size bound is never enforced)"),
    M("cache_no_eviction", "toolcache/cache.py",
      "        if total > self.max_bytes:\n", "        if False:\n",
      ("tests/test_cache.py",), "the size bound is never enforced"),
    # --- cli/resumable.py, cli/errors.py, cli/collecting.py, cli/batching.py ------------------
    M("write_json_atomic_direct", "cli/resumable.py",
      'tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")', "tmp = path",
      ("tests/test_crash_safety.py",), "write_json_atomic writes straight to the target",
      k="atomic or final"),
    M("json_list_writer_direct", "cli/resumable.py",
      'self._tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")', "self._tmp = self.path",
      ("tests/test_crash_safety.py",), "batch's final JSON list written straight to the target",
      k="final"),
    M("jsonl_torn_tail_kept", "cli/resumable.py",
      "            _cut_torn_tail(self.path)\n", "            pass\n",
      ("tests/test_crash_safety.py", "tests/test_collect_batch.py"),
      "a torn last line (kill mid-write) is not cut off on reopen"),
    M("failure_guard_off_by_one", "cli/resumable.py",
      "if self.consecutive >= self.limit:", "if self.consecutive > self.limit:",
      ("tests/test_collect_batch.py",), "the run stops one failure after --max-failures"),
    M("exit_interrupt_is_1", "cli/errors.py",
      "EXIT_INTERRUPTED = 130", "EXIT_INTERRUPTED = 1",
      ("tests/test_crash_safety.py", "tests/test_cli_route.py"), "exit code of an interrupt set to 1 (README: 130)",
      k="sigint"),
    M("exit_bad_input_is_1", "cli/errors.py",
      "EXIT_BAD_INPUT = 2", "EXIT_BAD_INPUT = 1",
      ("tests/test_cli_route.py",), "exit code of bad input set to 1 (README: 2)", k="not sigint"),
    M("exit_peer_is_2", "cli/errors.py",
      "EXIT_PEER = 3", "EXIT_PEER = 2",
      ("tests/test_cli_route.py",), "exit code of an unreachable reasoner set to 2 (README: 3)", k="not sigint"),
    M("collect_resume_redoes_done_rows", "cli/collecting.py",
      "pending = [q for q in dataset.questions if q.id not in done]", "pending = list(dataset.questions)",
      ("tests/test_collect_batch.py", "tests/test_crash_safety.py"), "collect re-runs rows already in the table",
      k="collect"),
    # --- textrouter/head.py, textrouter/static.py (category mixture heads) ---------------------
    M("mixture_logits_without_log", "textrouter/head.py",
      "return np.log(softmax(z.astype(np.float64)) @ np.asarray(head[2], dtype=np.float64))",
      "return (softmax(z.astype(np.float64)) @ np.asarray(head[2], dtype=np.float64))",
      ("tests/test_category.py",), "mixture logits are q, not log q (probabilities no longer the expected accuracies)",
      k="mixture"),
    M("static_fold_drops_mixture", "textrouter/static.py",
      "return z if self.mix is None else mixture_logits(z, self.mix)", "return z",
      ("tests/test_category.py",), "static export folds a mixture head's classifier but drops softmax and estimates",
      k="static_engine"),
    M("mixture_matmul_quantised", "textrouter/quantize.py",
      "        exclude += _mixture_matmuls(graph)\n", "",
      ("tests/test_category.py",), "int8 quantises a mixture's P(category) @ M (static router batch-dependent)",
      k="static_engine"),
    M("old_mixture_export_batched", "textrouter/runtime.py",
      'if (meta.get("head") or {}).get("kind") != "mixture":', "if True:",
      ("tests/test_category.py",), "runtime batches a static mixture router whose int8 graph quantised P @ M",
      k="static_engine"),
    # --- textrouter/grpo.py, textrouter/evaluate.py ------------------------------------------
    M("grpo_kl_sign", "textrouter/grpo.py",
      "loss = -(objective - opts.beta * kl).mean()", "loss = -(objective + opts.beta * kl).mean()",
      ("tests/test_grpo.py", "tests/test_mutants_units.py"), "KL penalty sign flipped"),
    M("grpo_no_clip", "textrouter/grpo.py",
      "ratio.clamp(1 - opts.clip_eps, 1 + opts.clip_eps) * adv", "ratio * adv",
      ("tests/test_grpo.py",), "PPO ratio clipping removed (exhaustive groups)"),
    M("grpo_adv_not_normalised", "textrouter/grpo.py",
      "adv = (rewards - mean) / (std + eps)", "adv = rewards - mean",
      ("tests/test_grpo.py",), "group advantages not divided by the group std"),
    M("call_precision_counts_both_right", "textrouter/evaluate.py",
      "helped = calls & (o[np.arange(n), c] == 1) & (o[:, 0] == 0)", "helped = calls & (o[np.arange(n), c] == 1)",
      ("tests/test_evaluate.py", "tests/test_mutants_units.py"),
      "call_precision counts calls where direct was already right"),
    # --- reasoner/parse.py, reasoner/openai_backend.py ---------------------------------------
    M("parse_margin_zero", "reasoner/parse.py",
      "SIMILARITY_MARGIN = 0.05", "SIMILARITY_MARGIN = 0.0",
      ("tests/test_reasoner_parse.py", "tests/test_mutants_units.py"), "answer-similarity margin set to 0"),
    M("parse_threshold_low", "reasoner/parse.py",
      "SIMILARITY_THRESHOLD = 0.75", "SIMILARITY_THRESHOLD = 0.3",
      ("tests/test_reasoner_parse.py",), "a vague reply fuzzily matches some option"),
    M("parse_two_letters_pick_first", "reasoner/parse.py",
      "    return None, len(found) > 1", "    return (min(found) if found else None), False",
      ("tests/test_reasoner_parse.py",), "'A or B' parsed as A"),
    M("openai_429_not_retried", "reasoner/openai_backend.py",
      "if exc.code >= 500 or exc.code == 429:", "if exc.code >= 500:",
      ("tests/test_reasoner_openai.py", "tests/test_mutants_units.py"), "HTTP 429 not retried"),
    M("openai_4xx_retried", "reasoner/openai_backend.py",
      "if exc.code >= 500 or exc.code == 429:", "if exc.code >= 400:",
      ("tests/test_reasoner_openai.py",), "HTTP 404 (unknown model) retried"),
    M("openai_one_retry_less", "reasoner/openai_backend.py",
      "attempts = 1 + self.options.max_retries", "attempts = max(1, self.options.max_retries)",
      ("tests/test_reasoner_openai.py",), "one attempt fewer than 1 + max_retries"),
    # --- toolcache/audio.py, toolcache/api.py ------------------------------------------------
    M("stereo_left_channel", "toolcache/audio.py",
      "data.mean(axis=1, dtype=np.float32)", "data[:, 0]",
      ("tests/test_audio_loading.py", "tests/test_mutants_units.py"), "stereo down-mix takes the left channel"),
    M("audio_no_truncation_flag", "toolcache/audio.py",
      '"truncated": bool(more),', '"truncated": False,',
      ("tests/test_audio_loading.py", "tests/test_mutants_units.py"), "a clip cut at max_seconds is not flagged truncated"),
    M("cache_key_without_sample_rate", "toolcache/api.py",
      '        "sample_rate": int(spec.sample_rate),', "        # (sample_rate dropped)",
      ("tests/test_cache.py", "tests/test_mutants_units.py"), "sample_rate dropped from the cache key"),
    M("cache_key_without_max_seconds", "toolcache/api.py",
      '        "max_seconds": float(max_seconds),', "        # (max_seconds dropped)",
      ("tests/test_cache.py", "tests/test_mutants_units.py"), "decode limit dropped from the cache key"),
    # --- toolcache/tools (owned by the music/sound helpers; listed for the table) -----
    M("tempo_refinement_removed", "toolcache/tools/tempo.py",
      "    return 60.0 * fps / period, beats", "    return bpm, beats",
      ("tests/test_tool_features.py",), "tempo comb refinement removed: the coarse grid BPM is reported"),
    M("pitch_fine_stage_removed", "toolcache/tools/features.py",
      "        lags.append(lag)\n", "        lags.append(tau.astype(np.float64))\n",
      ("tests/test_tool_features.py",), "fine pitch stage (parabolic lag interpolation) removed"),
    M("chord_stay_05", "toolcache/tools/chords.py",
      "P_STAY = 0.95", "P_STAY = 0.5",
      ("tests/test_tool_chords.py",), "chord HMM stay probability 0.95 -> 0.5"),
]


@dataclass
class Outcome:
    name: str
    file: str
    status: str            # killed / survived / stale / timeout / error / baseline-failed
    seconds: float = 0.0
    detail: str = ""
    tests: list[str] = field(default_factory=list)


def _status_of(mutant: Mutant, text: str) -> str:
    n = text.count(mutant.old)
    return "ok" if n >= 1 else "stale"


def make_copy(dest_parent: Path) -> Path:
    dest = dest_parent / "repo"
    shutil.copytree(REPO, dest, ignore=COPY_IGNORE, symlinks=True)
    return dest


def _env(copy: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(copy) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # a restored file must never meet a mutant's .pyc
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


def check_imports_resolve_to(copy: Path) -> None:
    code = "import cli, reasoner, textrouter, toolcache; print('\\n'.join(m.__file__ for m in (cli, reasoner, textrouter, toolcache)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=copy, env=_env(copy), capture_output=True,
                         text=True, timeout=120)
    files = out.stdout.split()
    if out.returncode != 0 or len(files) != 4 or not all(Path(f).resolve().is_relative_to(copy.resolve()) for f in files):
        raise SystemExit(f"error: imports in the copy do not resolve to it ({files or out.stderr.strip()[-300:]}); "
                         "run from the project's venv")


def _first_failure(output: str) -> str:
    for line in output.splitlines():
        if line.startswith(("FAILED ", "ERROR ")):
            node = line.split(" - ")[0].removeprefix("FAILED ").removeprefix("tests/")
            return ("collection error: " if line.startswith("ERROR") else "") + node[:140]
    lines = [line for line in output.strip().splitlines() if line.strip()]
    if not lines:
        return "(no output)"
    m = re.search(r"=+ (.*(?:passed|failed|error).*) =+\s*$", lines[-1])
    return m.group(1) if m else " | ".join(lines[-3:])[:200]


def run_tests(copy: Path, mutant: Mutant, timeout_s: float) -> tuple[int | None, str, float]:
    missing = [t for t in mutant.tests if not (copy / t.split("::")[0]).exists()]
    tests = [t for t in mutant.tests if t not in missing]
    if not tests:
        return 4, f"no test file present: {', '.join(missing)}", 0.0
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    if mutant.k:
        cmd += ["-k", mutant.k]
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=copy, env=_env(copy), capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return None, f"over {timeout_s:g} s", time.monotonic() - t0
    return proc.returncode, proc.stdout + proc.stderr, time.monotonic() - t0


def check_one(copy: Path, mutant: Mutant, timeout_s: float, baseline: bool) -> Outcome:
    path = copy / mutant.file
    out = Outcome(mutant.name, mutant.file, "stale", tests=list(mutant.tests))
    if not path.exists():
        out.detail = "file not found"
        return out
    original = path.read_text(encoding="utf-8")
    if _status_of(mutant, original) == "stale":
        out.detail = "old snippet not found (the code changed)"
        return out
    if baseline:
        rc, text, secs = run_tests(copy, mutant, timeout_s)
        if rc != 0:
            out.status, out.seconds = "baseline-failed", secs
            out.detail = "unmutated tests fail: " + (_first_failure(text) if rc is not None else text)
            return out
    try:
        path.write_text(original.replace(mutant.old, mutant.new, 1), encoding="utf-8")
        rc, text, secs = run_tests(copy, mutant, timeout_s)
    finally:
        path.write_text(original, encoding="utf-8")
    out.seconds = secs
    if rc is None:
        out.status, out.detail = "timeout", text
    elif rc == 0:
        out.status, out.detail = "survived", _first_failure(text)
    elif rc == 1:
        out.status, out.detail = "killed", _first_failure(text)
    else:  # 2 interrupted / collection error, 3 internal, 4 usage, 5 no tests collected
        out.status, out.detail = "error", f"pytest exit {rc}: " + _first_failure(text)
    return out


STYLE = {"killed": "green", "survived": "bold red", "stale": "yellow", "timeout": "magenta",
         "error": "red", "baseline-failed": "red", "ok": "green"}


def _select(names: list[str] | None) -> list[Mutant]:
    if not names:
        return list(MUTANTS)
    wanted = [n for arg in names for n in arg.split(",") if n]
    known = {m.name: m for m in MUTANTS}
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise SystemExit(f"error: unknown mutant {', '.join(unknown)}; valid: {', '.join(known)} (see --list)")
    return [known[n] for n in wanted]


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console
    from rich.table import Table

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--list", action="store_true", help="list the mutants and whether each still applies")
    parser.add_argument("--only", action="append", metavar="NAME", help="run only this mutant (repeat or comma-separate)")
    parser.add_argument("--baseline", action="store_true", help="run each mutant's tests unmutated first")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds per mutant's test run")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args(argv)
    console = Console(stderr=False, width=None if sys.stdout.isatty() else 150)
    mutants = _select(args.only)

    if args.list:
        rows = []
        for m in mutants:
            p = REPO / m.file
            status = _status_of(m, p.read_text(encoding="utf-8")) if p.exists() else "stale"
            rows.append({"name": m.name, "file": m.file, "applies": status, "what": m.what, "tests": list(m.tests)})
        if args.json:
            print(json.dumps(rows, indent=1))
            return 0
        table = Table(title=f"{len(rows)} mutants (scripts/mutation_check.py)")
        for col in ("mutant", "file", "applies", "bug", "tests"):
            table.add_column(col)
        for r in rows:
            table.add_row(r["name"], r["file"], f"[{STYLE[r['applies']]}]{r['applies']}[/]", r["what"],
                          " ".join(Path(t).name for t in r["tests"]))
        console.print(table)
        return 0

    results: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="audiorouter-mutants-") as tmp:
        copy = make_copy(Path(tmp))
        check_imports_resolve_to(copy)
        err = Console(stderr=True)
        for i, m in enumerate(mutants, 1):
            err.print(f"[{i}/{len(mutants)}] {m.name} ...", end=" ")
            res = check_one(copy, m, args.timeout, args.baseline)
            err.print(f"[{STYLE[res.status]}]{res.status}[/] ({res.seconds:.0f} s)")
            results.append(res)
    counts = {s: sum(r.status == s for r in results) for s in STYLE if s != "ok"}
    applicable = len(results) - counts["stale"]
    if args.json:
        print(json.dumps({"results": [asdict(r) for r in results], "counts": counts,
                          "applicable": applicable}, indent=1))
    else:
        table = Table(title="mutation check (one planted bug at a time, relevant tests only)")
        for col in ("mutant", "file", "result", "s", "caught by / detail"):
            table.add_column(col, overflow="fold")
        for r in results:
            table.add_row(r.name, r.file, f"[{STYLE[r.status]}]{r.status}[/]", f"{r.seconds:.0f}", r.detail)
        console.print(table)
        console.print(f"killed {counts['killed']} of {applicable} applicable mutants; survived {counts['survived']}; "
                      f"stale {counts['stale']}; timeout {counts['timeout']}; error {counts['error'] + counts['baseline-failed']}")
    return 1 if counts["survived"] else 0


if __name__ == "__main__":
    sys.exit(main())
