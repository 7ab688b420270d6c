"""reasoner: frozen audio-LLM back-ends that answer multiple-choice audio questions.

    import reasoner
    r = reasoner.create_reasoner("openai", base_url="http://localhost:8000/v1",
                                 model="Qwen/Qwen2-Audio-7B-Instruct")
    r.answer("clip.wav", "Who is speaking?", ["a man", "a woman"], evidence=None)

Back-ends (`available_reasoners()`): "openai" (any OpenAI-compatible chat server such as vLLM),
"qwen2-audio" and "qwen2.5-omni" (transformers, loaded lazily). This package never imports
textrouter, toolcache or cli; evidence is the plain tool-output dict.
"""
from reasoner.errors import ReasonerError, ReasonerTimeout, ReasonerUnavailable
from reasoner.parse import parse_answer
from reasoner.prompt import PROMPT_VERSION, build_messages, prompt_text
from reasoner.registry import REASONERS, Reasoner, available_reasoners, create_reasoner

__all__ = [
    "PROMPT_VERSION", "REASONERS", "Reasoner", "ReasonerError", "ReasonerTimeout",
    "ReasonerUnavailable", "available_reasoners", "build_messages", "create_reasoner",
    "parse_answer", "prompt_text",
]
