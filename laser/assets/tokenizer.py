"""A character-level tokenizer for the embedded default, saved as a standard PreTrainedTokenizerFast.

One token per character of printable ASCII (space and newline included), plus <pad>, <s>, </s> and
<unk>. Encoding prepends <s>; characters outside the alphabet become <unk> (dropped when decoding with
`skip_special_tokens=True`). Loadable by `AutoTokenizer.from_pretrained(path)` and by vLLM like any
hub tokenizer.
"""

from __future__ import annotations

import os
import string
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")
DEFAULT_ALPHABET = "".join(sorted(set(string.printable) - set("\t\r\x0b\x0c")))


def build_char_tokenizer(alphabet: str = DEFAULT_ALPHABET, model_max_length: int = 256) -> PreTrainedTokenizerFast:
    """A character-level fast tokenizer over `alphabet` (ids: specials first, then sorted characters)."""
    chars = sorted(set(alphabet))
    if not chars:
        raise ValueError("alphabet must contain at least one character")
    vocab = {tok: i for i, tok in enumerate([*SPECIAL_TOKENS, *chars])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    # Every character, newline included, is its own piece ("[\s\S]": the regex engine has no dotall flag).
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B",
                                                       special_tokens=[("<s>", vocab["<s>"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>", model_max_length=model_max_length)


def save_char_tokenizer(path: str | os.PathLike, **kwargs) -> Path:
    """Build the character tokenizer and save it as a standard tokenizer directory at `path`."""
    path = Path(path)
    build_char_tokenizer(**kwargs).save_pretrained(str(path))
    return path
