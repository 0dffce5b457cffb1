import pytest
from transformers import CLIPTokenizer

from studio.training.identifier import check_identifier, suggest_identifiers


@pytest.fixture(scope="module")
def tokenizer(tiny_sd):
    return CLIPTokenizer.from_pretrained(tiny_sd / "tokenizer")


def test_rare_single_token_identifier_passes_cleanly(tokenizer):
    report = check_identifier(tokenizer, "sks", "dog", "a photo of sks dog")
    assert report.ok and not report.warnings and report.tokens == ("sks</w>",)


def test_identifier_that_splits_warns_and_suggests_single_tokens(tokenizer):
    report = check_identifier(tokenizer, "qwzzk", "dog", "a photo of qwzzk dog")
    assert report.ok and any("splits into" in w for w in report.warnings)
    assert report.suggestions and all(len(tokenizer(s, add_special_tokens=False).input_ids) == 1 for s in report.suggestions)


def test_common_word_identifier_warns(tokenizer):
    report = check_identifier(tokenizer, "red", "dog", "a photo of red dog")
    assert any("common word" in w for w in report.warnings)
    assert "red" not in report.suggestions


def test_prompt_missing_identifier_or_class_noun_is_an_error(tokenizer):
    assert not check_identifier(tokenizer, "sks", "dog", "a photo of a dog").ok
    report = check_identifier(tokenizer, "sks", "dog", "a photo of sks")
    assert not report.ok and "class noun" in report.errors[0]


def test_suggestions_are_rare_tokens_from_the_vocabulary(tokenizer):
    picks = suggest_identifiers(tokenizer, count=3)
    assert set(picks) <= {"sks", "zwx", "ohwx"}  # the tiny vocabulary's rare words; no common ones
    assert len(picks) == 3
