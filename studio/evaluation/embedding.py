"""Real models' scorer: DINOv2 and CLIP embeddings, as the DreamBooth paper measures.

    subject fidelity  mean cosine similarity of subject-prompt generations to the user's photos (DINO; CLIP-I beside it)
    prompt fidelity   CLIP-T: mean cosine similarity of recontextualised generations to their own prompt's text
    drift (PRES)      mean DINO similarity of plain class-prompt generations to the user's photos (lower is better)
    diversity         mean pairwise DINO distance (1 - cosine) between class-prompt generations (the paper's DIV
                      uses LPIPS; DINO keeps the studio to two scorer models)

Both models load lazily, once, from a hub id or a local folder (`scorer_models`), on the run's device. Offline and
not cached, they cannot load: `prepare` says so in one line naming the setting to change.
"""
from __future__ import annotations

from itertools import combinations
from typing import Sequence

import torch
from PIL import Image

from studio.evaluation.scores import UNMEASURED, EvalImages, Scorer, ScorerUnavailable, Scores, fraction

DEFAULT_MODELS = ("facebook/dinov2-small", "openai/clip-vit-base-patch32")


class EmbeddingScorer(Scorer):
    def __init__(self, models: Sequence[str] = DEFAULT_MODELS, device: str | torch.device = "cpu") -> None:
        given = list(models) + list(DEFAULT_MODELS[len(models):])
        self.dino_id, self.clip_id = str(given[0]), str(given[1])
        self.device = torch.device(device)
        self.name = f"DINOv2 {self.dino_id.rstrip('/').split('/')[-1]} + CLIP {self.clip_id.rstrip('/').split('/')[-1]}"
        self._dino = self._clip = None

    # -- loading ---------------------------------------------------------------------------
    def prepare(self) -> None:
        if self._dino is None:
            from transformers import AutoImageProcessor, AutoModel

            self._dino = (_load(AutoImageProcessor, self.dino_id), _load(AutoModel, self.dino_id).to(self.device).eval())
        if self._clip is None:
            from transformers import CLIPModel, CLIPProcessor

            self._clip = (_load(CLIPProcessor, self.clip_id), _load(CLIPModel, self.clip_id).to(self.device).eval())

    # -- embeddings ------------------------------------------------------------------------
    @torch.no_grad()
    def _dino_embed(self, images: Sequence[Image.Image]) -> torch.Tensor:
        processor, model = self._dino
        pixels = processor(images=[i.convert("RGB") for i in images], return_tensors="pt")["pixel_values"]
        out = model(pixel_values=pixels.to(self.device))
        return _unit(out.pooler_output if getattr(out, "pooler_output", None) is not None else out.last_hidden_state[:, 0])

    @torch.no_grad()
    def _clip_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        processor, model = self._clip
        pixels = processor(images=[i.convert("RGB") for i in images], return_tensors="pt")["pixel_values"]
        return _unit(_features(model.get_image_features(pixel_values=pixels.to(self.device))))

    @torch.no_grad()
    def _clip_texts(self, texts: Sequence[str]) -> torch.Tensor:
        processor, model = self._clip
        tokens = processor(text=list(texts), return_tensors="pt", padding=True, truncation=True)
        return _unit(_features(model.get_text_features(input_ids=tokens["input_ids"].to(self.device),
                                                       attention_mask=tokens["attention_mask"].to(self.device))))

    # -- the numbers -----------------------------------------------------------------------
    def score(self, drawn: EvalImages, photos: Sequence[Image.Image]) -> Scores:
        self.prepare()
        photos_dino, photos_clip = self._dino_embed(photos), self._clip_images(photos)
        subject = [d.image for d in drawn.subject]
        fidelity = _mean_similarity(self._dino_embed(subject), photos_dino)
        clip_i = _mean_similarity(self._clip_images(subject), photos_clip)
        prompt_fidelity = UNMEASURED
        if drawn.recontext:
            images = self._clip_images([d.image for d in drawn.recontext])
            texts = self._clip_texts([d.prompt for d in drawn.recontext])
            prompt_fidelity = float((images * texts).sum(dim=1).mean())
        classes = self._dino_embed([d.image for d in drawn.classes])
        drift = _mean_similarity(classes, photos_dino)
        pairs = list(combinations(range(len(classes)), 2))
        diversity = (sum(1 - float(classes[a] @ classes[b]) for a, b in pairs) / len(pairs)) if pairs else UNMEASURED
        return Scores(fraction(fidelity), fraction(prompt_fidelity), fraction(drift), fraction(diversity),
                      note=f"CLIP-I {fraction(clip_i):.3f}", extra={"clip_i": fraction(clip_i)})


def _load(loader, model_id: str):
    from studio.models.families import LOADING_LOCK  # one model load at a time in the process (see there)

    try:
        with LOADING_LOCK:
            return loader.from_pretrained(model_id)
    except Exception as exc:  # offline and not cached, a typo, a folder that is not a model: all say the same
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise ScorerUnavailable(f"scorer model {model_id!r} could not be loaded ({reason}); set scorer_models "
                                "(CLI: --scorer-model) to a downloaded hub id or a local folder") from exc


def _features(out) -> torch.Tensor:
    """transformers 5 returns an output object from get_*_features (pooled and projected), older ones a tensor."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def _unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x.float(), dim=-1).cpu()


def _mean_similarity(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a @ b.T).mean()) if len(a) and len(b) else UNMEASURED
