
import pytest

from studio.config import ConfigError, load_preset, resolve_config


def test_face_full_preset_is_the_papers_face_recipe():
    config = resolve_config(["face-full"], num_images=10).config
    assert (config.learning_rate, config.max_steps, config.batch_size) == (1e-6, 1200, 2)
    assert config.with_prior_preservation and config.train_text_encoder and config.method == "full"


def test_object_full_and_lora_presets():
    assert resolve_config(["object-full"], {"class_noun": "dog"}).config.learning_rate == 2e-6
    assert resolve_config(["object-full"], {"class_noun": "dog"}).config.max_steps == 400
    for name in ("face-lora", "object-lora", "style-lora"):
        lr = resolve_config([name], {"class_noun": "dog"}).config.learning_rate
        assert 5e-5 <= lr <= 2e-4, name


def test_steps_derive_from_image_count_and_say_so():
    resolved = resolve_config(["object-lora"], {"class_noun": "dog"}, num_images=6)
    assert resolved.config.max_steps == 600
    assert "100 steps per image x 6 images" in resolved.explain("max_steps")
    assert resolved.explain("learning_rate").startswith("preset object-lora")
    assert resolve_config(["object-lora"], {"class_noun": "dog", "max_steps": 50}).explain("max_steps") == "set by you"


def test_unknown_key_in_a_preset_file_names_file_and_key(tmp_path):
    bad = tmp_path / "mine.toml"
    bad.write_text('[train]\nlearning_rat = 1e-4\n')
    with pytest.raises(ConfigError) as err:
        load_preset(bad)
    assert "mine.toml" in str(err.value) and "learning_rat" in str(err.value) and "learning_rate" in str(err.value)


@pytest.mark.parametrize("key,value,expect", [
    ("method", "dora", "lora, full"),
    ("learning_rate", 5.0, "out of range"),
    ("max_steps", 1.5, "whole number"),
    ("with_prior_preservation", "yes", "true or false"),
    ("mixed_precision", "fp8", "auto, no, fp16, bf16"),
])
def test_bad_values_are_errors_naming_what_is_allowed(key, value, expect):
    with pytest.raises(ConfigError) as err:
        resolve_config([], {"class_noun": "dog", key: value})
    assert key in str(err.value) and expect in str(err.value)


def test_user_presets_are_found_and_override_builtin(tmp_path):
    (tmp_path / "object-lora.toml").write_text('description = "mine"\n[train]\nlora_rank = 4\n')
    (tmp_path / "quick.toml").write_text('[train]\nmax_steps = 20\n[why]\nmax_steps = "a quick look"\n')
    resolved = resolve_config(["object-lora", "quick"], {"class_noun": "cat"}, user_preset_dir=tmp_path)
    assert resolved.config.lora_rank == 4 and resolved.config.max_steps == 20
    assert resolved.explain("max_steps") == "preset quick: a quick look"


def test_unknown_preset_lists_available():
    with pytest.raises(ConfigError, match="face-full"):
        resolve_config(["no-such-preset"], {"class_noun": "dog"})


def test_missing_class_noun_is_explained():
    with pytest.raises(ConfigError, match="class_noun"):
        resolve_config(["object-lora"])


def test_resolved_config_is_written_as_json_with_sources():
    import json

    data = json.loads(resolve_config(["object-lora"], {"class_noun": "dog"}, num_images=3).to_json())
    assert data["config"]["class_noun"] == "dog" and "max_steps" in data["sources"]


def test_adapter_settings_that_would_do_nothing_are_refused_before_the_queue():
    from studio.config import ConfigError, resolve_config

    with pytest.raises(ConfigError, match="conv_rank and conv_alpha are LoCon's"):
        resolve_config([], {"class_noun": "dog", "adapter": "dora", "conv_rank": 4})
    with pytest.raises(ConfigError, match="lora_dropout does not apply"):
        resolve_config([], {"class_noun": "dog", "adapter": "lokr", "lora_dropout": 0.1})
    assert resolve_config([], {"class_noun": "dog", "adapter": "locon", "conv_rank": 4}).config.conv_rank == 4
    # a full fine-tune ignores the adapter settings of a LoRA preset it is run with
    assert resolve_config(["object-lora"], {"class_noun": "dog", "method": "full"}).config.method == "full"
