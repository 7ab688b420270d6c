"""Deterministic tool-alone answerers for the music groups of bench/bench_tools_real.py.

Every answerer has the signature `answer(row: dict, envelopes: dict[str, dict]) -> int | None`:
`row` is one line of the bundled outcome table (question, choices, answer, ...), `envelopes` maps a
tool name to its `toolcache.run` envelope for the row's clip. It returns the index of the choice the
tool output supports, or None when the output supports none of them or two equally (a tie counts as
wrong). They measure the evidence, not a reasoner: no world knowledge beyond fixed tables written
here (tempo-marking BPM ranges, scale degrees).

Chord names come in two spellings in MMAU: Harte-style ("G#:7(13,7,*5)/1", "D#:(1,5)/1") and pop
style ("Cm7b5", "F#m", "Eb/G", "G major"). `parse_chord` maps both to (root pitch class, quality).
"""
from __future__ import annotations

import math
import re

PITCH_CLASSES = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]
_FLATS = {"DB": "C#", "EB": "D#", "GB": "F#", "AB": "G#", "BB": "A#", "CB": "B", "FB": "E", "E#": "F", "B#": "C"}
# quality -> triad family (what a triad-only tool can still confirm)
FAMILY = {"maj": "maj", "7": "maj", "maj7": "maj", "6": "maj", "9": "maj", "min": "min", "min7": "min",
          "min6": "min", "minmaj7": "min", "dim": "dim", "dim7": "dim", "hdim7": "dim", "aug": "aug",
          "sus2": "sus", "sus4": "sus", "5": "sus"}

# --------------------------------------------------------------------------------------- chords


def _root(text: str) -> tuple[int | None, str]:
    m = re.match(r"\s*([A-Ga-g])([#b♯♭]?)", text)
    if not m:
        return None, text
    name = (m.group(1).upper() + m.group(2).replace("♯", "#").replace("♭", "b"))
    name = _FLATS.get(name.upper(), name) if len(name) == 2 and name[1] == "b" or name in ("E#", "B#") else name
    if name not in PITCH_CLASSES:
        return None, text
    return PITCH_CLASSES.index(name), text[m.end():]


def _harte_quality(q: str) -> str:
    q = q.split("/")[0]
    if q.startswith("("):                      # interval list: (1,5) power chord, (1,2,4) ...
        ivs = set(q.strip("()").split(","))
        if "3" in ivs:
            return "maj"
        if "b3" in ivs:
            return "min"
        return "5" if ivs <= {"1", "5"} else "sus4" if "4" in ivs else "sus2" if "2" in ivs else "5"
    base = re.match(r"[a-z0-9]*", q).group(0)
    return {"": "maj", "maj": "maj", "min": "min", "7": "7", "maj7": "maj7", "min7": "min7", "dim": "dim",
            "dim7": "dim7", "hdim7": "hdim7", "aug": "aug", "sus2": "sus2", "sus4": "sus4", "maj6": "6",
            "min6": "min6", "9": "7", "maj9": "maj7", "min9": "min7", "minmaj7": "minmaj7", "11": "7",
            "13": "7", "1": "5", "5": "5"}.get(base, "maj")


def _pop_quality(q: str) -> str:
    q = q.split("/")[0].strip().lower()
    for pat, qual in [(r"^(m7b5|min7b5|ø)", "hdim7"), (r"^(dim7|°7|o7)", "dim7"), (r"^(dim|°|o$)", "dim"),
                      (r"^(aug|\+)", "aug"), (r"^(maj7|ma7|m7\+|δ)", "maj7"), (r"^(m7|min7|-7)", "min7"),
                      (r"^(m6|min6)", "min6"), (r"^(minor|min|m(?!aj)|-)", "min"), (r"^sus2", "sus2"),
                      (r"^sus", "sus4"), (r"^(7|9|11|13)", "7"), (r"^6", "6"), (r"^5", "5"),
                      (r"^(major|maj)?", "maj")]:
        if re.match(pat, q):
            return qual
    return "maj"


def parse_chord(text: str) -> tuple[int, str] | None:
    """(root pitch class 0-11, quality) of a chord name, or None if `text` names no chord."""
    text = str(text).strip().strip("'\"")
    if not text or text.upper() in ("N", "X"):
        return None
    root, rest = _root(text)
    if root is None:
        return None
    if rest.startswith(":"):
        return root, _harte_quality(rest[1:])
    rest_s = rest.strip()
    if rest_s and not re.match(r"^(m|min|maj|major|minor|dim|aug|sus|\+|°|ø|-|[0-9]|/|\(|$)", rest_s, re.I):
        return None                            # "Bass guitar", "Dominant" ... start with a note letter
    if re.match(r"^(major|minor)\s+\w", rest_s, re.I) and not re.match(r"^(major|minor)\s*(chord)?$", rest_s, re.I):
        return None
    return root, _pop_quality(rest_s)


