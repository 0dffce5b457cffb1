"""Textual inversion's new token: added to the run's tokenizers, its embedding vectors the only weights it trains.

The identifier becomes a new vocabulary entry ("<sks>", and "<sks>_1", ... when
it has several vectors: diffusers' names, which its pipelines expand in prompts).
The vectors start as the class noun's embedding (the paper's and diffusers'
initialisation) and live in a small `NewTokenEmbedding` put in front of the text
encoder's token embedding: the big vocabulary matrix is never resized, copied or
handed to the optimizer, and every other token embeds exactly as before.
The tokenizers changed are the run's loaded copies; the user's files are never written.
"""
from __future__ import annotations

import torch

from studio.models.embeddings import token_names


class NewTokenEmbedding(torch.nn.Module):
    """The text encoder's token embedding, with the new tokens' vectors (trainable) in place of their rows."""

    def __init__(self, base: torch.nn.Embedding, token_ids: list[int], init: torch.Tensor) -> None:
        super().__init__()
        self.base = base
        self.register_buffer("token_ids", torch.tensor(token_ids, dtype=torch.long), persistent=False)
        self.vectors = torch.nn.Parameter(init.detach().float().clone())

    @property
    def weight(self) -> torch.Tensor:  # what callers that inspect the embedding (dtype, device) look at
        return self.base.weight

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        match = input_ids.unsqueeze(-1) == self.token_ids.to(input_ids.device)  # (..., L, n)
        new = match.any(-1)
        # new ids are beyond the base matrix: look up a harmless row for them, then put the vectors in their place
        out = self.base(torch.where(new, torch.zeros_like(input_ids), input_ids))
        vectors = self.vectors.to(out.dtype)[match.long().argmax(-1)]
        return torch.where(new.unsqueeze(-1), vectors, out)


def add_new_tokens(tokenizers, encoders, token: str, num_vectors: int, class_noun: str) -> list[NewTokenEmbedding]:
    """Add the token(s) to every tokenizer, and a NewTokenEmbedding to every text encoder; returns them in order."""
    names = token_names(token, num_vectors)
    added = []
    for tokenizer, encoder in zip(tokenizers, encoders):
        clash = [name for name in names if name in tokenizer.get_vocab()]
        if clash:
            raise ValueError(f"the token {clash[0]!r} is already in this model's vocabulary; pick another identifier")
        tokenizer.add_tokens(names)
        ids = tokenizer.convert_tokens_to_ids(names)
        base = encoder.get_input_embeddings()
        source_ids = tokenizer(class_noun or "object", add_special_tokens=False).input_ids
        init = base.weight.detach()[source_ids].mean(0, keepdim=True).repeat(num_vectors, 1)
        wrapper = NewTokenEmbedding(base, ids, init)
        encoder.set_input_embeddings(wrapper)
        added.append(wrapper)
    return added


def new_token_embeddings(encoders) -> list[NewTokenEmbedding]:
    """The NewTokenEmbedding of each text encoder that has one (a textual-inversion run's)."""
    return [e.get_input_embeddings() for e in encoders if isinstance(e.get_input_embeddings(), NewTokenEmbedding)]
