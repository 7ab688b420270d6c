"""transformers back-ends on TINY randomly initialised models (2 layers, hidden 32) on CPU.

The real checkpoints (7B) are not available here; the code path is the same: the tiny model and its
processor / tokenizer are saved with save_pretrained into a folder, and the back-end loads that
folder through its normal loading path, builds the chat prompt with the audio placeholder, extracts
Whisper features from real audio, runs generate() greedily and decodes. With random weights the
answer is gibberish (matched_by is usually "none"): the tests assert the mechanics, not accuracy.
"""
from __future__ import annotations

import json
import os
import re

import pytest

import reasoner
from reasoner.errors import ReasonerError
from reasoner.prompt import user_text

pytest.importorskip("transformers")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

QUESTION = "How many people are speaking in the recording?"
CHOICES = ["one", "two", "three", "four"]
EVIDENCE = {"tool": "asr", "result": {"text": "hello how are you doing today"},
            "limits": "English speech only."}
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>",
           "<|IMAGE|>", "<|VIDEO|>", "<|vision_bos|>", "<|vision_eos|>"]


def _tiny_tokenizer(extra_special_tokens: dict | None = None):
    """Word-level fast tokenizer whose vocabulary covers the prompt words (so decoding is readable)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    corpus = " ".join([user_text(QUESTION, CHOICES, EVIDENCE), user_text(QUESTION, CHOICES),
                       "system user assistant You are a helpful assistant. Audio 1:"])
    pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    words = sorted({piece for piece, _ in pre_tokenizer.pre_tokenize_str(corpus)})
    vocab = {token: i for i, token in enumerate(SPECIAL + ["[UNK]"] + words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizer
    tok.add_special_tokens(SPECIAL)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   unk_token="[UNK]", extra_special_tokens=extra_special_tokens or {})
    return fast, vocab


@pytest.fixture(scope="module")
def tiny_qwen2_audio(tmp_path_factory):
    import torch
    from transformers import (Qwen2AudioConfig, Qwen2AudioForConditionalGeneration, Qwen2AudioProcessor,
                              WhisperFeatureExtractor)

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-qwen2-audio")
    tokenizer, vocab = _tiny_tokenizer()
    processor = Qwen2AudioProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=128), tokenizer=tokenizer)
    processor.save_pretrained(folder)
    config = Qwen2AudioConfig(
        audio_config=dict(d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64,
                          num_mel_bins=128),
        text_config=dict(model_type="qwen2", vocab_size=len(vocab), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1),
        audio_token_index=vocab["<|AUDIO|>"])
    model = Qwen2AudioForConditionalGeneration(config)
    model.generation_config.eos_token_id = vocab["<|im_end|>"]
    model.generation_config.pad_token_id = vocab["<|endoftext|>"]
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_qwen25_omni_thinker(tmp_path_factory):
    import torch
    from transformers import Qwen2_5OmniThinkerConfig, Qwen2_5OmniThinkerForConditionalGeneration, WhisperFeatureExtractor

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-qwen2.5-omni")
    tokenizer, vocab = _tiny_tokenizer({
        "audio_token": "<|AUDIO|>", "audio_bos_token": "<|audio_bos|>", "audio_eos_token": "<|audio_eos|>",
        "image_token": "<|IMAGE|>", "video_token": "<|VIDEO|>", "vision_bos_token": "<|vision_bos|>",
        "vision_eos_token": "<|vision_eos|>"})
    tokenizer.save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=128).save_pretrained(folder)
    config = Qwen2_5OmniThinkerConfig(
        audio_config=dict(d_model=32, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=64,
                          num_mel_bins=128, output_dim=32, n_window=50),
        vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32,
                           fullatt_block_indexes=[0]),
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1,
                         rope_scaling={"type": "default", "mrope_section": [2, 3, 3]}),  # head_dim 16 -> 8 pairs
        audio_token_index=vocab["<|AUDIO|>"], image_token_index=vocab["<|IMAGE|>"],
        video_token_index=vocab["<|VIDEO|>"], audio_start_token_id=vocab["<|audio_bos|>"],
        audio_end_token_id=vocab["<|audio_eos|>"], vision_start_token_id=vocab["<|vision_bos|>"],
        vision_end_token_id=vocab["<|vision_eos|>"], user_token_id=vocab["user"])
    model = Qwen2_5OmniThinkerForConditionalGeneration(config)
    model.generation_config.eos_token_id = vocab["<|im_end|>"]
    model.generation_config.pad_token_id = vocab["<|endoftext|>"]
    model.save_pretrained(folder)
    return folder


def _spy_generate(r):
    """Wrap the loaded model's real generate() to record its inputs and outputs."""
    _, model = r.load()
    calls = []
    original = model.generate

    def spy(**kwargs):
        output = original(**kwargs)
        calls.append({"inputs": kwargs, "output": output})
        return output

    model.generate = spy
    return calls


