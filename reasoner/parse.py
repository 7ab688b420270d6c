"""Map a reasoner's free-text reply to one of the multiple-choice options.

`parse_answer(raw, choices) -> (index | None, matched_by)` tries, in order:

1. ``exact``   — an option's text appears as a whole in the reply (case and punctuation
   insensitive, on word boundaries). When several options appear, the longest one wins if every
   other match is part of it ("Male voice singing" beats "Male voice"); unrelated options appearing
   together ("dog or cat") are ambiguous and fall through to the letter stage.
2. ``letter``  — an option letter: "B", "(B)", "B.", "B)", "Answer: B", "the answer is (B)",
   "Option B". Two different letters ("A or B") are ambiguous -> ``none``.
3. ``similar`` — the option closest to the reply by `difflib` ratio (also against word windows of
   the reply of the option's length), when above `SIMILARITY_THRESHOLD` and clearly ahead of the
   runner-up.
4. ``none``    — nothing matched (or the reply was ambiguous): index is None.

Pure standard library; no model knowledge beyond the option list.
"""
from __future__ import annotations

import difflib
import re
import string
from typing import Sequence

MATCHED_BY = ("exact", "letter", "similar", "none")

# Ratio in [0, 1] from difflib.SequenceMatcher on normalised text; below it a reply is "none".
SIMILARITY_THRESHOLD = 0.75
# The best option must beat the runner-up by this much, else the reply is ambiguous.
SIMILARITY_MARGIN = 0.05

_LETTERS = string.ascii_uppercase

# Reasoning models wrap their thinking in tags; the answer is what follows.
_THINK_RE = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_ANSWER_TAG_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)

# Explicit letter patterns (letter must be upper case, or in brackets, so the article "a" is not
# read as option A).
_EXPLICIT_LETTER_RES = (
    # "Answer: B", "the answer is (B)", "Correct option - B", "choice B"
    re.compile(r"(?i:answer|option|choice)(?:\s+(?i:is|would\s+be|:))?\s*[:\-]?\s*"
               r"[\(\[]?([A-Z])[\)\]]?(?![A-Za-z0-9'])"),
    # "(B)", "[B]" anywhere
    re.compile(r"[\(\[]([A-Za-z])[\)\]]"),
    # "B." / "B)" / "B:" at the start of the reply or of a line
    re.compile(r"(?m)^\s*\**([A-Z])\**\s*[.):](?:\s|$)"),
)
# A bare capital letter standing alone ("I think B is right"); "A" and "I" followed by a lower-case
# word are an article / pronoun, not an option.
_BARE_LETTER_RE = re.compile(r"(?<![A-Za-z0-9'])([A-Z])(?![A-Za-z0-9'])")


def normalize(text: str) -> str:
    """Lower case, punctuation -> space, collapsed whitespace ("Male, voice!" -> "male voice")."""
    text = text.lower().replace("’", "'")
    text = re.sub(r"[^\w\s]", " ", text)
    return " ".join(text.split())


def _strip_reasoning(raw: str) -> str:
    """Keep the final answer part of replies that think aloud in tags."""
    tagged = _ANSWER_TAG_RE.findall(raw)
    if tagged:
        return tagged[-1]
    return _THINK_RE.sub(" ", raw)


def _contains(haystack: str, needle: str) -> bool:
    """Whole-word containment on normalised strings."""
    return bool(needle) and f" {needle} " in f" {haystack} "


def _exact(text: str, choices: Sequence[str]) -> tuple[int | None, bool]:
    """(index, ambiguous). Longest option present that contains every other present option."""
    norm_text = normalize(text)
    norms = [normalize(c) for c in choices]
    # An option whose normalised text equals the whole reply wins outright.
    whole = [i for i, n in enumerate(norms) if n and n == norm_text]
    if len(set(norms[i] for i in whole)) == 1 and whole:
        return whole[0], False
    present = [i for i, n in enumerate(norms) if _contains(norm_text, n)]
    if not present:
        return None, False
    distinct = {norms[i] for i in present}
    longest = max(distinct, key=len)
    if all(_contains(longest, other) for other in distinct):
        owners = [i for i in present if norms[i] == longest]
        if len(owners) == 1:
            return owners[0], False
    return None, True


