"""The router's text input and how it is fitted into `max_length` tokens.

One module shared by training (textrouter.static features), export and the ONNX runtime, so a
router sees the same text at training and at run time. The router sees only the question and its
choices (never task metadata), so the same text is available at training time (from an outcome
table) and at run time (from a user's command line).

Truncation policy (router.json field `truncation`, `Truncation.to_dict()`):

- `question-head-tail-v1` (default): when `Question: q\\nChoices: (A) x ...` is longer than
  `max_length` tokens, only the question is cut: its first `head_fraction` share of the question
  budget and the rest from its end are kept (cut at word boundaries), the template and every choice
  stay whole. The question budget is max_length minus the tokens of everything else, but never
  fewer than MIN_QUESTION_TOKENS; only when the choices alone leave less than that are the choices
  cut too (from the end, by the tokenizer).
- `tail-v1`: the tokenizer cuts the whole text at max_length from the end (choices first). What
  routers did before the field existed; kept so a folder can ask for it explicitly.

A folder without `truncation` (format 1 folders written before the field) gets the default policy:
it yields the identical token sequence for every input that fits in max_length (all 499 bundled
training questions do), so only inputs that were already cut change, and they keep their choices.

Cost: a question with more whitespace words than max_length is cut to max_length words (head and
tail) BEFORE tokenising. Every word is at least one token, so this never changes the result, and a
2000-token question costs about what a 128-token one does (the word split is the only linear step).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
QUESTION_PREFIX = "Question: "
CHOICES_PREFIX = "\nChoices: "  # never inside a question: format_input collapses its whitespace
MIN_QUESTION_TOKENS = 16  # question tokens kept even when very long choices leave fewer

TRUNCATION_POLICIES: dict[str, str] = {
    "question-head-tail-v1": "cut the question (head and tail kept), never the choices",
    "tail-v1": "cut the whole text from the end (the choices go first); routers before the field",
}
DEFAULT_TRUNCATION_POLICY = "question-head-tail-v1"


def available_truncations() -> list[str]:
    return list(TRUNCATION_POLICIES)


@dataclass(frozen=True)
class Truncation:
    """How a too-long router input is cut to max_length tokens (see the module docstring)."""

    policy: str = DEFAULT_TRUNCATION_POLICY
    head_fraction: float = 0.5  # share of the question budget kept from the question's start

    def __post_init__(self) -> None:
        if self.policy not in TRUNCATION_POLICIES:
            raise ValueError(f"truncation policy must be one of {available_truncations()} (got {self.policy!r})")
        if isinstance(self.head_fraction, bool) or not isinstance(self.head_fraction, (int, float)) \
                or not 0.0 <= float(self.head_fraction) <= 1.0:
            raise ValueError(f"truncation head_fraction must be a number in [0, 1] (got {self.head_fraction!r})")

    def to_dict(self) -> dict:
        return {"policy": self.policy, "head_fraction": float(self.head_fraction)}

    @classmethod
    def from_meta(cls, value: Any) -> "Truncation":
        """From router.json's `truncation` value; None (field absent) = the documented default."""
        if value is None:
            return cls()
        if not isinstance(value, Mapping):
            raise ValueError(f"truncation must be an object like {cls().to_dict()} (got {value!r})")
        unknown = sorted(set(value) - {"policy", "head_fraction"})
        if unknown:
            raise ValueError(f"truncation has unknown field(s) {unknown}; valid: policy, head_fraction")
        return cls(policy=value.get("policy", DEFAULT_TRUNCATION_POLICY),
                   head_fraction=value.get("head_fraction", 0.5))

    def split(self, budget: int) -> tuple[int, int]:
        """(head, tail) tokens of a question budget; both monotone in budget."""
        head = int(budget * float(self.head_fraction))
        return head, budget - head


def _question_part(question: str) -> str:
    return " ".join(str(question).split())


def _choices_part(choices: Sequence[str] | None) -> str:
    if not choices:
        return ""
    opts = " ".join(f"({LETTERS[i % 26]}) {' '.join(str(c).split())}" for i, c in enumerate(choices))
    return CHOICES_PREFIX + opts


def format_input(question: str, choices: Sequence[str] | None = None) -> str:
    """`Question: ...\\nChoices: (A) x (B) y` — whitespace collapsed, choices optional."""
    return QUESTION_PREFIX + _question_part(question) + _choices_part(choices)


def split_input(text: str) -> tuple[str, str, str]:
    """A router text -> (prefix, question, suffix): the inverse of format_input.

    A text not made by format_input is all question (empty prefix and suffix)."""
    if not text.startswith(QUESTION_PREFIX):
        return "", _question_part(text), ""
    body = text[len(QUESTION_PREFIX):]
    q, sep, rest = body.partition(CHOICES_PREFIX)
    return QUESTION_PREFIX, q, (sep + rest) if sep else ""