def chord_similarity(a: tuple[int, str] | None, b: tuple[int, str] | None) -> float:
    """1 same chord, 0.75 same root + triad family, 0.5 same root with a no-third (sus/power) side,
    0.25 same root otherwise, 0 different roots or no chord."""
    if a is None or b is None or a[0] != b[0]:
        return 0.0
    if a[1] == b[1]:
        return 1.0
    fa, fb = FAMILY.get(a[1], "maj"), FAMILY.get(b[1], "maj")
    if fa == fb:
        return 0.75
    return 0.5 if "sus" in (fa, fb) else 0.25


def _segments(envelopes: dict) -> list[dict]:
    env = envelopes.get("chords") or {}
    return [s for s in (env.get("result") or {}).get("segments", []) if s.get("label") not in (None, "N")]


def _seconds_of(chord, segs) -> float:
    return sum(chord_similarity(chord, parse_chord(s["label"])) * (s["end"] - s["start"]) for s in segs)


def _unique_best(scores: list[float | None], lowest: bool = False) -> int | None:
    vals = [(-s if lowest else s) for s in scores if s is not None]
    if not vals:
        return None
    best = max(vals)
    if lowest is False and best <= 0:
        return None
    idx = [i for i, s in enumerate(scores) if s is not None and (-s if lowest else s) == best]
    return idx[0] if len(idx) == 1 else None


_NUM = r"(\d+(?:\.\d+)?)"


def _interval(text: str) -> tuple[float, float] | None:
    m = re.search(_NUM + r"\s*(?:-|to|and|–)\s*" + _NUM, text)
    return (float(m.group(1)), float(m.group(2))) if m else None


def _number(text: str) -> float | None:
    m = re.search(_NUM, str(text))
    return float(m.group(1)) if m else None


def _question_chord(q: str) -> tuple[int, str] | None:
    """The chord named in the question ('the chord G:7/1', "chord 'F:min7/1'", 'a G# major chord')."""
    for pat in [r"([A-G][#b]?:[^\s'\"?,]+)", r"chord\s+'?([A-G][#b]?[^\s'\"?,]*)", r"(?:the|a)\s+([A-G][#b]?\S*)\s+chord",
                r"\b([A-G][#b]?\s+(?:major|minor))\b", r"root\s+'([A-G][#b]?)'"]:
        m = re.search(pat, q)
        if m:
            c = parse_chord(m.group(1))
            if c is not None:
                return c
    return None


def answer_chords(row: dict, envelopes: dict) -> int | None:
    """Chord questions. Rules, first match wins:
    1. "from/between A to/and B" + chord choices: the choice most similar (time-weighted) to the
       output's labels inside [A, B].
    2. time-interval choices ("0.00 - 2.18"): the interval with most seconds of the question's chord.
    3. "how long / duration" + number choices: total seconds of the question's chord if "total",
       else its longest segment; the nearest choice.
    4. "X to Y" choices: the choice whose transition X -> Y appears in the output.
    5. "played first": the choice whose earliest matching segment starts first.
    6. "after" + chord choices: the first chord with another root after the question's chord.
    7. "which chord is a <quality> chord" (major seventh, diminished, minor, ...): among the choices
       spelled with that quality, the one whose root the output labels with it for the most time.
    8. otherwise, chord choices: the choice with most (similarity-weighted) seconds in the output.
    """
    q, choices = row["question"], row["choices"]
    segs = _segments(envelopes)
    if not segs:
        return None
    parsed = [parse_chord(c) for c in choices]
    chord_choices = sum(p is not None for p in parsed) >= 2
    span = _interval(q)
    if span and chord_choices:
        a, b = span
        inside = [dict(s, start=max(s["start"], a), end=min(s["end"], b)) for s in segs if s["end"] > a and s["start"] < b]
        return _unique_best([_seconds_of(p, inside) if p else None for p in parsed])
    intervals = [_interval(c) for c in choices]
    target = _question_chord(q)
    if all(intervals) and target:
        scores = []
        for a, b in intervals:
            inside = [dict(s, start=max(s["start"], a), end=min(s["end"], b)) for s in segs if s["end"] > a and s["start"] < b]
            scores.append(_seconds_of(target, inside) / max(1e-6, b - a))
        return _unique_best(scores)
    if re.search(r"how long|duration", q, re.I) and target and not chord_choices:
        nums = [_number(c) for c in choices]
        matched = [s["end"] - s["start"] for s in segs if chord_similarity(target, parse_chord(s["label"])) >= 0.75]
        if not matched or None in nums:
            return None
        est = sum(matched) if re.search(r"total", q, re.I) else max(matched)
        return _unique_best([abs(n - est) for n in nums], lowest=True)
    pairs = [_pair(c) for c in choices]
    if all(pairs):
        # "X to Y" choices: 1 if the output has X followed by Y (same-root neighbours merged)
        roots = _root_runs(segs)
        return _unique_best([1.0 if any(chord_similarity(a, roots[i]) >= 0.75 and chord_similarity(b, roots[i + 1]) >= 0.75
                                        for i in range(len(roots) - 1)) else 0.0 for a, b in pairs])
    if not chord_choices:
        return None
    if re.search(r"played first|first chord", q, re.I):
        # the choice whose earliest matching segment starts first
        starts = [min([s["start"] for s in segs if chord_similarity(p, parse_chord(s["label"])) >= 0.75] or [1e9])
                  if p else None for p in parsed]
        if all(v is None or v >= 1e9 for v in starts):
            return None
        return _unique_best(starts, lowest=True)
    if re.search(r"\bafter\b", q, re.I) and target:
        # the first chord with another root after the first segment of the question's chord
        roots = _root_runs(segs)
        for i, c in enumerate(roots[:-1]):
            if chord_similarity(target, c) >= 0.75:
                return _unique_best([chord_similarity(p, roots[i + 1]) if p else None for p in parsed])
        return None
    asked = _asked_quality(q)
    if asked:
        # "which chord is a <quality> chord": among choices spelled with that quality, the one the
        # output labels with that quality (same root) for the most time
        return _unique_best([sum(s["end"] - s["start"] for s in segs
                                 if (c := parse_chord(s["label"])) and c[0] == p[0] and FAMILY_OF_ASKED[asked](c[1]))
                             if p and FAMILY_OF_ASKED[asked](p[1]) else None for p in parsed])
    return _unique_best([_seconds_of(p, segs) if p else None for p in parsed])