def _check_single_call(r, calls, result, n_audio_tokens: int, audio_bos: str):
    processor = r.processor
    (call,) = calls
    inputs = call["inputs"]
    prompt_ids = inputs["input_ids"][0]
    prompt = processor.tokenizer.decode(prompt_ids, skip_special_tokens=False)
    # the prompt holds the audio placeholder, expanded to one token per 40 ms of audio
    assert audio_bos in prompt and "<|audio_eos|>" in prompt
    audio_id = processor.tokenizer.convert_tokens_to_ids("<|AUDIO|>")
    assert int((prompt_ids == audio_id).sum()) == n_audio_tokens
    assert "How many people are speaking" in prompt
    assert re.search(r"\(\s*A\s*\)\s*one\s*\(\s*B\s*\)\s*two", prompt)  # lettered options in order
    # generate ran on real features of the real audio
    features = inputs["input_features"]
    assert tuple(features.shape) == (1, 128, 3000) and float(features.abs().sum()) > 0
    assert inputs["do_sample"] is False
    # the raw answer is exactly the decoded new tokens
    new_tokens = call["output"][0, prompt_ids.shape[0]:]
    assert len(new_tokens) >= 1
    assert result["raw"] == processor.tokenizer.decode(new_tokens, skip_special_tokens=True).strip()
    assert set(result) == {"choice", "index", "raw", "matched_by", "model", "elapsed_s"}
    assert result["matched_by"] in ("exact", "letter", "similar", "none")
    assert (result["index"] is None) == (result["matched_by"] == "none")
    if result["index"] is not None:
        assert result["choice"] == CHOICES[result["index"]]