class InputFitter:
    """Applies a Truncation to router inputs for one tokenizer and max_length.

    `tokenizer` is the router folder's tokenizers.Tokenizer; the fitter keeps an untruncated,
    unpadded copy (or, own=True, reconfigures that one) and tokenises each input once: the question's tokens are found by their
    character offsets and cut in the token sequence itself. That equals tokenising the cut text
    because BERT's pre-tokenizer splits on whitespace and punctuation and every word's pieces
    depend on that word alone (cuts are made at word boundaries). Results are token id lists,
    unpadded, at most max_length long. Thread-safe: nothing changes after __init__.
    """

    def __init__(self, tokenizer, max_length: int, truncation: Truncation | None = None, own: bool = False):
        """own=True: use `tokenizer` itself, switching its truncation and padding off (the runtime
        owns its tokenizer; a copy costs ~60 ms of JSON parsing per router load)."""
        from tokenizers import Tokenizer

        self.truncation = truncation or Truncation()
        self.max_length = int(max_length)
        self._raw = tokenizer if own else Tokenizer.from_str(tokenizer.to_str())
        self._raw.no_truncation()
        self._raw.no_padding()

    def _precut(self, question: str) -> tuple[str, bool]:
        """Keep max_length words (head + tail shares): every word is >= 1 token, so this is lossless."""
        words = question.split(" ")
        if len(words) <= self.max_length:
            return question, False
        head, tail = self.truncation.split(self.max_length)
        return " ".join(words[:head] + (words[-tail:] if tail else [])), True

    def _tail_cut(self, ids: list[int]) -> list[int]:
        """The tokenizer's own cut: keep the start, end with the closing special token ([SEP])."""
        return ids if len(ids) <= self.max_length else ids[:self.max_length - 1] + ids[-1:]

    def _cut(self, enc, q_start: int, q_end: int) -> list[int]:
        """Token ids of `enc` (longer than max_length) with the question cut to its budget.

        q_start/q_end: the question's character span in the encoded text."""
        ids, offsets, special = enc.ids, enc.offsets, enc.special_tokens_mask
        if self.truncation.policy != "question-head-tail-v1":
            return self._tail_cut(ids)
        inside = [i for i in range(len(ids)) if not special[i] and offsets[i][0] >= q_start
                  and offsets[i][1] <= q_end and offsets[i][1] > offsets[i][0]]
        if not inside:
            return self._tail_cut(ids)
        first, n = inside[0], len(inside)  # question tokens are ids[first:first + n]
        budget = max(self.max_length - (len(ids) - n), MIN_QUESTION_TOKENS)
        if n <= budget:  # the choices alone overflow: cut them from the end
            return self._tail_cut(ids)
        head, tail = self.truncation.split(budget)
        words = enc.word_ids
        h = head  # question tokens [0, h) kept; a word cut in half is dropped
        while 0 < h < n and words[first + h] is not None and words[first + h] == words[first + h - 1]:
            h -= 1
        if h == 0:
            h = head  # one word longer than the head budget: cut inside it
        t = n - tail  # question tokens [t, n) kept
        while 0 < t < n and words[first + t] is not None and words[first + t] == words[first + t - 1]:
            t += 1
        if t >= n and tail:
            t = n - tail
        out = ids[:first + h] + ids[first + t:]
        return self._tail_cut(out)  # only cuts when MIN_QUESTION_TOKENS exceeded the budget

    def fit(self, question: str, choices: Sequence[str] | None = None) -> tuple[list[int], bool]:
        """(token ids, truncated) of one question + choices."""
        return self._fit(QUESTION_PREFIX, _question_part(question), _choices_part(choices))

    def fit_text(self, text: str) -> tuple[list[int], bool]:
        """(token ids, truncated) of an already formatted router text (format_input output)."""
        return self._fit(*split_input(text))

    def _fit(self, prefix: str, question: str, suffix: str, enc=None) -> tuple[list[int], bool]:
        question, cut = self._precut(question)
        if enc is None or cut:
            enc = self._raw.encode(prefix + question + suffix)
        if len(enc.ids) <= self.max_length:
            return list(enc.ids), cut
        return self._cut(enc, len(prefix), len(prefix) + len(question)), True

    def fit_batch(self, parts: Sequence[tuple[str, str, str]]) -> list[tuple[list[int], bool]]:
        """[(token ids, truncated)] for (prefix, question, suffix) triples, in one encode_batch."""
        pre = [self._precut(q) for _, q, _ in parts]
        encs = self._raw.encode_batch([p + q + s for (p, _, s), (q, _) in zip(parts, pre)])
        out = []
        for (prefix, _, _), (question, cut), enc in zip(parts, pre, encs):
            if len(enc.ids) <= self.max_length:
                out.append((list(enc.ids), cut))
            else:
                out.append((self._cut(enc, len(prefix), len(prefix) + len(question)), True))
        return out


def input_parts(question: str, choices: Sequence[str] | None = None) -> tuple[str, str, str]:
    """(prefix, question, suffix) of format_input(question, choices), for InputFitter.fit_batch."""
    return QUESTION_PREFIX, _question_part(question), _choices_part(choices)


def encode_fitted(tokenizer, texts: Sequence[str], max_length: int, truncation: Truncation | None = None,
                  pad_id: int = 0):
    """(input_ids int64 [N, L], attention_mask int64 [N, L], truncated bool [N]) of formatted router
    texts fitted by `truncation`, padded to the longest: what training features use, so they see
    the input the runtime will build."""
    import numpy as np

    fitter = InputFitter(tokenizer, max_length, truncation)
    fitted = fitter.fit_batch([split_input(t) for t in texts])
    width = max((len(t) for t, _ in fitted), default=0)
    ids = np.full((len(fitted), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(fitted), width), dtype=np.int64)
    for i, (tokens, _) in enumerate(fitted):
        ids[i, :len(tokens)] = tokens
        mask[i, :len(tokens)] = 1
    return ids, mask, np.array([t for _, t in fitted], dtype=bool)
