"""Read a router checkpoint back (any engine): `load_checkpoint(DIR) -> (policy, meta)`.

Written by `textrouter.model.save_checkpoint`; the engine (router.json / meta.json `engine`) picks the
policy class through the `textrouter.encoders` registry. Lives above the registry so that the
engine modules (model, static) never import it: no import cycle.
"""
from __future__ import annotations

import json
from pathlib import Path

from .errors import RouterLoadError
from .model import CHECKPOINT_META, CHECKPOINT_WEIGHTS, _torch


def load_checkpoint(ckpt_dir: str | Path):
    """(policy merged and in eval mode, meta dict) from a folder written by `save_checkpoint`."""
    _torch()  # one line naming the [train] extra when torch is missing, before any file is read
    d = Path(ckpt_dir)
    meta_file, weights = d / CHECKPOINT_META, d / CHECKPOINT_WEIGHTS
    if not meta_file.is_file() or not weights.is_file():
        raise RouterLoadError(f"{d} is not a router checkpoint (needs {CHECKPOINT_META} and {CHECKPOINT_WEIGHTS}; "
                              f"create one with: audiorouter train TABLE --out {d})")
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        actions = list(meta["actions"])
    except (ValueError, KeyError, TypeError) as exc:
        raise RouterLoadError(f"{meta_file} is corrupt ({exc}); re-run audiorouter train --out {d}") from exc
    from safetensors.torch import load_file

    from .encoders import get_encoder

    engine = meta.get("engine", "minilm")
    try:
        state = load_file(str(weights))
        policy = get_encoder(engine).policy_for_state(state, len(actions))
        policy.load_state_dict(state, strict=True)
    except Exception as exc:  # safetensors/torch raise several types for a truncated or foreign file
        raise RouterLoadError(f"{weights} does not match a {len(actions)}-action {engine} router ({exc}); "
                              f"re-run audiorouter train --out {d}") from exc
    policy.eval()
    for p in policy.parameters():
        p.requires_grad_(False)
    return policy, meta
