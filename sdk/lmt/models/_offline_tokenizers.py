"""Byte-level BPE tokenizers built in code, so tiny variants need no download.

The vocabulary holds the 256 byte-level symbols (so any text, Chinese included, tokenises) plus whole-word
merges for a small English word list, so that common prompt words become single tokens as in a real BPE.
"""

from __future__ import annotations

from pathlib import Path

#: Words that get whole-word tokens: prompt templates, our example labels and queries.
WORDS = (  # noqa: SIM905 (one readable block of words)
    "a an the of and or in on at to is are this that with photo picture image question answer "
    "cat cats dog dogs car cars bus truck motorcycle bicycle person people bird horse tree sky road "
    "red green blue yellow black white small large one two three what how many where color "
    "apple banana bottle shelf product lung chest ct mri x ray scan brain bone normal abnormal"
).split()


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable unicode map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def _apply_merges(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Byte-pair encoding of one word: repeatedly merge the adjacent pair with the lowest rank."""
    while len(symbols) > 1:
        pairs = [(ranks.get(pair, len(ranks)), i) for i, pair in enumerate(zip(symbols, symbols[1:], strict=False))]
        rank, i = min(pairs)
        if rank == len(ranks):
            break
        symbols = [*symbols[:i], symbols[i] + symbols[i + 1], *symbols[i + 2 :]]
    return symbols


def _word_merges(words: tuple[str, ...], end_of_word: str) -> list[tuple[str, str]]:
    """Merges that turn each word into one token (optionally ending with ``end_of_word``).

    BPE applies merges by global rank, so a merge learned for an earlier word ("at") can fire inside a later one
    ("cat"); each word is therefore first split with the merges so far, and its pieces are then joined left to right.
    """
    ranks: dict[tuple[str, str], int] = {}
    for word in words:
        symbols = list(word)
        symbols[-1] += end_of_word
        pieces = _apply_merges(symbols, ranks)
        current = pieces[0]
        for piece in pieces[1:]:
            if (current, piece) not in ranks:
                ranks[(current, piece)] = len(ranks)
            current += piece
    return sorted(ranks, key=ranks.get)


def build_clip_tokenizer(folder: Path | None = None):
    """A CLIPTokenizer with a ~700-token vocabulary. Saved to ``folder`` when given."""
    from transformers import CLIPTokenizer

    byte_symbols = list(bytes_to_unicode().values())
    merges = _word_merges(WORDS, "</w>")
    vocab_tokens = byte_symbols + [s + "</w>" for s in byte_symbols] + ["".join(pair) for pair in merges]
    vocab_tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: index for index, token in enumerate(dict.fromkeys(vocab_tokens))}
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)
    if folder is not None:
        tokenizer.save_pretrained(folder)
    return tokenizer


def build_gpt2_tokenizer(extra_special_tokens: tuple[str, ...] = (), add_bos_token: bool = False):
    """A GPT2Tokenizer (as OPT uses) with a small vocabulary; ``extra_special_tokens`` are added.

    ``add_bos_token=True`` prepends ``</s>`` to every text, as OPT's own tokenizer does.
    """
    from transformers import GPT2Tokenizer

    byte_symbols = list(bytes_to_unicode().values())
    space = bytes_to_unicode()[ord(" ")]
    merges = _word_merges(tuple(space + w for w in WORDS), "")
    vocab_tokens = ["<pad>", "</s>", "<unk>"] + byte_symbols + ["".join(pair) for pair in merges]
    vocab = {token: index for index, token in enumerate(dict.fromkeys(vocab_tokens))}
    tokenizer = GPT2Tokenizer(
        vocab=vocab, merges=merges, bos_token="</s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        add_prefix_space=False, add_bos_token=add_bos_token,
    )
    if extra_special_tokens:
        tokenizer.add_special_tokens({"additional_special_tokens": list(extra_special_tokens)})
    return tokenizer


def build_qwen2_tokenizer(special_tokens: tuple[str, ...], chat_template: str, **kwargs):
    """A Qwen2Tokenizer (byte-level BPE, as Qwen2.5-VL and InternVL3 use) with ``special_tokens`` added as special.

    ``<|endoftext|>`` (pad and unknown) and the ChatML pair ``<|im_start|>``/``<|im_end|>`` (end of a turn) come
    first, as in the real vocabulary; ``kwargs`` go to the tokenizer (e.g. ``extra_special_tokens``).
    """
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer

    byte_symbols = list(bytes_to_unicode().values())
    space = bytes_to_unicode()[ord(" ")]
    merges = _word_merges((*WORDS, *(space + w for w in WORDS)), "")
    vocab_tokens = byte_symbols + ["".join(pair) for pair in merges]
    vocab = {token: index for index, token in enumerate(dict.fromkeys(vocab_tokens))}
    tokenizer = Qwen2Tokenizer(
        vocab=vocab, merges=merges, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None,
        chat_template=chat_template, **kwargs,
    )
    chat_tokens = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", *special_tokens)
    tokenizer.add_tokens([AddedToken(token, special=True, normalized=False) for token in dict.fromkeys(chat_tokens)])
    return tokenizer
