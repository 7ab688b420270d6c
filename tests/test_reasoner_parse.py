"""reasoner.parse and reasoner.prompt: real-looking model replies -> option index, and the prompt."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from reasoner.errors import ReasonerError
from reasoner.parse import parse_answer
from reasoner.prompt import PROMPT_VERSION, build_messages, compact_evidence, prompt_text, user_text

REPO = Path(__file__).resolve().parent.parent

VOCALS = ["Robotic voice", "Male voice singing in a high pitch", "Female voice", "No vocals"]
COUNTS = ["eighteen", "fourteen", "one", "nine"]
SOUNDS = ["Dog barking", "Cat meowing", "Car horn", "Dog barking and car horn"]


@pytest.mark.parametrize("raw, choices, index, matched_by", [
    # exact option text, case / punctuation insensitive
    ("Female voice", VOCALS, 2, "exact"),
    ("female voice.", VOCALS, 2, "exact"),
    ("The vocals are a robotic voice, heavily processed.", VOCALS, 0, "exact"),
    ("(B) Male voice singing in a high pitch", VOCALS, 1, "exact"),
    ("The answer is: No vocals", VOCALS, 3, "exact"),
    ("nine", COUNTS, 3, "exact"),
    ("There are nine such words.", COUNTS, 3, "exact"),
    # longest option wins when the shorter ones are part of it
    ("Dog barking and car horn", SOUNDS, 3, "exact"),
    ("I hear a dog barking and car horn in the street.", SOUNDS, 3, "exact"),
    # letters
    ("B", VOCALS, 1, "letter"),
    ("b", VOCALS, 1, "letter"),
    ("(C)", VOCALS, 2, "letter"),
    ("C.", VOCALS, 2, "letter"),
    ("D)", VOCALS, 3, "letter"),
    ("Answer: A", VOCALS, 0, "letter"),
    ("The correct answer is (D).", VOCALS, 3, "letter"),
    ("**B**", VOCALS, 1, "letter"),
    ("Option C", VOCALS, 2, "letter"),
    ("I think B is right.", VOCALS, 1, "letter"),
    ("<think>It could be A, but the pitch is high.</think><answer>B</answer>", VOCALS, 1, "letter"),
    # the model echoes every option, then commits to one letter
    ("(A) Robotic voice (B) Male voice singing in a high pitch (C) Female voice (D) No vocals\nAnswer: C",
     VOCALS, 2, "letter"),
    # near-miss paraphrases
    ("Male voice singing high pitch", VOCALS, 1, "similar"),
    ("It sounds like a male voice singing at a high pitch at the start.", VOCALS, 1, "similar"),
    ("Robotic voicee", VOCALS, 0, "similar"),
    ("fourten", COUNTS, 1, "similar"),
    # ambiguous or unrelated -> none
    ("A or B", VOCALS, None, "none"),
    ("(A) or (C), hard to tell", VOCALS, None, "none"),
    ("It is either a cat meowing or a car horn.", SOUNDS, None, "none"),
    ("The answer is A dog", VOCALS, None, "none"),
    ("I cannot determine this from the audio.", VOCALS, None, "none"),
    ("", VOCALS, None, "none"),
    ("E", VOCALS, None, "none"),  # out of range letter
])
def test_parse_answer(raw, choices, index, matched_by):
    assert parse_answer(raw, choices) == (index, matched_by)


def test_parse_answer_does_not_read_article_as_letter():
    # "A dog is barking" must not become option A: no option text, no letter -> similarity/none
    assert parse_answer("A dog is barking loudly", ["Cat meowing", "Rain", "Thunder"]) == (None, "none")


def test_parse_answer_on_real_mmau_options():
    """Every option of real MMAU questions, given back verbatim or as its letter, is recovered."""
    rows = [json.loads(line) for line in
            (REPO / "textrouter" / "data" / "mmau-mini-outcomes-dev.jsonl").read_text().splitlines()[:60]]
    checked = 0
    for row in rows:
        choices = row["choices"]
        norms = [c.lower().strip(" .") for c in choices]
        for i, choice in enumerate(choices):
            letter = "ABCDEFGH"[i]
            assert parse_answer(f"({letter})", choices) == (i, "letter")
            # verbatim text is exact unless another option contains it (then still its own index
            # or an honest "none", never a different option)
            got, how = parse_answer(choice, choices)
            if sum(norms[i] in n for n in norms) == 1:
                assert (got, how) == (i, "exact"), (choice, choices)
            else:
                assert got in (i, None)
            checked += 1
    assert checked > 150


def test_prompt_contains_question_letters_and_instruction():
    messages = build_messages("What is the primary vocal style?", VOCALS)
    assert [m["role"] for m in messages] == ["user"]
    text = prompt_text(messages)
    assert "What is the primary vocal style?" in text
    for letter, choice in zip("ABCD", VOCALS):
        assert f"({letter}) {choice}" in text
    assert "exactly one" in text
    assert "Auxiliary evidence" not in text
    assert PROMPT_VERSION


def test_prompt_with_evidence_names_tool_and_limits_and_truncates():
    transcript = "word " * 3000  # 15 000 characters
    evidence = {"tool": "asr", "tool_version": "1", "result": {"text": transcript, "language": "en"},
                "limits": "English speech only; no speaker identity.",
                "audio": {"duration_s": 30.0, "original_duration_s": 95.0, "truncated": True}}
    text = user_text("What does the speaker say?", ["hello", "goodbye"], evidence, max_evidence_chars=1500)
    assert "Auxiliary evidence from the tool `asr`" in text
    assert "may be" in text and "incomplete" in text
    assert "English speech only; no speaker identity." in text
    assert "truncated" in text
    assert "first 30.0 s of 95.0 s" in text
    assert len(text) < 2200  # question + options + ~1500 chars of evidence
    # the evidence block is valid JSON when it fits without the hard cut
    block = compact_evidence(evidence, 1500)
    assert json.loads(block)["result"]["language"] == "en"


def test_prompt_rejects_bad_questions():
    with pytest.raises(ReasonerError, match="question is empty"):
        build_messages("  ", ["a", "b"])
    with pytest.raises(ReasonerError, match="2 to 26 choices"):
        build_messages("q?", ["only one"])
    with pytest.raises(ReasonerError, match="choice is empty"):
        build_messages("q?", ["a", " "])
    with pytest.raises(ReasonerError, match="list of option strings"):
        build_messages("q?", "a, b")