# Words after a capital "A" / "I" that show it is an option letter after all ("A or B").
_LETTER_FOLLOWERS = {"or", "and", "nor", "is", "was", "seems", "would", "should", "could", "might",
                     "because", "as", "since", "fits", "matches", "best"}


def _is_article(text: str, m: re.Match) -> bool:
    """A capital A / I followed by a lower-case word ("A dog barks", "I think") is not an option."""
    if m.group(1) not in ("A", "I"):
        return False
    nxt = re.match(r"\s+([a-z]+)", text[m.end():m.end() + 20])
    return nxt is not None and nxt.group(1) not in _LETTER_FOLLOWERS


def _letters_found(text: str, n_choices: int) -> set[int]:
    """Option indices named by letters, from the most explicit pattern that names any."""
    valid = set(_LETTERS[:n_choices])
    patterns = (*_EXPLICIT_LETTER_RES, _BARE_LETTER_RE)
    for pattern in patterns:
        found: set[int] = set()
        for m in pattern.finditer(text):
            if pattern is not _EXPLICIT_LETTER_RES[1] and _is_article(text, m):
                continue
            letter = m.group(1).upper()
            if letter in valid:
                found.add(_LETTERS.index(letter))
        if found:
            return found
    return set()


def _letter(text: str, n_choices: int) -> tuple[int | None, bool]:
    """(index, ambiguous) from option letters in the reply."""
    stripped = text.strip().strip("*_`'\" ").rstrip(".")
    if len(stripped) == 1 and stripped.upper() in _LETTERS[:n_choices]:
        return _LETTERS.index(stripped.upper()), False  # the whole reply is one letter: "b"
    found = _letters_found(text, n_choices)
    if len(found) == 1:
        return found.pop(), False
    return None, len(found) > 1


def _similarity(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def _similar(text: str, choices: Sequence[str]) -> int | None:
    norm_text = normalize(text)
    if not norm_text:
        return None
    words = norm_text.split()
    scores = []
    for choice in choices:
        norm = normalize(choice)
        if not norm:
            scores.append(0.0)
            continue
        best = _similarity(norm_text, norm)
        width = len(norm.split())
        # Also compare against windows of the reply with the option's word count (+-1), so a long
        # reply that paraphrases the option inside a sentence can still match. Only for options of
        # 3+ words: a 1-2 word option fuzzily matches some pair of words in almost any sentence.
        if width >= 3 and len(words) > width:
            for w in (width - 1, width, width + 1):
                if w < 1:
                    continue
                for start in range(0, len(words) - w + 1):
                    best = max(best, _similarity(" ".join(words[start:start + w]), norm))
        scores.append(best)
    ranked = sorted(range(len(choices)), key=lambda i: scores[i], reverse=True)
    top = ranked[0]
    if scores[top] < SIMILARITY_THRESHOLD:
        return None
    if len(ranked) > 1 and scores[top] - scores[ranked[1]] < SIMILARITY_MARGIN:
        return None
    return top


def parse_answer(raw: str, choices: Sequence[str]) -> tuple[int | None, str]:
    """Index of the chosen option (or None) and how it was matched (see `MATCHED_BY`)."""
    if not choices:
        return None, "none"
    text = _strip_reasoning(raw or "")
    if not text.strip():
        return None, "none"
    index, ambiguous_exact = _exact(text, choices)
    if index is not None:
        return index, "exact"
    index, ambiguous_letter = _letter(text, len(choices))
    if index is not None:
        return index, "letter"
    if ambiguous_exact or ambiguous_letter:
        return None, "none"  # the reply names several options: refuse to guess
    index = _similar(text, choices)
    if index is not None:
        return index, "similar"
    return None, "none"


def letter_of(index: int) -> str:
    """Option letter for a 0-based index (0 -> "A")."""
    return _LETTERS[index]
