"""Reward models backed by transformers: sequence classifiers, implicit DPO rewards, LM likelihood."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from laser.console import torch_dtype

from .base import RewardError, RewardModel
from .texts import classifier_texts


def _dtype(name: str) -> torch.dtype:
    try:
        return torch_dtype(name)
    except ValueError as e:
        raise RewardError(str(e)) from None


def _load_tokenizer(path: str, trust_remote_code: bool):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def _load_model(auto_cls, path: str, device: str, dtype: str, trust_remote_code: bool, device_map: str | None):
    """`auto_cls.from_pretrained` in eval mode, on `device` or spread by `device_map`."""
    kwargs = {"dtype": _dtype(dtype), "trust_remote_code": trust_remote_code}
    if device_map:
        kwargs["device_map"] = device_map
    model = auto_cls.from_pretrained(str(path), **kwargs)
    if not device_map:
        model.to(device)
    return model.eval()


def _model_max_length(model, tokenizer, max_length: int | None) -> int:
    if max_length:
        return max_length
    candidates = [getattr(model.config, "max_position_embeddings", None), tokenizer.model_max_length]
    return min(c for c in candidates if c and c < 10**7) if any(c and c < 10**7 for c in candidates) else 2048


class HFSequenceClassifierRM(RewardModel):
    """Any `AutoModelForSequenceClassification` reward model (hub id or local path), e.g. Skywork-Reward.

    The text scored is the RM tokenizer's chat template applied to [user: prompt, assistant: completion]
    when the tokenizer has one (`use_chat_template="auto"`), else `prompt + completion + eos`, the way
    TRL's RewardTrainer builds its training texts. Inputs longer than `max_length` keep their end (the
    score is read at the last token) and are counted as truncated. `head` picks the output of a
    multi-objective RM (ArmoRM-style); the default reads the first.
    """

    def __init__(self, path: str, name: str | None = None, device: str = "cpu", dtype: str = "float32",
                 batch_size: int = 64, max_length: int | None = None, use_chat_template: str | bool = "auto",
                 head: int = 0, trust_remote_code: bool = False, device_map: str | None = None,
                 cache_size: int | None = 1_000_000):
        from transformers import AutoModelForSequenceClassification

        super().__init__(name or str(path).rstrip("/").rsplit("/", 1)[-1], batch_size, cache_size)
        self.tokenizer = _load_tokenizer(str(path), trust_remote_code)
        self.model = _load_model(AutoModelForSequenceClassification, path, device, dtype, trust_remote_code, device_map)
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        n_out = self.model.config.num_labels
        if not 0 <= head < n_out:
            raise RewardError(f"head={head} but {path} has {n_out} output(s)")
        self.head = head
        has_template = getattr(self.tokenizer, "chat_template", None) is not None
        if use_chat_template is True and not has_template:
            raise RewardError(f"use_chat_template=True but the tokenizer of {path} has no chat template")
        self.use_chat_template = has_template if use_chat_template == "auto" else bool(use_chat_template)
        self.max_length = _model_max_length(self.model, self.tokenizer, max_length)

    def texts(self, prompts: Sequence[str], completions: Sequence[str]) -> list[str]:
        """The exact strings the RM sees."""
        return classifier_texts(self.tokenizer, prompts, completions, self.use_chat_template)

    @torch.inference_mode()
    def _score_batch(self, prompts: list[str], completions: list[str]) -> tuple[np.ndarray, int]:
        texts = self.texts(prompts, completions)
        ids = self.tokenizer(texts, add_special_tokens=not self.use_chat_template)["input_ids"]
        truncated = sum(len(x) > self.max_length for x in ids)
        ids = [x[-self.max_length:] for x in ids]
        batch = self.tokenizer.pad({"input_ids": ids}, return_tensors="pt", padding=True)
        device = self.model.device
        logits = self.model(input_ids=batch["input_ids"].to(device),
                            attention_mask=batch["attention_mask"].to(device)).logits
        return logits[:, self.head].float().cpu().numpy(), truncated


class _CausalLMScorer:
    """Log-probabilities of completion tokens given the prompt under a causal LM (batched, right padded)."""

    def __init__(self, path: str, device: str, dtype: str, trust_remote_code: bool, append_eos: bool,
                 max_length: int | None, device_map: str | None = None):
        from transformers import AutoModelForCausalLM

        self.tokenizer = _load_tokenizer(str(path), trust_remote_code)
        self.model = _load_model(AutoModelForCausalLM, path, device, dtype, trust_remote_code, device_map)
        self.append_eos = append_eos
        self.max_length = _model_max_length(self.model, self.tokenizer, max_length)

    @classmethod
    def of(cls, model, tokenizer, append_eos: bool = True, max_length: int | None = None) -> _CausalLMScorer:
        """A scorer over a model already in memory (e.g. one being trained)."""
        self = cls.__new__(cls)
        self.tokenizer, self.model, self.append_eos = tokenizer, model, append_eos
        self.max_length = _model_max_length(model, tokenizer, max_length)
        return self

    def mean_logprob(self, prompts: list[str], completions: list[str], batch_size: int = 256) -> np.ndarray:
        """The `likelihood` backend's score: mean completion-token log-probability (NaN with no tokens)."""
        out = []
        for i in range(0, len(prompts), batch_size):
            total, count, _ = self.logprobs(list(prompts[i:i + batch_size]), list(completions[i:i + batch_size]))
            with np.errstate(invalid="ignore", divide="ignore"):
                out.append(np.where(count > 0, total / np.maximum(count, 1), np.nan))
        return np.concatenate(out) if out else np.zeros(0)

    def encode(self, prompts: list[str], completions: list[str]) -> tuple[list[list[int]], list[int], int]:
        """Token ids of prompt + completion, the prompt length of each, and how many were truncated.

        Prompt and completion are tokenized separately (as TRL's DPO does), so the completion's tokens
        are exactly its own; the prompt is cut from the left when the pair exceeds `max_length`.
        """
        tok = self.tokenizer
        p_ids = tok(prompts)["input_ids"]
        c_ids = tok(completions, add_special_tokens=False)["input_ids"]
        seqs, starts, truncated = [], [], 0
        for p, c in zip(p_ids, c_ids, strict=True):
            c = c + [tok.eos_token_id] if self.append_eos and tok.eos_token_id is not None else c
            if len(p) + len(c) > self.max_length:
                truncated += 1
                c = c[:self.max_length - 1]
                p = p[-(self.max_length - len(c)):]
            seqs.append(p + c)
            starts.append(len(p))
        return seqs, starts, truncated

    @torch.inference_mode()
    def logprobs(self, prompts: list[str], completions: list[str]) -> tuple[np.ndarray, np.ndarray, int]:
        """Sum of completion-token log-probabilities, number of completion tokens, truncated count."""
        seqs, starts, truncated = self.encode(prompts, completions)
        rows = completion_logprobs(self.model, seqs, starts, self.tokenizer.pad_token_id)
        total = np.array([float(r.sum()) for r in rows], dtype=np.float64)
        return total, np.array([len(r) for r in rows]), truncated


