"""Word list of the built-in model's tokenizer.

Every word here becomes exactly one CLIP token (see studio/models/clip_vocab.py).
Besides the world's own words we include common English words, so prompts about
other subjects tokenize sensibly, and a set of rare identifier tokens that never
occur in training captions, so the studio's "is this identifier rare?" checks
have real rare tokens to find.
"""
from __future__ import annotations

from pathlib import Path

from studio.models.clip_vocab import write_clip_tokenizer
from studio.world.render import WORLD_WORDS

RARE_IDENTIFIERS = (
    "sks", "zwx", "ohwx", "qlx", "vrn", "bsk", "kxq", "phn", "tnq", "zqv",
    "xjr", "wqz", "pvk", "jkx", "qzt", "vxm", "hqz", "zkr", "fxq", "kwz",
)

COMMON_WORDS = """
a an the of in on at to with and or for from by as is are was be this that these those it its
his her their my your our one two three some many few very more most no not only also then than
photo picture image painting drawing sketch render illustration portrait close up view shot style
dog cat person man woman boy girl child baby face head hand eye eyes hair friend people animal bird
fish horse cow sheep pig rabbit bear lion tiger monkey duck mouse toy doll robot car truck bus bike
bicycle train plane boat ship house building city street road bridge tree flower grass garden forest
park beach sea ocean lake river mountain hill sky cloud sun moon night day morning evening rain snow
water fire stone rock sand wood wooden metal glass paper plastic gold silver shoe shoes boot hat cap
bag backpack sunglasses glasses shirt dress jacket coat watch ring cup mug bowl plate bottle vase
book pen chair table bed sofa lamp door window wall floor room kitchen box ball clock phone computer
camera guitar teapot pot candle pillow backpack can jar sculpture statue
big little tiny huge tall short long round flat square bright dark light colorful colourful shiny
old new young cute happy sad beautiful pretty ugly soft hard hot cold wet dry clean dirty fluffy
striped stripe stripes dotted spotted pattern marking logo
sitting standing running walking jumping flying swimming sleeping eating playing holding wearing
under over behind near next front back inside outside above below between beside around top bottom
left right middle side corner edge center centre background foreground scene
high quality detailed realistic sharp blurry best masterpiece studio lighting
cyan magenta beige teal navy olive maroon violet grey
""".split()


def tokenizer_words() -> list[str]:
    """World words first (lowest ids), then common English, then rare identifiers."""
    return list(dict.fromkeys(list(WORLD_WORDS) + COMMON_WORDS + list(RARE_IDENTIFIERS)))


def write_tokenizer(folder: str | Path) -> Path:
    return write_clip_tokenizer(folder, tokenizer_words())
