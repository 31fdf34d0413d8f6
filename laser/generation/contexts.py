"""Bandit contexts: the policy's own embedding of each prompt.

By default the last layer's hidden state at the last prompt token (the LASeR paper's choice), in float32
and L2-normalized, so that contexts have one scale whatever the model (LinUCB's confidence widths and
regularizer assume bounded features). Options: the mean over prompt tokens, an intermediate layer, a
seeded Gaussian random projection to a smaller dimension (LinUCB costs O(d^2) per arm), and a frozen
copy of the initial policy instead of the live one.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch

from .base import PromptRenderer


class ContextEmbedder:
    """`embed(prompts) -> (n, d)` float32 contexts from a causal LM's hidden states."""

    def __init__(self, model, tokenizer, pooling: str = "last", layer: int = -1, dim: int | None = None,
                 normalize: bool = True, frozen: bool = False, batch_size: int = 64, max_length: int | None = None,
                 seed: int = 0, renderer: PromptRenderer | None = None):
        if pooling not in ("last", "mean"):
            raise ValueError(f"pooling must be 'last' or 'mean', got {pooling!r}")
        n_layers = model.config.num_hidden_layers
        if not -(n_layers + 1) <= layer <= n_layers:
            raise ValueError(f"layer must be in [-{n_layers + 1}, {n_layers}] for a {n_layers}-layer model, "
                             f"got {layer} (0 is the embeddings, -1 the last layer)")
        hidden = model.config.hidden_size
        if dim is not None and not 0 < dim <= hidden:
            raise ValueError(f"dim must be in [1, {hidden}] (the hidden size), got {dim}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = copy.deepcopy(model).eval() if frozen else model
        self.tokenizer, self.pooling, self.layer = tokenizer, pooling, layer
        self.normalize, self.batch_size = normalize, batch_size
        self.renderer = renderer or PromptRenderer(tokenizer, "never")  # prompts as the engine renders them
        self.max_length = max_length or getattr(model.config, "max_position_embeddings", None)
        self.projection = None
        if dim is not None and dim < hidden:
            rng = np.random.default_rng(seed)
            self.projection = (rng.standard_normal((hidden, dim)) / np.sqrt(dim)).astype(np.float32)
        self.dim = dim or hidden
        self.n_layers = n_layers

    def _backbone(self):
        """The model without its LM head (its adapters, if any, still applied): its last hidden state is the last
        layer's, as `hidden_states[-1]` of the full model's output."""
        model = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        return model.get_decoder()

    @torch.inference_mode()
    def embed(self, prompts: Sequence[str]) -> np.ndarray:
        """One row per prompt: pooled hidden states (projected and L2-normalized if configured)."""
        if isinstance(prompts, str):
            raise TypeError("prompts must be a list of strings, not one string")
        prompts = list(prompts)
        if not prompts:
            return np.zeros((0, self.dim), dtype=np.float32)
        texts = [self.renderer.text(p) for p in prompts]
        was_training = self.model.training
        self.model.eval()
        side, cut = self.tokenizer.padding_side, self.tokenizer.truncation_side
        self.tokenizer.padding_side = "right"  # last real token at index length - 1
        self.tokenizer.truncation_side = "left"  # a long prompt keeps its end, where the question is
        device = next(self.model.parameters()).device
        rows = []
        try:
            for i in range(0, len(texts), self.batch_size):
                enc = self.tokenizer(texts[i:i + self.batch_size], return_tensors="pt", padding=True,
                                     add_special_tokens=self.renderer.add_special_tokens,
                                     truncation=self.max_length is not None, max_length=self.max_length).to(device)
                if self.layer in (-1, self.n_layers):  # the backbone's output alone: no logits, no other layer kept
                    h = self._backbone()(**enc).last_hidden_state.float()
                else:  # every layer's states are returned; the logits of the last position only
                    h = self.model(**enc, output_hidden_states=True, logits_to_keep=1).hidden_states[self.layer].float()
                mask = enc["attention_mask"].unsqueeze(-1).float()
                if self.pooling == "mean":
                    pooled = (h * mask).sum(1) / mask.sum(1).clamp(min=1)
                else:
                    last = enc["attention_mask"].sum(1) - 1
                    pooled = h[torch.arange(h.shape[0], device=device), last]
                rows.append(pooled.cpu().numpy())
        finally:
            self.tokenizer.padding_side, self.tokenizer.truncation_side = side, cut
            self.model.train(was_training)
        x = np.concatenate(rows).astype(np.float32)
        if self.projection is not None:
            x = x @ self.projection
        if self.normalize:
            x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        return x
