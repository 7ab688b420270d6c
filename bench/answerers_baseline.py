"""Fallback tool-alone answerers for the sound and speech groups of bench/bench_tools_real.py.

Used only for a group that bench/answerers_sound_speech.py (the sound/speech tools' own answerers)
does not define. Same signature as every answerer: `answer(row, envelopes) -> int | None`
(see bench/answerers_music.py). Deliberately plain: word overlap between a choice and the tool
output; no ontology, no synonyms. None = no evidence (counts wrong).
"""
from __future__ import annotations

import re

_STOP = {"a", "an", "the", "of", "and", "or", "sound", "sounds", "is", "in", "to", "on", "with", "by", "for",
         "it", "this", "that", "audio", "noise", "s"}
_NUMBERS = {w: i for i, w in enumerate("zero one two three four five six seven eight nine ten eleven twelve".split())}


def words(text: str) -> set[str]:
    return {w.rstrip("s") for w in re.findall(r"[a-z]+", str(text).lower().replace("_", " ")) if w not in _STOP}


def _overlap(choice: str, label: str) -> float:
    a, b = words(choice), words(label)
    return len(a & b) / len(a) if a else 0.0


def _best(scores: list[float], lowest: bool = False) -> int | None:
    if not scores:
        return None
    best = min(scores) if lowest else max(scores)
    if not lowest and best <= 0:
        return None
    idx = [i for i, s in enumerate(scores) if s == best]
    return idx[0] if len(idx) == 1 else None


def _choice_number(text: str) -> int | None:
    t = str(text).strip().lower()
    return int(t) if t.isdigit() else _NUMBERS.get(t)


def answer_sound_events(row: dict, envelopes: dict) -> int | None:
    """Choice with the highest sum over sound_events labels of (word overlap x mean score)."""
    events = ((envelopes.get("sound_events") or {}).get("result") or {}).get("events", [])
    return _best([sum(_overlap(c, e["label"]) * e["mean_score"] for e in events) for c in row["choices"]])


def answer_sound_temporal(row: dict, envelopes: dict) -> int | None:
    """longest/shortest: sound_duration seconds per choice; first/last: sound_temporal segment order;
    how many times: number of sound_temporal segments whose label overlaps the question's sound."""
    q, choices = row["question"].lower(), row["choices"]
    durs = ((envelopes.get("sound_duration") or {}).get("result") or {}).get("durations", [])
    segs = ((envelopes.get("sound_temporal") or {}).get("result") or {}).get("segments", [])
    if "longest" in q or "shortest" in q:
        secs = [max([d["seconds"] for d in durs if _overlap(c, d["label"]) > 0] or [0.0]) for c in choices]
        if "shortest" in q:
            secs = [s if s > 0 else float("inf") for s in secs]
            return None if min(secs) == float("inf") else _best(secs, lowest=True)
        return _best(secs)
    if re.search(r"how many|count|number of times", q):
        nums = [_choice_number(c) for c in choices]
        n = sum(1 for s in segs if _overlap(q, s["label"]) > 0)
        if n == 0 or None in nums:
            return None
        return _best([abs(x - n) for x in nums], lowest=True)
    for word, pick in (("first", 0), ("last", -1)):
        if word in q and segs:
            order = segs if pick == 0 else segs[::-1]
            for s in order:
                scores = [_overlap(c, s["label"]) for c in choices]
                if max(scores) > 0:
                    return _best(scores)
            return None
    return answer_sound_events(row, envelopes)


def _transcript(envelopes: dict) -> str:
    return str(((envelopes.get("asr") or {}).get("result") or {}).get("text", ""))


def answer_speech_word(row: dict, envelopes: dict) -> int | None:
    """'which word appears first': earliest position in the transcript; 'how many times does the
    word X appear': count of X; word counts ('count the number of words ...'): the choice nearest
    to the transcript's word count. Otherwise word overlap."""
    q, choices = row["question"], row["choices"]
    tokens = re.findall(r"[a-z']+", _transcript(envelopes).lower())
    if not tokens:
        return None
    if re.search(r"appears first", q, re.I):
        pos = [tokens.index(c.lower()) if c.lower() in tokens else len(tokens) for c in choices]
        return None if min(pos) == len(tokens) else _best(pos, lowest=True)
    m = re.search(r"word '([^']+)' appear", q)
    nums = [_choice_number(c) for c in choices]
    if m and None not in nums:
        n = tokens.count(m.group(1).lower())
        return _best([abs(x - n) for x in nums], lowest=True) if n else None
    if re.search(r"count the number of words", q, re.I) and None not in nums:
        return _best([abs(x - len(tokens)) for x in nums], lowest=True)
    return answer_speech_content(row, envelopes)


def answer_speech_content(row: dict, envelopes: dict) -> int | None:
    """Choice with the largest fraction of its words found in the transcript."""
    said = words(_transcript(envelopes))
    if not said:
        return None
    return _best([len(words(c) & said) / max(1, len(words(c))) for c in row["choices"]])


def answer_speaker_count(row: dict, envelopes: dict) -> int | None:
    """No tool at HEAD reports a speaker count: no evidence."""
    return None


ANSWERERS = {
    "sound_events": answer_sound_events,
    "sound_temporal": answer_sound_temporal,
    "speech_word": answer_speech_word,
    "speech_content": answer_speech_content,
    "speaker_count": answer_speaker_count,
}
