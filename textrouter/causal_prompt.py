"""The causal-lm router's prompt and action strings (engine `causal-lm`, textrouter.causal_lm).

A router text (textrouter.text.format_input) is wrapped as prefix + text + suffix, rendered once
from the base tokenizer's chat template around a sentinel, with the routing instruction as the
system message. An action is written as `direct` or `<tool_call> NAME </tool_call>` and ends with
the tokenizer's end-of-turn token. Shared by training (causal_lm), the torch scorer
(causal_scorer) and the export (causal_export); needs no torch.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

DIRECT = "direct"
TOOL_TEMPLATE = "<tool_call> {name} </tool_call>"
_TOOL_RE = re.compile(r"^<tool_call>\s*([A-Za-z0-9_-]+)\s*</tool_call>$")
SENTINEL = "\u2063ROUTER_TEXT\u2063"  # invisible separator: never in a router text


def completion_of(action: str) -> str:
    return DIRECT if action == DIRECT else TOOL_TEMPLATE.format(name=action)


def parse_completion(text: str, actions: Sequence[str]) -> int | None:
    """Index of the action a completion names, or None when it is not exactly one valid action."""
    s = str(text).strip()
    if s == DIRECT:
        return 0
    m = _TOOL_RE.match(s)
    if m and m.group(1) in actions[1:]:
        return list(actions).index(m.group(1))
    return None


def instruction(actions: Sequence[str]) -> str:
    # short on purpose: every prompt token costs a forward pass at route time and ~4 in training
    # (rollout, reference, loss forward and backward); 38 prompt tokens around the question on
    # SmolLM2's template, 48 with the earlier "Route the audio question. Reply `direct` or ..."
    return f"Reply direct or <tool_call> TOOL </tool_call>. Tools: {', '.join(actions[1:])}."


@dataclass(frozen=True)
class RoutingPrompt:
    prefix: str             # text before the router text (chat template + instruction)
    suffix: str             # text after it (end of user turn + assistant header)
    actions: tuple[str, ...]
    completions: tuple[str, ...]
    eos: str | None         # end-of-turn token appended to every scored completion

    def wrap(self, router_text: str) -> str:
        return self.prefix + router_text + self.suffix

    def to_dict(self) -> dict:
        return {"prefix": self.prefix, "suffix": self.suffix, "actions": list(self.actions),
                "completions": list(self.completions), "eos": self.eos}

    @classmethod
    def from_dict(cls, d: dict) -> "RoutingPrompt":
        return cls(d["prefix"], d["suffix"], tuple(d["actions"]), tuple(d["completions"]), d.get("eos"))


def routing_prompt(tokenizer, actions: Sequence[str]) -> RoutingPrompt:
    """The prompt around a router text, from the tokenizer's chat template (plain text without one)."""
    actions = tuple(actions)
    if not actions or actions[0] != DIRECT or len(actions) < 2:
        raise ValueError(f"actions must be 'direct' plus at least one tool (got {list(actions)})")
    sysmsg = instruction(actions)
    if getattr(tokenizer, "chat_template", None):
        msgs = [{"role": "system", "content": sysmsg}, {"role": "user", "content": SENTINEL}]
        text = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        prefix, _, suffix = text.partition(SENTINEL)
    else:
        prefix, suffix = sysmsg + "\n", "\nRoute: "
    return RoutingPrompt(prefix, suffix, actions, tuple(completion_of(a) for a in actions), tokenizer.eos_token)


def action_token_ids(tokenizer, prompt: RoutingPrompt) -> list[list[int]]:
    """Token ids of each action's whole completion, end-of-turn token appended (what GRPO samples)."""
    eos = tokenizer.convert_tokens_to_ids(prompt.eos) if prompt.eos else None
    out = []
    for comp in prompt.completions:
        ids = list(tokenizer(comp, add_special_tokens=False)["input_ids"])
        out.append(ids + ([int(eos)] if eos is not None else []))
    return out
