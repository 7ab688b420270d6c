"""Routing against expectations written independently of the routers (not circular).

The questions below were written by hand from general knowledge of what a transcript can and cannot
tell, before looking at what any bundled router outputs, and none is taken from the MMAU table:

- `asr`: the answer is in the *words* spoken (a name, a number, a place, what someone asks for or
  says they will do). A speech-to-text transcript answers these; an audio LLM listening alone often
  mishears them.
- `direct`: the answer is not in any words: music (genre, instrument, tempo feel, mood), sound
  events and acoustic scenes. A transcript of such a clip is empty or noise, so calling ASR only
  costs time and can mislead.

Paralinguistic questions (a speaker's gender, emotion from tone of voice) are left out on purpose:
whether a transcript helps there is an empirical question for the outcome table, not common sense.

Floor: each bundled router (`default`, `fast`) must route at least FLOOR of the set as expected and
get at least CLASS_FLOOR of each class right. Always-direct and always-asr score 0.5 overall and 0 on
one class; a random router scores 0.5 in expectation (P(>= FLOOR) = 0.28% on 48 questions, binomial).

Measured with the bundled routers rebuilt at stop 23 (2026-12-03, `train`'s default: category
mixture heads): `default` 0.79 (asr 16/24, direct 22/24), `fast` 0.73 (asr 16/24, direct 19/24).
The GRPO-head builds before them: 0.81 and 0.625 (the fast one a strict expected failure until
this rebuild). The floor is not lowered to fit a router.
"""
from __future__ import annotations

import math

import pytest

FLOOR = 0.70        # share of all questions routed as expected
CLASS_FLOOR = 0.50  # share of each class routed as expected

ASR = [
    ("What city does the caller say she is flying to tomorrow?", ["Paris", "Rome", "Madrid", "Berlin"]),
    ("What is the phone number the speaker reads out?", ["555-0142", "555-0199", "555-0111", "555-0175"]),
    ("What name does the receptionist give for the doctor?", ["Dr. Patel", "Dr. Nguyen", "Dr. Schmidt", "Dr. Rossi"]),
    ("According to the announcer, which platform does the train to Leeds leave from?", ["Platform 2", "Platform 5", "Platform 7", "Platform 9"]),
    ("What time does the man say the meeting will start?", ["9 am", "10 am", "2 pm", "4 pm"]),
    ("What does the woman ask the waiter to bring?", ["Water", "The bill", "Another menu", "Coffee"]),
    ("Which word does the teacher spell out letter by letter?", ["Necessary", "Rhythm", "Separate", "Embarrass"]),
    ("How much does the shopkeeper say the jacket costs?", ["$20", "$45", "$60", "$95"]),
    ("What is the title of the book the host mentions?", ["Moby Dick", "Dune", "Emma", "Ulysses"]),
    ("What reason does the speaker give for being late?", ["Traffic", "A missed bus", "Overslept", "A flat tyre"]),
    ("Which country does the interviewee say she grew up in?", ["Canada", "Kenya", "Norway", "Chile"]),
    ("What street name does the speaker give as his address?", ["Oak Street", "Maple Avenue", "High Street", "Elm Road"]),
    ("What does the weather forecaster predict for Saturday?", ["Rain", "Snow", "Sunshine", "Fog"]),
    ("In the voicemail, what day does the dentist want to reschedule to?", ["Monday", "Tuesday", "Thursday", "Friday"]),
    ("What product is the radio advert selling?", ["A car", "Insurance", "Toothpaste", "A phone plan"]),
    ("Which team does the sports commentator say has scored?", ["The home team", "The visitors", "Neither team", "Both teams"]),
    ("What instruction does the pilot give to the passengers?", ["Fasten seatbelts", "Stay seated", "Switch off phones", "Open the blinds"]),
    ("What number of guests does the caller book the table for?", ["Two", "Four", "Six", "Eight"]),
    ("What does the speaker say is the password for the wifi?", ["sunflower", "blueberry", "moonlight", "river42"]),
    ("Which language does the lecturer say the word originally comes from?", ["Latin", "Greek", "Arabic", "French"]),
    ("What is the name of the dog the boy talks about?", ["Max", "Bella", "Rocky", "Luna"]),
    ("What year does the narrator say the bridge was built?", ["1889", "1912", "1937", "1965"]),
    ("What does the customer say is wrong with the order?", ["It is cold", "It is late", "It is the wrong size", "Items are missing"]),
    ("Which medicine does the nurse tell the patient to take?", ["Ibuprofen", "Paracetamol", "Aspirin", "Antibiotics"]),
]

