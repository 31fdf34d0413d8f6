"""The character tokenizer round-trips the task suite's text and loads as a standard HF tokenizer."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from laser.assets import SPECIAL_TOKENS, build_char_tokenizer, save_char_tokenizer
from laser.tasks import make_suite


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    path = save_char_tokenizer(tmp_path_factory.mktemp("tok"))
    assert (path / "tokenizer.json").is_file() and (path / "tokenizer_config.json").is_file()
    return AutoTokenizer.from_pretrained(str(path))


def test_round_trip_of_every_task_prompt_and_answer(tokenizer):
    suite = make_suite(seed=0, train=50, validation=10, test=10)
    for ex in suite.all():
        text = f"{ex.prompt} {ex.answer}\n"
        ids = tokenizer(text)["input_ids"]
        assert ids[0] == tokenizer.bos_token_id and len(ids) == len(text) + 1  # one token per character
        assert tokenizer.unk_token_id not in ids
        assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_special_tokens_padding_and_unknown_characters(tokenizer):
    assert [tokenizer.pad_token, tokenizer.bos_token, tokenizer.eos_token, tokenizer.unk_token] == list(SPECIAL_TOKENS)
    assert [tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id] == [0, 1, 2]
    batch = tokenizer(["ab", "abcd"], padding=True, padding_side="left")
    assert batch["input_ids"][0][:2] == [0, 0] and batch["attention_mask"][0] == [0, 0, 1, 1, 1]
    ids = tokenizer("né\n")["input_ids"]
    assert ids[2] == tokenizer.unk_token_id and tokenizer.decode(ids, skip_special_tokens=True) == "n\n"
    assert len(tokenizer) == len(SPECIAL_TOKENS) + 96  # printable ASCII less \t \r \x0b \x0c


def test_empty_alphabet_is_rejected():
    with pytest.raises(ValueError, match="alphabet"):
        build_char_tokenizer(alphabet="")
