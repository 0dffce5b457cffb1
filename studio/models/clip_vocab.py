"""Write CLIP-format tokenizer files (vocab.json + merges.txt) for a small word list.

The built-in base model and the tests' tiny pipelines need a real CLIP BPE
tokenizer, but nothing may be downloaded, so we build one: the 512 byte symbols
CLIP starts from, then merges that make every listed word a single token.
Words are added one at a time; for each we replay BPE with the merges so far and
append "bridging" merges for whatever pieces remain. New merges always rank
after old ones, so a word that was already one token stays one token.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

BOS, EOS = "<|startoftext|>", "<|endoftext|>"


@lru_cache(maxsize=1)
def byte_symbols() -> tuple[str, ...]:
    """CLIP's (and GPT-2's) printable stand-ins for the 256 byte values, in CLIP's order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return tuple(chr(c) for c in codes)


def _apply_bpe(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    symbols = list(word[:-1]) + [word[-1] + "</w>"]
    while len(symbols) > 1:
        pairs = [(ranks.get((a, b), None), i) for i, (a, b) in enumerate(zip(symbols, symbols[1:]))]
        pairs = [(r, i) for r, i in pairs if r is not None]
        if not pairs:
            break
        best_rank = min(r for r, _ in pairs)
        pair = next((symbols[i], symbols[i + 1]) for r, i in pairs if r == best_rank)
        merged, i = [], 0
        while i < len(symbols):
            if i < len(symbols) - 1 and (symbols[i], symbols[i + 1]) == pair:
                merged.append(symbols[i] + symbols[i + 1])
                i += 2
            else:
                merged.append(symbols[i])
                i += 1
        symbols = merged
    return symbols


def build_vocab(words: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Return (vocab, merges) in which every word of `words` is one token."""
    base = list(byte_symbols())
    vocab_list = base + [s + "</w>" for s in base]
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    known = set(vocab_list)
    for word in dict.fromkeys(w.lower() for w in words if w):
        if not word.isascii() or not word.replace("-", "").isalnum():
            raise ValueError(f"tokenizer word {word!r}: use lowercase ASCII letters and digits only")
        pieces = _apply_bpe(word, ranks)
        while len(pieces) > 1:  # bridge left to right until one token
            pair = (pieces[0], pieces[1])
            ranks[pair] = len(merges)
            merges.append(pair)
            pieces = [pieces[0] + pieces[1]] + pieces[2:]
            if pieces[0] not in known:
                known.add(pieces[0])
                vocab_list.append(pieces[0])
    vocab_list += [BOS, EOS]
    return {tok: i for i, tok in enumerate(vocab_list)}, merges


def write_clip_tokenizer(folder: str | Path, words: list[str], model_max_length: int = 77) -> Path:
    """Write a CLIPTokenizer-loadable folder where each of `words` is a single token."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = build_vocab(words)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": model_max_length,
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": EOS,
        "pad_token": EOS,
        "do_lower_case": True,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    (folder / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS}, indent=2), encoding="utf-8"
    )
    return folder