FAMILY_OF_ASKED = {
    "maj7": lambda q: q == "maj7",
    "7": lambda q: q == "7",
    "min7": lambda q: q == "min7",
    "dim": lambda q: FAMILY.get(q) == "dim",
    "aug": lambda q: q == "aug",
    "sus": lambda q: FAMILY.get(q) == "sus",
    "min": lambda q: FAMILY.get(q) == "min",
    "maj": lambda q: FAMILY.get(q) == "maj",
}


def _asked_quality(q: str) -> str | None:
    """The chord quality a 'which chord is a ... chord' question asks for, if any."""
    ql = q.lower()
    for pat, qual in [(r"major seventh|maj7", "maj7"), (r"diminished|half-diminished|m7b5", "dim"),
                      (r"minor seventh|min7", "min7"), (r"dominant seventh", "7"), (r"augmented", "aug"),
                      (r"suspended|sus[24]?\b", "sus"), (r"as a minor chord|is a minor chord|minor chord in", "min"),
                      (r"as a major chord|is a major chord|major chord in", "maj")]:
        if re.search(pat, ql) and re.search(r"which chord|what chord", ql):
            return qual
    return None


def _pair(text: str) -> tuple | None:
    m = re.fullmatch(r"\s*(\S+)\s+(?:to|->|then)\s+(\S+)\s*", str(text))
    if not m:
        return None
    a, b = parse_chord(m.group(1)), parse_chord(m.group(2))
    return (a, b) if a and b else None


def _root_runs(segs: list[dict]) -> list[tuple[int, str]]:
    """Output chords with consecutive same-root segments merged (the first label of each run)."""
    out: list[tuple[int, str]] = []
    for s in segs:
        c = parse_chord(s["label"])
        if c and (not out or out[-1][0] != c[0]):
            out.append(c)
    return out


# ------------------------------------------------------------------------------------------ key
ROLE_DEGREES = {"tonic": (0,), "supertonic": (2,), "mediant": (3, 4), "subdominant": (5,), "dominant": (7,),
                "submediant": (8, 9), "leading tone": (11,), "leading-tone": (11,), "subtonic": (10,)}


def estimated_key(envelopes: dict) -> tuple[int, str] | None:
    """(tonic pitch class, 'major'|'minor') from the chords or audio_features output, if it has one."""
    for tool in ("chords", "audio_features"):
        res = (envelopes.get(tool) or {}).get("result") or {}
        key = res.get("key") or (res.get("summary") or {}).get("key")
        if isinstance(key, dict) and key.get("tonic"):
            root, _ = _root(str(key["tonic"]))
            if root is not None:
                return root, str(key.get("mode", "major"))
    return None