def test_qwen2_audio_tiny_answer_and_batch(tiny_qwen2_audio, speech_wav, birds_wav):
    r = reasoner.create_reasoner("qwen2-audio", model=str(tiny_qwen2_audio), device="cpu", max_new_tokens=5,
                                 batch_size=2)
    assert r.cache_identity() == {"backend": "qwen2-audio", "model": str(tiny_qwen2_audio),
                                  "prompt_version": reasoner.PROMPT_VERSION,
                                  "params": {"do_sample": False, "max_new_tokens": 5, "dtype": "auto",
                                             "max_evidence_chars": 2000}}
    calls = _spy_generate(r)
    result = r.answer(speech_wav, QUESTION, CHOICES, EVIDENCE)
    # 30 s of audio -> 3000 mel frames -> 750 audio tokens
    _check_single_call(r, calls, result, 750, "<|audio_bos|>")
    assert result["model"] == str(tiny_qwen2_audio)
    prompt = r.processor.tokenizer.decode(calls[0]["inputs"]["input_ids"][0])
    assert "Auxiliary evidence" in prompt and "English speech only" in prompt
    # answer_many: 3 requests with batch_size 2 -> two generate calls, left-padded, results in order
    calls.clear()
    many = r.answer_many([
        {"audio_path": speech_wav, "question": QUESTION, "choices": CHOICES},
        {"audio_path": birds_wav, "question": QUESTION, "choices": CHOICES, "evidence": EVIDENCE},
        {"audio_path": birds_wav, "question": "Which bird?", "choices": ["owl", "robin"]},
    ])
    assert len(calls) == 2 and [c["inputs"]["input_ids"].shape[0] for c in calls] == [2, 1]
    mask = calls[0]["inputs"]["attention_mask"]
    assert mask[:, -1].tolist() == [1, 1] and 0 in mask[:, 0].tolist()  # the shorter prompt is left-padded
    audio_id = r.processor.tokenizer.convert_tokens_to_ids("<|AUDIO|>")
    # birds-10s.wav (10.1 s at 32 kHz, resampled to 16 kHz): one mel frame per 10 ms, one audio token
    # per 4 frames -> ~253 audio tokens, matching its feature mask
    frames = int(calls[0]["inputs"]["feature_attention_mask"][1].sum())
    assert 1000 <= frames <= 1020
    assert int((calls[0]["inputs"]["input_ids"][1] == audio_id).sum()) == (((frames - 1) // 2 + 1) - 2) // 2 + 1
    for res, call_index, row in ((many[0], 0, 0), (many[1], 0, 1), (many[2], 1, 0)):
        call = calls[call_index]
        new = call["output"][row, call["inputs"]["input_ids"].shape[1]:]
        assert res["raw"] == r.processor.tokenizer.decode(new, skip_special_tokens=True).strip()


def test_qwen25_omni_thinker_tiny_answer(tiny_qwen25_omni_thinker, speech_wav, tmp_path):
    r = reasoner.create_reasoner("qwen2.5-omni", model=str(tiny_qwen25_omni_thinker), device="cpu",
                                 max_new_tokens=4)
    calls = _spy_generate(r)
    result = r.answer(speech_wav, QUESTION, CHOICES)
    _check_single_call(r, calls, result, 750, "<|audio_bos|>")
    assert "feature_attention_mask" in calls[0]["inputs"]
    # a clip that cannot be decoded fails alone; the rest of the batch is still answered
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00not really a wav file")
    calls.clear()
    results = r.answer_many([{"audio_path": broken, "question": QUESTION, "choices": CHOICES},
                             {"audio_path": speech_wav, "question": QUESTION, "choices": CHOICES}],
                            return_exceptions=True)
    assert isinstance(results[0], ReasonerError) and "cannot decode audio" in str(results[0])
    assert results[1]["raw"] == result["raw"]  # same question, same audio, greedy: same answer
    assert len(calls) == 1 and calls[0]["inputs"]["input_ids"].shape[0] == 1


def test_qwen25_omni_full_checkpoint_answers_with_its_thinker(tiny_qwen25_omni_thinker, tmp_path, speech_wav):
    """A full Qwen2.5-Omni folder (model_type qwen2_5_omni, like the hub's) loads without the talker."""
    import shutil

    import torch
    from transformers import (Qwen2_5OmniConfig, Qwen2_5OmniForConditionalGeneration,
                              Qwen2_5OmniThinkerForConditionalGeneration)

    thinker_config = json.loads((tiny_qwen25_omni_thinker / "config.json").read_text())
    full = Qwen2_5OmniForConditionalGeneration(Qwen2_5OmniConfig(thinker_config=thinker_config,
                                                                 enable_audio_output=False))
    full.save_pretrained(tmp_path)
    for name in ("tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"):
        shutil.copy(tiny_qwen25_omni_thinker / name, tmp_path / name)
    torch.save({"Chelsie": {"cond": torch.zeros(1)}}, tmp_path / "spk_dict.pt")  # the hub folder has one
    r = reasoner.create_reasoner("qwen2.5-omni", model=str(tmp_path), device="cpu", max_new_tokens=3)
    calls = _spy_generate(r)
    assert isinstance(r.hf_model, Qwen2_5OmniThinkerForConditionalGeneration)
    assert not hasattr(r.hf_model, "talker")
    result = r.answer(speech_wav, QUESTION, CHOICES)
    _check_single_call(r, calls, result, 750, "<|audio_bos|>")


def test_hf_errors_name_the_fix(tmp_path, speech_wav):
    with pytest.raises(ValueError, match="device must be one of auto, cpu, cuda"):
        reasoner.create_reasoner("qwen2-audio", device="tpu")
    with pytest.raises(ValueError, match="unknown option.*max_tokens.*valid:.*max_new_tokens"):
        reasoner.create_reasoner("qwen2-audio", max_tokens=3)
    r = reasoner.create_reasoner("qwen2-audio", model=str(tmp_path / "no-such-model"))
    with pytest.raises(ReasonerError, match="model folder not found"):
        r.answer(speech_wav, QUESTION, CHOICES)
    empty = tmp_path / "empty-model"
    empty.mkdir()
    r = reasoner.create_reasoner("qwen2-audio", model=str(empty))
    with pytest.raises(ReasonerError, match="cannot load .* offline.*download it first"):
        r.answer(speech_wav, QUESTION, CHOICES)
    # defaults: the 7B instruct checkpoints, nothing loaded until the first answer
    assert reasoner.create_reasoner("qwen2.5-omni").model == "Qwen/Qwen2.5-Omni-7B"
    assert json.dumps(reasoner.create_reasoner("qwen2-audio").cache_identity())
