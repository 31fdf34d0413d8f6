"""`HFEngine`: the generation interface on transformers' `model.generate`, for machines without vLLM."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from laser.console import torch_dtype

from .base import GenerationEngine, Sample, SamplingSettings, cut_at_stop, policy_state_dict

log = logging.getLogger(__name__)

def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """'auto' is bfloat16 on a GPU and float32 on CPU; otherwise the named dtype."""
    return torch_dtype(dtype, device)


class HFEngine(GenerationEngine):
    """Left-padded batched `generate`, seeded sampling, raw-logit log-probabilities like vLLM's."""

    name = "hf"

    def __init__(self, model_path: str | Path, dtype: str = "auto", device: str | None = None,
                 max_model_len: int | None = None, chat_template: str = "auto", batch_size: int = 64,
                 trust_remote_code: bool = False, sleep: int = 0):
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=resolve_dtype(dtype, device),
                                                     trust_remote_code=trust_remote_code).to(device).eval()
        self._setup(model_path, model, tokenizer, device, max_model_len, chat_template, batch_size, sleep)

    @classmethod
    def wrap(cls, model, tokenizer, max_model_len: int | None = None, chat_template: str = "auto",
             batch_size: int = 64) -> HFEngine:
        """An engine over a model already in memory, on its device, as it is now (a trainer's live policy: what it
        samples follows the training without any `sync_weights`). It never sleeps."""
        engine = cls.__new__(cls)
        device = str(next(model.parameters()).device)
        engine._setup(getattr(model, "name_or_path", "") or "<in memory>", model, tokenizer, device, max_model_len,
                      chat_template, batch_size, 0)
        return engine

    def _setup(self, model_path, model, tokenizer, device: str, max_model_len: int | None, chat_template: str,
               batch_size: int, sleep: int) -> None:
        max_model_len = max_model_len or getattr(model.config, "max_position_embeddings", None) or 2048
        super().__init__(model_path, tokenizer, max_model_len, chat_template, batch_size, sleep=sleep)
        self.model, self.device = model, device
        self._buffers: dict[str, torch.Tensor] = {}
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.eos_ids = {tokenizer.eos_token_id} | set(_as_list(model.generation_config.eos_token_id))
        self.eos_ids.discard(None)

    @torch.inference_mode()
    def _generate(self, prompt_ids: list[list[int]], settings: SamplingSettings,
                  seeds: list[int] | None) -> list[list[Sample]]:
        width = max(len(p) for p in prompt_ids)
        input_ids = torch.tensor([[self.pad_id] * (width - len(p)) + p for p in prompt_ids], device=self.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompt_ids], device=self.device)
        sampling = settings.temperature > 0
        config = GenerationConfig(
            max_new_tokens=settings.max_new_tokens, do_sample=sampling, num_return_sequences=settings.n,
            temperature=settings.temperature if sampling else None, top_p=settings.top_p if sampling else None,
            top_k=None, pad_token_id=self.pad_id, eos_token_id=sorted(self.eos_ids) or None,
            stop_strings=list(settings.stop) or None, return_dict_in_generate=True, output_logits=settings.logprobs,
        )
        with torch.random.fork_rng(devices=[] if self.device == "cpu" else [torch.device(self.device)],
                                   enabled=seeds is not None):
            # One generator for the batch (transformers draws every row from it): seeded by the batch's first
            # prompt's seed, which no other batch of the call shares; the rows of a batch draw different numbers.
            if seeds is not None:
                torch.manual_seed(seeds[0])
            out = self.model.generate(input_ids=input_ids, attention_mask=mask, generation_config=config,
                                      tokenizer=self.tokenizer if settings.stop else None)
        new = out.sequences[:, width:]
        token_lp = None
        if settings.logprobs:
            logprobs = torch.stack(out.logits, dim=1).float().log_softmax(-1)  # raw logits, as vLLM's default
            token_lp = logprobs.gather(-1, new[:, :logprobs.shape[1]].unsqueeze(-1)).squeeze(-1)
        groups: list[list[Sample]] = [[] for _ in prompt_ids]
        for row in range(new.shape[0]):
            lp = None if token_lp is None else token_lp[row]
            groups[row // settings.n].append(self._sample(new[row].tolist(), lp, settings))
        return groups

    def _sample(self, tokens: list[int], token_lp: torch.Tensor | None, settings: SamplingSettings) -> Sample:
        end = next((i + 1 for i, t in enumerate(tokens) if t in self.eos_ids), None)
        if end is not None:
            kept, reason = tokens[:end], "stop"
        else:
            kept = tokens
            if settings.stop:  # a row stopped by a stop string is padded while the others go on
                while kept and kept[-1] == self.pad_id:
                    kept = kept[:-1]
            reason = "length"
        text = self.tokenizer.decode(kept, skip_special_tokens=True)
        text, hit = cut_at_stop(text, settings.stop)
        if hit:
            reason = "stop"
        return Sample(text, tuple(kept), reason, None if token_lp is None else float(token_lp[:len(kept)].sum()))

    def _load_weights(self, model) -> None:
        missing, unexpected = self.model.load_state_dict(policy_state_dict(model), strict=False)
        missing = [k for k in missing if not (k == "lm_head.weight" and self.model.config.tie_word_embeddings)]
        if missing or unexpected:
            raise ValueError(f"sync_weights: the trained model does not match the engine's: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}")

    def _sleep(self, level: int) -> None:
        """1: the model moves to host memory; 2: its weights are dropped (buffers the state dict does not hold,
        such as rotary tables, are kept on the host)."""
        if level == 1:
            self.model.to("cpu")
        else:
            self._buffers = {k: b.detach().to("cpu", copy=True) for k, b in self.model.named_buffers()}
            self.model.to("meta")
        if str(self.device).startswith("cuda"):
            torch.cuda.empty_cache()

    def _wake_weights(self) -> None:
        if self.asleep == 1:
            self.model.to(self.device)
            return
        self.model.to_empty(device=self.device)
        self.model.tie_weights()  # to_empty gives a tied head storage of its own: one tensor again
        with torch.no_grad():
            for k, b in self.model.named_buffers():
                b.copy_(self._buffers[k])
        self._buffers = {}

    def close(self) -> None:
        self.model = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _as_list(x) -> list:
    return [] if x is None else list(x) if isinstance(x, (list, tuple, set)) else [x]