def completion_logprobs(model, seqs: Sequence[Sequence[int]], starts: Sequence[int],
                        pad_id: int | None) -> list[torch.Tensor]:
    """One forward pass over the right-padded token ids `seqs`: per row, the log-probability of each of its
    tokens from `starts[row]` on, given the tokens before it (the completion after a prompt of that length).

    The one place that turns token ids into completion log-probabilities (RM scores, validation metrics);
    differentiable unless called under inference mode."""
    if any(st < 1 or st > len(s) for s, st in zip(seqs, starts, strict=True)):
        raise ValueError("each completion must start after at least one prompt token and within its sequence")
    device = next(model.parameters()).device
    width = max(len(s) for s in seqs)
    pad = pad_id if pad_id is not None else 0
    ids = torch.tensor([list(s) + [pad] * (width - len(s)) for s in seqs], device=device)
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], device=device)
    logp = model(input_ids=ids, attention_mask=mask).logits.float().log_softmax(-1)
    return [logp[row, st - 1:len(s) - 1].gather(-1, ids[row, st:len(s), None])[:, 0]
            for row, (s, st) in enumerate(zip(seqs, starts, strict=True))]


class LikelihoodRM(RewardModel):
    """Mean token log-likelihood of the completion under a causal LM: the official LASeR code's reward.

    A completion with no tokens (empty, and `append_eos=False`) is unscorable.
    """

    def __init__(self, path: str, name: str | None = None, device: str = "cpu", dtype: str = "float32",
                 batch_size: int = 64, max_length: int | None = None, append_eos: bool = True,
                 trust_remote_code: bool = False, device_map: str | None = None, cache_size: int | None = 1_000_000):
        super().__init__(name or str(path).rstrip("/").rsplit("/", 1)[-1], batch_size, cache_size)
        self.lm = _CausalLMScorer(path, device, dtype, trust_remote_code, append_eos, max_length, device_map)

    def _score_batch(self, prompts: list[str], completions: list[str]) -> tuple[np.ndarray, int]:
        total, count, truncated = self.lm.logprobs(prompts, completions)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count > 0, total / np.maximum(count, 1), np.nan), truncated


class ImplicitDPORM(RewardModel):
    """The implicit reward of a DPO-trained model: beta * (log pi(y|x) - log pi_ref(y|x)), as RewardBench scores it.

    `path` is the DPO model, `ref_path` its reference (the model it was trained from); both must share a
    tokenizer. Sums run over the completion's tokens (plus EOS when `append_eos`).
    """

    def __init__(self, path: str, ref_path: str, beta: float = 0.1, name: str | None = None, device: str = "cpu",
                 dtype: str = "float32", batch_size: int = 64, max_length: int | None = None,
                 append_eos: bool = True, trust_remote_code: bool = False, device_map: str | None = None,
                 cache_size: int | None = 1_000_000):
        if not beta > 0:
            raise RewardError(f"beta must be > 0, got {beta}")
        super().__init__(name or str(path).rstrip("/").rsplit("/", 1)[-1], batch_size, cache_size)
        self.beta = beta
        self.policy = _CausalLMScorer(path, device, dtype, trust_remote_code, append_eos, max_length, device_map)
        self.ref = _CausalLMScorer(ref_path, device, dtype, trust_remote_code, append_eos, max_length, device_map)
        if self.policy.tokenizer.get_vocab() != self.ref.tokenizer.get_vocab():
            raise RewardError(f"{path} and its reference {ref_path} must share a tokenizer (vocabularies differ)")

    def _score_batch(self, prompts: list[str], completions: list[str]) -> tuple[np.ndarray, int]:
        pol, _, truncated = self.policy.logprobs(prompts, completions)
        ref, _, _ = self.ref.logprobs(prompts, completions)
        return self.beta * (pol - ref), truncated
