"""Memory texts compressed with zstd and a dictionary trained on the store's own texts.

A memory's text is short (LoCoMo turns: 127 bytes of UTF-8 on average), too short for
a compressor to find repeats inside it: zstd alone takes such a turn to ~104 bytes. A
dictionary trained on the store's texts holds their common words, names and phrasing,
and takes it to ~66 bytes, ~75 with the dictionary's own bytes shared out (LoCoMo dev,
five stores of 369-680 turns, dictionaries of 2-4 KB). A dictionary shipped with the
package would cost a store nothing, but it knows nothing of the store's names; a
per-store one is what the issue asked for and what was measured.

How a text is kept (the ``text`` column of ``records``): as TEXT until the store's first
dictionary exists (``TRAIN_MIN`` texts), then as a BLOB: one byte naming the dictionary
(its generation), then a zstd frame without magic number, checksum or dictionary id.
SQLite's type tells the two apart, so a store may hold both, and a store migrated from an
older schema keeps reading its TEXT rows. The dictionary is trained again, and every text
re-encoded with it, each time the store has grown ``RETRAIN_GROWTH`` times since the last
training, up to ``RETRAIN_MAX`` texts (a store's words settle; re-encoding a large store
is a long write).

SQL reads a text through ``latentmem_text(text)`` (``register`` puts it and the other
derivations on a connection: the store does on every connection it opens, and so must a
tool that opens the file itself and reads the full-text index), so the full-text index's
external content, the archive's copy and the integrity check all see the words, never
the bytes. Rejected: a column of its own for
compressed texts (two columns to keep apart, and a text the full-text view would have
to pick from), and compressing the full-text index's content (FTS5 keeps no copy: the
view reads records).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Sequence

import zstandard as zstd

from latentmem.encode.segment import derive_title
from latentmem.errors import StoreCorruptError
from latentmem.inputs import content_hash

# The first dictionary is trained once the store holds this many texts.
TRAIN_MIN = 256
RETRAIN_GROWTH = 4
RETRAIN_MAX = 65_536
# Dictionary size: the texts' bytes over this, within [DICT_MIN, DICT_MAX]. On LoCoMo dev
# 2 and 4 KB dictionaries (3-7% of the text) came out the same with their own bytes counted;
# 16 KB compressed better but cost more than it saved on stores of a few hundred turns.
DICT_SHARE = 25
DICT_MIN = 1024
DICT_MAX = 32_768
LEVEL = 19  # texts are compressed once and read often; level 19 costs ~50 us a turn


def _params() -> zstd.ZstdCompressionParameters:
    return zstd.ZstdCompressionParameters.from_level(
        LEVEL, format=zstd.FORMAT_ZSTD1_MAGICLESS, write_checksum=False, write_dict_id=False,
        write_content_size=True)


class TextCodec:
    """Encodes texts with the store's current dictionary; decodes any generation it can
    load (``load``: generation -> dictionary bytes, None when absent)."""

    def __init__(self, load: Callable[[int], bytes | None]) -> None:
        self._load = load
        self._lock = threading.Lock()
        self._decoders: dict[int, zstd.ZstdDecompressor] = {}
        self.generation = 0  # of the dictionary new texts are written with; 0: none yet
        self._encoder: zstd.ZstdCompressor | None = None

    def use(self, generation: int, data: bytes) -> None:
        """Write new texts with this dictionary from now on."""
        d = zstd.ZstdCompressionDict(data, dict_type=zstd.DICT_TYPE_FULLDICT)
        with self._lock:
            self._encoder = zstd.ZstdCompressor(dict_data=d, compression_params=_params())
            self._decoders[generation] = self._decoder(d)
            self.generation = generation

    def forget(self, generation: int) -> None:
        with self._lock:
            self._decoders.pop(generation, None)

    def clear(self) -> None:
        """Forget every dictionary (after a training that was rolled back)."""
        with self._lock:
            self._decoders.clear()
            self._encoder = None
            self.generation = 0

    @staticmethod
    def _decoder(d: zstd.ZstdCompressionDict) -> zstd.ZstdDecompressor:
        return zstd.ZstdDecompressor(dict_data=d, format=zstd.FORMAT_ZSTD1_MAGICLESS)

    def encode(self, text: str | None) -> str | bytes | None:
        """What to store for ``text``: TEXT while the store has no dictionary."""
        if text is None or self._encoder is None:
            return text
        with self._lock:
            return bytes((self.generation,)) + self._encoder.compress(text.encode("utf-8"))

    def decode(self, value: object) -> str | None:
        """A stored text (TEXT, a compressed BLOB or NULL) -> the text."""
        if value is None or isinstance(value, str):
            return value
        if not isinstance(value, bytes) or not value:
            raise StoreCorruptError(f"a memory's text is stored as {type(value).__name__}; "
                                    "expected text or a compressed blob")
        generation = value[0]
        decoder = self._decoders.get(generation)
        if decoder is None:
            data = self._load(generation)
            if data is None:
                raise StoreCorruptError(f"a memory's text needs text dictionary {generation}, "
                                        "which the store does not hold")
            d = zstd.ZstdCompressionDict(data, dict_type=zstd.DICT_TYPE_FULLDICT)
            decoder = self._decoders[generation] = self._decoder(d)
        try:
            return decoder.decompress(value[1:]).decode("utf-8")
        except (zstd.ZstdError, UnicodeDecodeError) as exc:
            raise StoreCorruptError(f"a memory's compressed text does not decode: {exc}") from exc


def train(texts: Sequence[str]) -> bytes | None:
    """A dictionary for ``texts`` (their bytes over ``DICT_SHARE``, within bounds); None
    when zstd's trainer finds too little to learn from (texts then stay as they are, and
    the next training is tried when the store has grown)."""
    samples: list[bytes | bytearray | memoryview] = [t.encode("utf-8") for t in texts if t]
    size = max(DICT_MIN, min(DICT_MAX, sum(len(x) for x in samples) // DICT_SHARE))
    try:
        return bytes(zstd.train_dictionary(size, samples, level=LEVEL).as_bytes())
    except zstd.ZstdError:
        return None


def plain(text: str | None) -> str:
    """A summary stored as NULL: the text with its whitespace collapsed, which is what
    segment.derive_summary gives for the usual short memory."""
    return " ".join(text.split()) if text else ""


def register(conn: sqlite3.Connection, codec: TextCodec | None = None) -> TextCodec:
    """Put the SQL functions that read a store's derived fields on ``conn``:
    ``latentmem_text`` (a stored text -> the text), ``latentmem_plain`` (-> the derived
    summary), ``latentmem_title`` (-> the derived title) and ``latentmem_hash`` (-> the
    content hash). Without ``codec``, dictionaries are read from ``conn``'s store."""
    if codec is None:
        def load(generation: int) -> bytes | None:
            row = conn.execute("SELECT data FROM text_dicts WHERE generation = ?",
                               (generation,)).fetchone()
            return None if row is None else bytes(row[0])
        codec = TextCodec(load)
    decode = codec.decode

    def title(text: object) -> str:
        got = decode(text)
        return derive_title(got) if got else ""

    def hashed(text: object) -> str:
        got = decode(text)
        return content_hash(got) if got is not None else ""

    conn.create_function("latentmem_text", 1, decode, deterministic=True)
    conn.create_function("latentmem_plain", 1, lambda t: plain(decode(t)), deterministic=True)
    conn.create_function("latentmem_title", 1, title, deterministic=True)
    conn.create_function("latentmem_hash", 1, hashed, deterministic=True)
    return codec
