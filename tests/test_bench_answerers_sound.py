"""The real-audio benchmark's sound_events answerer (bench/answerers_sound_speech.py) and the
sound_events v3 output it reads: stemming that lets choice words meet label words, the ontology
aliases for hypernyms AudioSet lacks, the "source of the X" focus rule, ties = no answer, and the
per-event peak time / active seconds on a real clip (YAMNet ONNX, 3 s silence + birds + silence)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

import answerers_sound_speech as ass  # noqa: E402
from toolcache.tools import ontology  # noqa: E402


@pytest.fixture(scope="module")
def birds(birds_wav):
    from toolcache.audio import load_audio

    return load_audio(birds_wav)


def event(label: str, mean: float, peak: float | None = None) -> dict:
    """One sound_events entry as the tool writes it (parents from the real ontology)."""
    return {"label": label, "mean_score": mean, "max_score": peak if peak is not None else mean,
            "parents": list(ontology.ancestors(label))}


def envelope(*events: dict) -> dict:
    return {"result": {"events": list(events), "categories": []}}


def row(question: str, choices: list[str]) -> dict:
    return {"question": question, "choices": choices}


@pytest.mark.parametrize("a,b", [("brakes", "brake"), ("braking", "brake"), ("boxes", "box"), ("dogs", "dog"),
                                 ("barking", "bark"), ("flies", "fly"), ("chimes", "chime"), ("glass", "glasses")])
def test_stem_joins_word_forms(a, b):
    # v2 stemmed 'brakes' -> 'brak' but 'brake' -> 'brake': choice "Brakes" never met "Air brake"
    assert ass.stem(a) == ass.stem(b)


def test_brakes_choice_meets_air_brake_label():
    env = envelope(event("Vehicle", 0.47), event("Air brake", 0.04, 0.32), event("Wind", 0.02))
    assert ass.answer_sound_events(row("What made the squeal?", ["Brakes", "Animal", "Wind", "Tool"]), env) == 0


def test_poultry_supports_bird_through_the_fowl_alias():
    # AudioSet files Chicken under Fowl under Livestock, not under Bird: the alias bridges it
    assert "bird" in ontology.aliases("Fowl")
    env = envelope(event("Chicken, rooster", 0.09, 0.68), event("Speech", 0.05, 0.5))
    assert ass.answer_sound_events(row("Which animal is heard?", ["Bird", "Human", "Wind", "Machine"]), env) == 0


def test_source_of_a_named_sound_follows_that_sounds_ancestors():
    # Speech dominates the clip; the question is about the mechanisms sound's source
    env = envelope(event("Speech", 0.88, 1.0), event("Mechanisms", 0.004, 0.05))
    q = row("Given the audio, identify the source of the mechanisms sound.", ["Machine", "Animal", "Human", "Nature"])
    assert ass.answer_sound_events(q, env) == 0
    # without a focus sound the whole clip counts: Speech -> Human voice -> "human"
    assert ass.answer_sound_events(row("What is heard?", ["Machine", "Animal", "Human", "Nature"]), env) == 2


def test_focus_without_a_matching_event_falls_back_and_ties_are_no_answer():
    env = envelope(event("Whip", 0.09, 0.98), event("Applause", 0.13, 0.95))
    q = row("Based on the given audio, identify the source of the crack sound.", ["Whip", "Clap", "Snap", "Horn"])
    assert ass.answer_sound_events(q, env) == 1                       # no "crack" event: all events, Applause > Whip
    tie = envelope(event("Dog", 0.1), event("Cat", 0.1))
    assert ass.answer_sound_events(row("Which animal?", ["Dog", "Cat"]), tie) is None
    assert ass.answer_sound_events(row("Which animal?", ["Dog", "Cat"]), envelope()) is None


def test_events_v3_place_a_short_sound_by_peak_time_and_active_seconds(birds_wav):
    from synth_speech import bird_sandwich, clip

    from toolcache.tools import sound

    result = sound.sound_events(clip(bird_sandwich(birds_wav)))          # 3 s silence + 3 s birds + 3 s silence
    assert len(result["events"]) == 50                                   # the benchmark-chosen default top_k
    animal = [e for e in result["events"] if "Animal" in e["parents"] and e["max_score"] >= 0.1]
    assert animal, result["events"][:10]
    for e in animal:
        assert 2.0 <= e["peak_s"] <= 7.0, e                             # the birds are at 3-6 s
        assert 0.0 < e["active_s"] <= 5.0, e                            # not the whole 9 s clip
    silence = next(e for e in result["events"] if e["label"] == "Silence")
    assert silence["active_s"] >= 4.0 and not 3.0 < silence["peak_s"] < 6.0, silence


def test_summary_line_keeps_many_labels_through_the_reasoner_prompt_cut(birds):
    from reasoner.prompt import compact_evidence
    from toolcache.tools import sound

    result = sound.sound_events(birds)
    line = result["summary"]
    assert 0 < len(line) <= sound.SUMMARY_MAX_CHARS
    names = [e["label"] for e in result["events"]]
    shown = [item.rsplit(" ", 1)[0] for item in line.split("; ")]
    assert shown == names[:len(shown)] and len(shown) >= 15, line      # events' order, whole labels
    # the prompt cuts lists to a few items; the digest still carries the 8th label ("Chirp, tweet")
    text = compact_evidence({"result": result, "limits": sound.SPECS[0].limits})
    assert all(n in text for n in names[:12]), text


def test_asr_realtime_bench_skips_cleanly_without_clips(tmp_path, capsys):
    import bench_asr_realtime

    assert bench_asr_realtime.main([str(tmp_path / "no-clips")]) == 0
    assert "skipped:" in capsys.readouterr().err
