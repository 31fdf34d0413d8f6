"""The text a sequence-classifier RM scores for (prompt, completion): shared by the in-process `hf` backend and
the remote one, so that both send a server or a model exactly the same strings."""

from __future__ import annotations

from collections.abc import Sequence


def classifier_texts(tokenizer, prompts: Sequence[str], completions: Sequence[str],
                     use_chat_template: bool | None = None) -> list[str]:
    """The tokenizer's chat template over [user: prompt, assistant: completion] when it has one (or when
    `use_chat_template` says so), else `prompt + completion + eos`, the way TRL's RewardTrainer builds them."""
    if use_chat_template is None:
        use_chat_template = getattr(tokenizer, "chat_template", None) is not None
    if use_chat_template:
        return [tokenizer.apply_chat_template([{"role": "user", "content": p}, {"role": "assistant", "content": c}],
                                              tokenize=False)
                for p, c in zip(prompts, completions, strict=True)]
    eos = tokenizer.eos_token or ""
    return [p + c + eos for p, c in zip(prompts, completions, strict=True)]
