"""Tokenisation for training, and frozen-encoder embeddings cached on disk.

Head-mode training, the supervised baseline and CV all need the frozen MiniLM embedding of every
question; they are computed once (batched, no grad) and stored as `.npy` under the cache directory,
keyed by the sha256 of the texts, the encoder id and max_length. A changed table (other texts) gets
another key; changed outcomes reuse the same embeddings (outcomes are not an input).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Sequence

from .model import ENCODER_ID

DEFAULT_MAX_LENGTH = 128  # tokens; longer questions are truncated (MiniLM was trained on <= 128)


def cache_dir() -> Path:
    """`$AUDIOROUTER_CACHE_DIR/embeddings`, else `$XDG_CACHE_HOME/audiorouter/embeddings`."""
    base = os.environ.get("AUDIOROUTER_CACHE_DIR")
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        base = str(Path(xdg) / "audiorouter")
    return Path(base) / "embeddings"


def texts_key(texts: Sequence[str], max_length: int) -> str:
    h = hashlib.sha256(f"{ENCODER_ID}\n{max_length}\n".encode())
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()


def tokenizer(max_length: int = DEFAULT_MAX_LENGTH):
    """The encoder's fast tokenizer, truncating at `max_length` and padding to the batch's longest."""
    from tokenizers import Tokenizer

    from .model import tokenizer_path

    if max_length < 8 or max_length > 512:
        raise ValueError(f"max_length {max_length} out of range; choose 8..512 tokens (default 128)")
    tok = Tokenizer.from_file(str(tokenizer_path()))
    tok.enable_truncation(max_length=max_length)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")  # pad to the longest in the batch
    return tok


def encode(texts: Sequence[str], max_length: int = DEFAULT_MAX_LENGTH):
    """(input_ids int64 [N, L], attention_mask int64 [N, L], truncated bool [N])."""
    import numpy as np

    tok = tokenizer(max_length)
    encs = tok.encode_batch(list(texts))
    ids = np.array([e.ids for e in encs], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encs], dtype=np.int64)
    truncated = np.array([len(e.overflowing) > 0 for e in encs], dtype=bool)
    return ids, mask, truncated


def compute_embeddings(texts: Sequence[str], max_length: int = DEFAULT_MAX_LENGTH, batch_size: int = 64,
                       progress=None):
    """Frozen MiniLM mean-pooled embeddings, float32 [N, 384] (no dropout, no grad)."""
    import numpy as np
    import torch

    from .model import _load_encoder

    encoder = _load_encoder().eval()
    tok = tokenizer(max_length)
    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            encs = tok.encode_batch(list(texts[start:start + batch_size]))
            ids = torch.tensor([e.ids for e in encs], dtype=torch.long)
            mask = torch.tensor([e.attention_mask for e in encs], dtype=torch.long)
            hidden = encoder(input_ids=ids, attention_mask=mask).last_hidden_state
            m = mask.unsqueeze(-1).float()
            out.append(((hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)).numpy())
            if progress is not None:
                progress(len(encs))
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 384), np.float32)


def embeddings(texts: Sequence[str], max_length: int = DEFAULT_MAX_LENGTH, use_cache: bool = True, progress=None):
    """Cached `compute_embeddings`: read `<key>.npy` if present, else compute and store atomically."""
    import numpy as np

    path = cache_dir() / f"{texts_key(texts, max_length)}.npy"
    if use_cache and path.is_file():
        try:
            arr = np.load(path)
            if arr.shape == (len(texts), 384):
                return arr
        except (OSError, ValueError):
            pass  # corrupt cache entry: recompute and overwrite
    arr = compute_embeddings(texts, max_length, progress=progress)
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp.npy")
        np.save(tmp, arr)
        os.replace(tmp, path)
    return arr