def answer_key(row: dict, envelopes: dict) -> int | None:
    """Key questions, answered from the estimated key (tonic + mode) in the tool output only:
    - role choices (Tonic, Dominant, ...): the role of the question's chord root in the estimated key;
    - chord choices + "tonic"/"dominant"/"subdominant" in the question: the choice whose root is that
      degree of the estimated key;
    - key-name choices ("E minor"): the choice equal to the estimated key (mode must match).
    """
    key = estimated_key(envelopes)
    if key is None:
        return None
    tonic, mode = key
    q, choices = row["question"], row["choices"]
    roles = [ROLE_DEGREES.get(c.strip().lower()) for c in choices]
    if all(r is not None for r in roles):
        target = _question_chord(q) or _first_chord_in(q)
        if target is None:
            return None
        deg = (target[0] - tonic) % 12
        return _unique_best([1.0 if deg in r else 0.0 for r in roles])
    for word in ("subdominant", "dominant", "tonic"):
        if re.search(rf"\b{word}\b", q, re.I):
            want = (tonic + ROLE_DEGREES[word][0]) % 12
            parsed = [parse_chord(c) for c in choices]
            return _unique_best([1.0 if p and p[0] == want else 0.0 for p in parsed])
    names = [re.match(r"\s*([A-G][#b]?)\s*(major|minor)", c, re.I) for c in choices]
    if all(names):
        return _unique_best([1.0 if _root(m.group(1))[0] == tonic and m.group(2).lower() == mode else 0.0
                             for m in names])
    return None


def _first_chord_in(q: str) -> tuple[int, str] | None:
    for tok in re.findall(r"\b[A-G][#b]?(?:m|maj|min|dim|aug|sus)?\d*(?:/[A-G][#b]?)?(?=[\s,'?]|$)", q):
        c = parse_chord(tok)
        if c is not None:
            return c
    return None


# ---------------------------------------------------------------------------------------- tempo
# Italian markings -> a representative BPM (centre of the usual metronome range).
MARKINGS = {"grave": 40, "largo": 50, "larghetto": 63, "lento": 55, "adagio": 70, "adagietto": 75,
            "andante": 90, "andantino": 95, "moderato": 110, "allegretto": 115, "allegro": 135,
            "vivace": 160, "vivacissimo": 170, "presto": 180, "prestissimo": 200}
DESCRIPTORS = {"slow": 70, "moderate": 105, "medium": 105, "fast": 145, "quick": 145, "upbeat": 135}


def _tempo(envelopes: dict) -> float | None:
    res = (envelopes.get("audio_features") or {}).get("result") or {}
    bpm = res.get("tempo_bpm")
    return float(bpm) if bpm else None


def parse_bpm_choice(text: str) -> float | None:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(?:bpm|beats per minute)?\.?\s*", str(text), re.I)
    return float(m.group(1)) if m else None


def answer_tempo_bpm(row: dict, envelopes: dict) -> int | None:
    """With `tempo_candidates` ({bpm, salience}): the choice with the highest support
    max over candidates of salience * exp(-0.5 (ln(choice / candidate) / 0.04)^2) (a candidate
    supports choices within a few %); if no choice gets support >= 0.05, or without candidates:
    the choice nearest (in log ratio) to tempo_bpm."""
    bpm = _tempo(envelopes)
    nums = [parse_bpm_choice(c) for c in row["choices"]]
    if bpm is None or None in nums:
        return None
    cands = ((envelopes.get("audio_features") or {}).get("result") or {}).get("tempo_candidates") or []
    if cands:
        support = [max(c["salience"] * math.exp(-0.5 * (math.log(n / c["bpm"]) / 0.04) ** 2) for c in cands)
                   for n in nums]
        if max(support) >= 0.05:
            return _unique_best(support)
    return _unique_best([abs(math.log(n / bpm)) for n in nums], lowest=True)


def marking_bpm(text: str) -> float | None:
    words = re.findall(r"[a-z]+", str(text).lower())
    for w in words:
        if w in MARKINGS:
            return float(MARKINGS[w])
    for w in words:
        if w in DESCRIPTORS:
            return float(DESCRIPTORS[w])
    return None


def answer_tempo_marking(row: dict, envelopes: dict) -> int | None:
    """The marking/descriptor whose representative BPM is nearest (log ratio) to tempo_bpm;
    choices with no tempo word ("Variable and unpredictable") are never picked."""
    bpm = _tempo(envelopes)
    if bpm is None:
        return None
    refs = [marking_bpm(c) for c in row["choices"]]
    return _unique_best([abs(math.log(r / bpm)) if r else None for r in refs], lowest=True)


def tempo_metrics(row: dict, envelopes: dict) -> dict:
    """Within 8 % of the labelled BPM, and the same allowing a factor of 2 or 3 (MIREX "accuracy 2")."""
    bpm, truth = _tempo(envelopes), parse_bpm_choice(row["answer"])
    if bpm is None or truth is None:
        return {"within_8pct": False, "octave_tolerant_8pct": False}
    near = lambda x: abs(x / truth - 1.0) <= 0.08  # noqa: E731
    return {"within_8pct": near(bpm),
            "octave_tolerant_8pct": any(near(bpm * f) for f in (1.0, 0.5, 2.0, 1 / 3, 3.0))}
