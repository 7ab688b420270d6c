"""Deterministic tool-alone answerers for the music groups of bench/bench_tools_real.py.

Every answerer has the signature `answer(row: dict, envelopes: dict[str, dict]) -> int | None`:
`row` is one line of the bundled outcome table (question, choices, answer, ...), `envelopes` maps a
tool name to its `toolcache.run` envelope for the row's clip. It returns the index of the choice the
tool output supports, or None when the output supports none of them or two equally (a tie counts as
wrong). They measure the evidence, not a reasoner: no world knowledge beyond fixed tables written
here (tempo-marking BPM ranges, scale degrees).

Chord names come in two spellings in MMAU: Harte-style ("G#:7(13,7,*5)/1", "D#:(1,5)/1") and pop
style ("Cm7b5", "F#m", "Eb/G", "G major", "E minor seventh"). `parse_chord` maps both to (root pitch
class, quality); `chord_pitch_classes` to the set of pitch classes the name stands for, which is
what chords are compared by (`chord_similarity`, `same_chord`): "Em7", "E minor seventh" and
"E:min7" are one chord, and a tool label matches a choice whatever its spelling.
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
    for pat, qual in [(r"^(half[- ]diminished|m7b5|min7b5|ø)", "hdim7"), (r"^diminished sevent", "dim7"),
                      (r"^diminished", "dim"), (r"^augmented", "aug"), (r"^minor (seventh|7)", "min7"),
                      (r"^major (seventh|7)", "maj7"), (r"^(dominant )?(seventh|7th)", "7"),
                      (r"^minor (sixth|6)", "min6"), (r"^(major )?(sixth|6th)", "6"),
                      (r"^suspended (second|2)", "sus2"), (r"^suspended", "sus4"), (r"^add", "maj"),
                      (r"^(dim7|°7|o7)", "dim7"), (r"^(dim|°|o$)", "dim"),
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
    if rest_s and not re.match(r"^(m|min|maj|major|minor|dim|aug|sus|add|half|dominant|seventh|sixth|\+|°|ø|-|[0-9]|/|\(|$)",
                               rest_s, re.I):
        return None                            # "Bass guitar", "Dominant" ... start with a note letter
    words = r"(major|minor|dominant|diminished|augmented|suspended|half-diminished)"
    named = words + r"(\s+(seventh|sixth|ninth|second|fourth|7th|6th|7|6))?\s*(chord)?$"
    if re.match(words + r"\s+\w", rest_s, re.I) and not re.match(named, rest_s, re.I):
        return None                            # "E minor key", "G major scale": not a chord name
    return root, _pop_quality(rest_s)


# Chord tones in semitones above the root, per quality of `parse_chord` (pitch-class sets are what
# `chord_pitch_classes` compares, so "Em7", "E minor seventh" and "E:min7" are the same chord).
QUALITY_INTERVALS = {"maj": (0, 4, 7), "min": (0, 3, 7), "7": (0, 4, 7, 10), "maj7": (0, 4, 7, 11),
                     "min7": (0, 3, 7, 10), "6": (0, 4, 7, 9), "min6": (0, 3, 7, 9), "9": (0, 4, 7, 10, 2),
                     "minmaj7": (0, 3, 7, 11), "dim": (0, 3, 6), "dim7": (0, 3, 6, 9), "hdim7": (0, 3, 6, 10),
                     "aug": (0, 4, 8), "sus2": (0, 2, 7), "sus4": (0, 5, 7), "5": (0, 7)}
# Harte (2005) shorthands and degrees, in semitones above the root.
HARTE_SHORTHAND = {"maj": (0, 4, 7), "min": (0, 3, 7), "dim": (0, 3, 6), "aug": (0, 4, 8),
                   "maj7": (0, 4, 7, 11), "min7": (0, 3, 7, 10), "7": (0, 4, 7, 10), "dim7": (0, 3, 6, 9),
                   "hdim7": (0, 3, 6, 10), "minmaj7": (0, 3, 7, 11), "maj6": (0, 4, 7, 9), "min6": (0, 3, 7, 9),
                   "9": (0, 4, 7, 10, 2), "maj9": (0, 4, 7, 11, 2), "min9": (0, 3, 7, 10, 2),
                   "11": (0, 4, 7, 10, 2, 5), "min11": (0, 3, 7, 10, 2, 5), "13": (0, 4, 7, 10, 2, 9),
                   "maj13": (0, 4, 7, 11, 2, 9), "min13": (0, 3, 7, 10, 2, 9), "sus2": (0, 2, 7),
                   "sus4": (0, 5, 7), "1": (0,), "5": (0, 7)}
_DEGREE = {"1": 0, "2": 2, "3": 4, "4": 5, "5": 7, "6": 9, "7": 11, "8": 0, "9": 2, "10": 4, "11": 5,
           "12": 7, "13": 9}
# Two chords "match" (one can stand for the other in a tool output) when chord_similarity >= 3/4:
# the same pitch classes (any root: A:min7 = C6), or the same root and one is the other plus one
# note (C in Cmaj7 is 3/4; two triads sharing two notes are 1/2, two 7th chords sharing three 3/5).
MATCH = 0.75


def _degree(text: str) -> int | None:
    """Semitones of a Harte degree ('b7', '#11', '5') above the root, or None."""
    m = re.fullmatch(r"\s*([b#]*)(\d+)\s*", text)
    if not m or m.group(2) not in _DEGREE:
        return None
    return (_DEGREE[m.group(2)] + m.group(1).count("#") - m.group(1).count("b")) % 12


def _harte_pcs(root: int, rest: str) -> set[int]:
    """Pitch classes of the Harte chord ROOT:shorthand(degrees, *removed)/bass (rest after ':')."""
    bass = None
    if "/" in rest:
        rest, bass = rest.split("/", 1)
    m = re.match(r"([a-z0-9]*)(?:\((.*)\))?", rest)
    short, degs = m.group(1), m.group(2)
    ivs = set(HARTE_SHORTHAND.get(short, (0,) if degs is not None and not short else HARTE_SHORTHAND["maj"]))
    for d in (degs or "").split(","):
        d = d.strip()
        if d.startswith("*"):
            v = _degree(d[1:])
            ivs.discard(v)
        elif (v := _degree(d)) is not None:
            ivs.add(v)
    b = _degree(bass) if bass else None
    if b is not None:
        ivs.add(b)                             # the bass note sounds too
    return {(root + iv) % 12 for iv in ivs}


def _pop_pcs(root: int, rest: str) -> set[int]:
    """Pitch classes of a pop chord after its root: quality, extensions (6, 9, 11, 13, add9, b5, #5)
    and an optional /bass note."""
    rest = rest.strip()
    bass = None
    if "/" in rest:
        rest, b = rest.split("/", 1)
        bass = _root(b.strip())[0]
    q = _pop_quality(rest)
    ivs = set(QUALITY_INTERVALS[q])
    low = rest.lower()
    for token, iv in (("add9", 2), ("add2", 2), ("add4", 5), ("add11", 5), ("13", 9), ("11", 5)):
        if token in low:
            ivs.add(iv)
            if token in ("13", "11") and q in ("7", "min7", "maj7"):
                ivs.add(2)                     # an 11th/13th chord implies the 9th
    if re.search(r"(?<![a-z])9|ninth", low) and "add" not in low:
        ivs.add(2)
        if q in ("maj", "min"):               # C9 / Cm9 carry the 7th
            ivs.add(10)
    if re.search(r"b5|-5|flat five", low) and q not in ("hdim7", "dim", "dim7"):
        ivs.discard(7), ivs.add(6)
    if re.search(r"#5|\+5", low) and q != "aug":
        ivs.discard(7), ivs.add(8)
    if bass is not None:
        return {(root + iv) % 12 for iv in ivs} | {bass}
    return {(root + iv) % 12 for iv in ivs}


def chord_pitch_classes(text) -> frozenset | None:
    """The pitch classes (0 = C) a chord name stands for, from either spelling: Harte
    ("G#:7(11,*5)/1", "F#:(5,2,b7,4)/5") or pop ("Cm7b5", "Eb/G", "E minor seventh", "Dadd9");
    None if `text` names no chord. A parsed (root, quality) tuple is accepted as well."""
    if isinstance(text, tuple):
        return frozenset((text[0] + iv) % 12 for iv in QUALITY_INTERVALS.get(text[1], (0, 4, 7)))
    if parse_chord(text) is None:
        return None
    text = str(text).strip().strip("'\"")
    root, rest = _root(text)
    if rest.startswith(":"):
        return frozenset(_harte_pcs(root, rest[1:]))
    return frozenset(_pop_pcs(root, rest))


def same_chord(a, b) -> bool:
    """True when two chord names (any spelling) have the same pitch classes and root."""
    pa, pb = chord_pitch_classes(a), chord_pitch_classes(b)
    ra, rb = parse_chord(a) if not isinstance(a, tuple) else a, parse_chord(b) if not isinstance(b, tuple) else b
    return pa is not None and pa == pb and ra is not None and rb is not None and ra[0] == rb[0]


def _root_of(c) -> int | None:
    p = c if isinstance(c, tuple) else parse_chord(c)
    return p[0] if p else None


def chord_similarity(a, b) -> float:
    """Overlap of two chords (names in any spelling, or parsed (root, quality) tuples): the Jaccard
    index of their pitch-class sets, halved when the roots differ unless the notes are identical
    (A:min7 = C6 keeps 1). Same root: 1 same notes, 3/4 a triad and its 7th chord (C vs Cmaj7),
    1/2 C vs Csus2; other root: C vs Am 1/4, nothing in common 0; no chord 0."""
    pa = chord_pitch_classes(a) if a is not None else None
    pb = chord_pitch_classes(b) if b is not None else None
    if not pa or not pb:
        return 0.0
    j = len(pa & pb) / len(pa | pb)
    return j if j == 1.0 or _root_of(a) == _root_of(b) else j / 2


def _segments(envelopes: dict) -> list[dict]:
    env = envelopes.get("chords") or {}
    return [s for s in (env.get("result") or {}).get("segments", []) if s.get("label") not in (None, "N")]


def _seconds_of(chord, segs) -> float:
    """Seconds of output segments, each weighted by its pitch-class overlap with `chord`."""
    return sum(chord_similarity(chord, s["label"]) * (s["end"] - s["start"]) for s in segs)


def _matches(chord, label: str) -> bool:
    return chord_similarity(chord, label) >= MATCH


def _runs_of(chord, segs) -> list[tuple[float, float]]:
    """(start, end) of each run of contiguous output segments that match `chord` (a chord that the
    tool splits into C:maj / C:maj7 / C:maj pieces counts as one stretch)."""
    runs: list[list[float]] = []
    for s in segs:
        if not _matches(chord, s["label"]):
            continue
        if runs and abs(runs[-1][1] - s["start"]) < 1e-6:
            runs[-1][1] = s["end"]
        else:
            runs.append([s["start"], s["end"]])
    return [(a, b) for a, b in runs]


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


def _seconds(text: str) -> float | None:
    """A duration choice in seconds ("2.14 seconds", "2.14", "2.14 minutes" = 128.4)."""
    n = _number(text)
    return None if n is None else n * 60.0 if re.search(r"\bmin(ute)?s?\b", str(text), re.I) else n


def _question_chord(q: str) -> str | None:
    """The chord named in the question ('the chord G:7/1', "chord 'F:min7/1'", 'a G# major chord',
    "root 'C#'"), as its text."""
    for pat in [r"([A-G][#b]?:[^\s'\"?,]+)", r"chord\s+'?([A-G][#b]?[^\s'\"?,]*)", r"(?:the|a)\s+([A-G][#b]?\S*)\s+chord",
                r"\b([A-G][#b]?\s+(?:major|minor))\b", r"root\s+'([A-G][#b]?)'"]:
        m = re.search(pat, q)
        if m and parse_chord(m.group(1)) is not None:
            return m.group(1)
    return None


def _in_span(segs: list[dict], a: float, b: float) -> list[dict]:
    return [dict(s, start=max(s["start"], a), end=min(s["end"], b)) for s in segs if s["end"] > a and s["start"] < b]


def answer_chords(row: dict, envelopes: dict) -> int | None:
    """Chord questions. Chords are compared as pitch-class sets (`chord_similarity`, any spelling);
    an output segment *matches* a chord when the overlap is >= MATCH (same notes, or one chord is the
    other plus one note). Rules, first match wins:
    1. "from/between A to/and B" + chord choices: the choice with the most overlap-weighted seconds
       of output inside [A, B].
    2. time-interval choices ("0.00 - 2.18"): the interval with the largest overlap-weighted share
       of the question's chord.
    3. "how long / duration" + number choices (seconds; "minutes" converted): total matching seconds
       if the question says "total", else the longest run of contiguous matching segments; the
       nearest choice.
    4. "X to Y" choices: the choice whose transition X -> Y appears in the output.
    5. "played first": the choice whose earliest matching segment starts first.
    6. "after" + chord choices: the chord after the first run matching the question's chord; the
       choice with the most overlap with it.
    7. "which chord is a <quality> chord" (major seventh, diminished, minor, ...): among the choices
       spelled with that quality, the one whose root the output has for the most time (any quality).
    8. otherwise, chord choices: the choice with most overlap-weighted seconds in the output.
    Ties and no evidence give None.
    """
    q, choices = row["question"], row["choices"]
    segs = _segments(envelopes)
    if not segs:
        return None
    parsed = [parse_chord(c) for c in choices]
    chord_choices = sum(p is not None for p in parsed) >= 2
    span = _interval(q)
    if span and chord_choices:
        inside = _in_span(segs, *span)
        return _unique_best([_seconds_of(c, inside) if p else None for c, p in zip(choices, parsed)])
    intervals = [_interval(c) for c in choices]
    target = _question_chord(q)
    if all(intervals) and target:
        return _unique_best([_seconds_of(target, _in_span(segs, a, b)) / max(1e-6, b - a) for a, b in intervals])
    if re.search(r"how long|duration", q, re.I) and target and not chord_choices:
        nums = [_seconds(c) for c in choices]
        runs = _runs_of(target, segs)
        if not runs or None in nums:
            return None
        lengths = [b - a for a, b in runs]
        est = sum(lengths) if re.search(r"total", q, re.I) else max(lengths)
        return _unique_best([abs(n - est) for n in nums], lowest=True)
    pairs = [_pair(c) for c in choices]
    if all(pairs):
        # "X to Y" choices: 1 if the output has X followed by Y (same-root neighbours merged)
        labels = _root_runs(segs)
        return _unique_best([1.0 if any(_matches(a, labels[i]) and _matches(b, labels[i + 1])
                                        for i in range(len(labels) - 1)) else 0.0 for a, b in pairs])
    if not chord_choices:
        return None
    if re.search(r"played first|first chord", q, re.I):
        starts = [min([s["start"] for s in segs if _matches(c, s["label"])] or [1e9]) if p else None
                  for c, p in zip(choices, parsed)]
        if all(v is None or v >= 1e9 for v in starts):
            return None
        return _unique_best(starts, lowest=True)
    if re.search(r"\bafter\b", q, re.I) and target:
        # the first output chord with another root after the first run of the question's chord
        labels = _root_runs(segs)
        for i, lab in enumerate(labels[:-1]):
            if _matches(target, lab):
                return _unique_best([chord_similarity(c, labels[i + 1]) if p else None for c, p in zip(choices, parsed)])
        return None
    asked = _asked_quality(q)
    if asked:
        # "which chord is a <quality> chord": among choices spelled with that quality, the one whose
        # root the output has for the most time, any quality (the tool's thirds and sevenths are its
        # weakest part: a minor chord under a sung melody often reads as major)
        return _unique_best([sum(s["end"] - s["start"] for s in segs if _root_of(s["label"]) == p[0])
                             if p and FAMILY_OF_ASKED[asked](p[1]) else None for p in parsed])
    return _unique_best([_seconds_of(c, segs) if p else None for c, p in zip(choices, parsed)])


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
    return (m.group(1), m.group(2)) if parse_chord(m.group(1)) and parse_chord(m.group(2)) else None


def _root_runs(segs: list[dict]) -> list[str]:
    """Output labels with consecutive same-root segments merged (the first label of each run)."""
    out: list[str] = []
    last = None
    for s in segs:
        c = parse_chord(s["label"])
        if c and c[0] != last:
            out.append(s["label"])
            last = c[0]
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
        target = parse_chord(_question_chord(q) or "") or _first_chord_in(q)
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
