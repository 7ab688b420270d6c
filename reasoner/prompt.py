"""The reasoner prompt: question, lettered choices and (optionally) one tool's evidence.

As in AudioRouter: the frozen audio LLM always hears the audio; when the router picked a tool, the
tool's JSON output (its ``result`` and its capability note ``limits``) is added under a header that
says it is *auxiliary* evidence from the named tool and may be incomplete or wrong. The model is
asked for exactly one option.

`build_messages` returns OpenAI-style chat messages holding only text parts; each back-end adds the
audio part itself (``input_audio`` for an OpenAI-compatible server, the processor's audio
placeholder for transformers). Any change to the wording must bump `PROMPT_VERSION`: it is part of
the cache key of reasoner answers.
"""
from __future__ import annotations

import json
from typing import Any, Sequence

from reasoner.errors import ReasonerError

PROMPT_VERSION = "1"

# Evidence JSON is kept under this many characters (a 30 s transcript is ~500 chars; long audio can
# give thousands, which would crowd out the question in a small context window).
DEFAULT_MAX_EVIDENCE_CHARS = 2000
# Longest single string kept inside the evidence before truncation (characters).
_MAX_STRING_CHARS = 1200
# Longest list kept inside the evidence (items), e.g. per-segment timestamps or top-k labels.
_MAX_LIST_ITEMS = 20
_MAX_CHOICES = 26  # one letter each

# No worked example: an example answer ("(B) ...") biases small models towards that letter.
INSTRUCTION = ("Answer with exactly one of the options above: reply with its letter in parentheses "
               "followed by its text, and nothing else.")


def _truncate(value: Any, max_string: int, max_items: int) -> Any:
    """Copy of a JSON value with long strings / lists cut; the cut is stated inside the value."""
    if isinstance(value, str):
        if len(value) <= max_string:
            return value
        return value[:max_string] + f" ... [truncated: first {max_string} of {len(value)} characters]"
    if isinstance(value, list):
        kept = [_truncate(v, max_string, max_items) for v in value[:max_items]]
        if len(value) > max_items:
            kept.append(f"[truncated: first {max_items} of {len(value)} items]")
        return kept
    if isinstance(value, dict):
        return {str(k): _truncate(v, max_string, max_items) for k, v in value.items()}
    return value


def compact_evidence(evidence: dict, max_chars: int = DEFAULT_MAX_EVIDENCE_CHARS) -> str:
    """JSON text of the evidence's ``result`` and ``limits``, at most about `max_chars` long.

    Long lists (segments, top-k labels) then long strings (transcripts) are shortened, halving the
    limits until the JSON fits; the truncation is written into the text so the model knows the evidence is partial.
    """
    if not isinstance(evidence, dict):
        raise ReasonerError(f"evidence must be a tool output dict, got {type(evidence).__name__} "
                            "(pass toolcache.run(...)'s result, or None for a direct answer)")
    payload = {"result": evidence.get("result", {}), "limits": evidence.get("limits", "")}
    audio = evidence.get("audio")
    if isinstance(audio, dict) and audio.get("truncated"):
        payload["note"] = (f"the tool only analysed the first {audio.get('duration_s')} s of "
                           f"{audio.get('original_duration_s')} s of audio")
    max_string, max_items = _MAX_STRING_CHARS, _MAX_LIST_ITEMS
    while True:
        text = json.dumps(_truncate(payload, max_string, max_items), ensure_ascii=False,
                          separators=(", ", ": "), default=str)  # numpy scalars etc. as text
        if len(text) <= max_chars or (max_string <= 50 and max_items <= 1):
            break
        # Shorten lists first (segments repeat the transcript), then strings.
        if max_items > 2:
            max_items //= 2
        else:
            max_string = max(50, max_string // 2)
            max_items = 1
    if len(text) > max_chars:  # still too long (many keys): hard cut, said so
        text = text[:max_chars] + f" ... [truncated: first {max_chars} characters of the tool output]"
    return text


def validate_question(question: str, choices: Sequence[str]) -> list[str]:
    """Checked, stripped copy of the choices; ReasonerError naming the fix on bad input."""
    if not isinstance(question, str) or not question.strip():
        raise ReasonerError("the question is empty (give the question text)")
    if isinstance(choices, str) or not isinstance(choices, Sequence):
        raise ReasonerError(f"choices must be a list of option strings, got {type(choices).__name__}")
    cleaned = [str(c).strip() for c in choices]
    if len(cleaned) < 2 or len(cleaned) > _MAX_CHOICES:
        raise ReasonerError(f"need 2 to {_MAX_CHOICES} choices, got {len(cleaned)} (give the options as a list)")
    if any(not c for c in cleaned):
        raise ReasonerError("a choice is empty (remove empty options from the list)")
    return cleaned


def format_choices(choices: Sequence[str]) -> str:
    """One option per line: "(A) first", "(B) second", ..."""
    return "\n".join(f"({chr(ord('A') + i)}) {c}" for i, c in enumerate(choices))


def user_text(question: str, choices: Sequence[str], evidence: dict | None = None,
              max_evidence_chars: int = DEFAULT_MAX_EVIDENCE_CHARS) -> str:
    """The user turn's text (everything except the audio)."""
    choices = validate_question(question, choices)
    parts = [f"Question: {question.strip()}", "Options:", format_choices(choices)]
    if evidence is not None:
        parts += ["", evidence_block(evidence, max_evidence_chars)]
    parts += ["", INSTRUCTION]
    return "\n".join(parts)


def evidence_block(evidence: dict, max_evidence_chars: int = DEFAULT_MAX_EVIDENCE_CHARS) -> str:
    """The header naming the tool plus its compact JSON: what `user_text` adds for a tool action
    (the gateway appends the same block to a free-form question that has no choices)."""
    tool = evidence.get("tool", "unknown tool") if isinstance(evidence, dict) else "unknown tool"
    return "\n".join([
        f"Auxiliary evidence from the tool `{tool}` (its JSON output and stated limits). It may be "
        "incomplete or wrong: use it together with what you hear, not instead of it.",
        compact_evidence(evidence, max_evidence_chars),
    ])


def build_messages(question: str, choices: Sequence[str], evidence: dict | None = None,
                   max_evidence_chars: int = DEFAULT_MAX_EVIDENCE_CHARS) -> list[dict]:
    """OpenAI-style chat messages with text parts only; the back-end adds the audio part.

    No system message: the models' chat templates add their own default one (Qwen2-Audio-Instruct
    was tuned with it).

    >>> build_messages("Who speaks?", ["a man", "a woman"])[0]["content"][0]["type"]
    'text'
    """
    return [
        {"role": "user", "content": [{"type": "text",
                                      "text": user_text(question, choices, evidence, max_evidence_chars)}]},
    ]


def prompt_text(messages: list[dict]) -> str:
    """Canonical text of the messages (for cache keys): role + text parts, audio parts omitted."""
    lines = []
    for message in messages:
        content = message["content"]
        if isinstance(content, str):
            lines.append(f"{message['role']}: {content}")
            continue
        texts = [part["text"] for part in content if part.get("type") == "text"]
        lines.append(f"{message['role']}: " + "\n".join(texts))
    return "\n".join(lines)