DIRECT = [
    ("What genre is the music?", ["Jazz", "Heavy metal", "Reggae", "Classical"]),
    ("Which instrument plays the solo?", ["Saxophone", "Violin", "Electric guitar", "Trumpet"]),
    ("Is the tempo of the song fast or slow?", ["Fast", "Slow"]),
    ("What is the mood of the piece?", ["Joyful", "Melancholic", "Tense", "Calm"]),
    ("Which animal is making the sound?", ["Dog", "Cat", "Cow", "Horse"]),
    ("What is the source of the loud bang?", ["A door slamming", "Fireworks", "Thunder", "A car crash"]),
    ("Where was this recording most likely made?", ["A forest", "A busy street", "A kitchen", "A beach"]),
    ("What kind of weather can be heard?", ["Heavy rain", "Strong wind", "Thunderstorm", "Calm"]),
    ("How many times does the bell ring?", ["Once", "Twice", "Three times", "Four times"]),
    ("Which vehicle passes by in the clip?", ["A motorcycle", "A train", "An airplane", "A truck"]),
    ("Is the music played by a live band or electronically produced?", ["Live band", "Electronic"]),
    ("What is the time signature of the melody?", ["3/4", "4/4", "6/8", "5/4"]),
    ("Which percussion instrument keeps the beat?", ["Drum kit", "Tambourine", "Congas", "Triangle"]),
    ("What household appliance is running?", ["Vacuum cleaner", "Washing machine", "Blender", "Hair dryer"]),
    ("Does the sound get louder or quieter over time?", ["Louder", "Quieter", "Stays the same"]),
    ("What type of bird is singing?", ["Crow", "Owl", "Robin", "Seagull"]),
    ("What is the main chord of the progression?", ["C major", "A minor", "G major", "E minor"]),
    ("Which sound occurs first, the dog barking or the car horn?", ["Dog barking", "Car horn"]),
    ("What style of dance would fit this music?", ["Waltz", "Tango", "Salsa", "Breakdance"]),
    ("What is the texture of the sound: a single tone or many overlapping tones?", ["Single tone", "Overlapping tones"]),
    ("Is the water sound from a stream, the sea or a tap?", ["Stream", "Sea waves", "Running tap"]),
    ("What is the pitch of the whistle compared with the siren?", ["Higher", "Lower", "The same"]),
    ("Which string instrument accompanies the piano?", ["Cello", "Harp", "Banjo", "Double bass"]),
    ("What machine is heard in the workshop?", ["A drill", "A saw", "A hammer", "A sander"]),
]


def _binomial_tail(n: int, k: int) -> float:
    """P(X >= k) for X ~ Binomial(n, 1/2): a router that flips a coin per question."""
    return sum(math.comb(n, i) for i in range(k, n + 1)) / 2 ** n


def test_the_floor_separates_a_sensible_router_from_trivial_ones():
    n = len(ASR) + len(DIRECT)
    assert len(ASR) == len(DIRECT)  # balanced: always-one-action scores exactly 0.5 < FLOOR
    assert _binomial_tail(n, math.ceil(FLOOR * n)) < 0.005
    assert not {q for q, _ in ASR} & {q for q, _ in DIRECT}


def _bundled_table_questions() -> set[str]:
    import json
    from pathlib import Path

    from textrouter.table import BUNDLED_TABLE

    return {json.loads(line)["question"].strip().lower()
            for line in Path(BUNDLED_TABLE).read_text().splitlines() if line.strip()}


def test_no_question_is_copied_from_the_bundled_table():
    table = _bundled_table_questions()
    assert not {q.lower() for q, _ in ASR + DIRECT} & table


@pytest.mark.parametrize("router_name", ["default", "fast"])
def test_bundled_router_routes_hand_written_questions_as_expected(router_name):
    import textrouter

    router = textrouter.load_router(router_name)
    assert set(router.actions) >= {"direct", "asr"}
    items = [{"question": q, "choices": c} for q, c in ASR + DIRECT]
    expected = ["asr"] * len(ASR) + ["direct"] * len(DIRECT)
    got = [d["action"] for d in router.route_batch(items)]
    # a router with more tools may send a music question to `chords`: that is not `asr`, and not
    # wrong for the direct class's purpose here (no transcript asked for); count it as expected
    hits = [g == e or (e == "direct" and g not in ("asr",)) for g, e in zip(got, expected)]
    asr_recall = sum(hits[:len(ASR)]) / len(ASR)
    direct_recall = sum(hits[len(ASR):]) / len(DIRECT)
    acc = sum(hits) / len(hits)
    misses = [q for (q, _), h in zip(ASR + DIRECT, hits) if not h]
    assert acc >= FLOOR and asr_recall >= CLASS_FLOOR and direct_recall >= CLASS_FLOOR, (
        f"{router_name}: {acc:.2f} overall (asr {asr_recall:.2f}, direct {direct_recall:.2f}); "
        f"misrouted: {misses}")
