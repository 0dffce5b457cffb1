import torch
from diffusers import DDPMScheduler

from studio.training.losses import dreambooth_loss, min_snr_weights, sample_noise, target_for


def _scheduler(prediction_type="epsilon"):
    return DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", prediction_type=prediction_type)


def _reference_weight(sched, t, gamma, prediction_type):
    abar = sched.alphas_cumprod[t].item()
    snr = abar / (1 - abar)
    return min(snr, gamma) / (snr + 1 if prediction_type == "v_prediction" else snr)


def test_min_snr_weights_follow_each_samples_own_timestep_with_prior_batch():
    """Batch 1 and 2 with prior preservation: [instance..., class...] each weighted by its own SNR."""
    sched = _scheduler()
    for batch in (1, 2):
        timesteps = torch.tensor([5, 900, 300, 40][: 2 * batch])
        weights = min_snr_weights(sched.alphas_cumprod, timesteps, 5.0, "epsilon")
        expected = [_reference_weight(sched, int(t), 5.0, "epsilon") for t in timesteps]
        assert torch.allclose(weights, torch.tensor(expected), rtol=1e-5)


def test_weighted_loss_splits_instance_and_prior_parts_per_sample():
    sched = _scheduler()
    for batch in (1, 2):
        timesteps = torch.tensor([5, 900, 300, 40][: 2 * batch])
        pred = torch.randn(2 * batch, 4, 8, 8)
        target = torch.randn(2 * batch, 4, 8, 8)
        weights = min_snr_weights(sched.alphas_cumprod, timesteps, 5.0, "epsilon")
        parts = dreambooth_loss(pred, target, num_instance=batch, prior_weight=0.5, sample_weights=weights)
        per = ((pred - target) ** 2).mean(dim=(1, 2, 3)) * weights
        assert torch.isclose(parts.instance, per[:batch].mean())
        assert torch.isclose(parts.prior, per[batch:].mean())
        assert torch.isclose(parts.total, per[:batch].mean() + 0.5 * per[batch:].mean())


def test_v_prediction_weights_and_target():
    sched = _scheduler("v_prediction")
    t = torch.tensor([10, 500])
    w = min_snr_weights(sched.alphas_cumprod, t, 5.0, "v_prediction")
    assert torch.allclose(w, torch.tensor([_reference_weight(sched, int(x), 5.0, "v_prediction") for x in t]), rtol=1e-5)
    latents, noise = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    assert torch.allclose(target_for(sched, latents, noise, t), sched.get_velocity(latents, noise, t))
    assert torch.equal(target_for(_scheduler(), latents, noise, t), noise)


def test_without_prior_the_prior_part_is_zero():
    parts = dreambooth_loss(torch.ones(2, 4, 2, 2), torch.zeros(2, 4, 2, 2), num_instance=2, prior_weight=1.0)
    assert parts.prior.item() == 0.0 and parts.total.item() == parts.instance.item() == 1.0


def test_offset_noise_shifts_whole_channels():
    latents = torch.zeros(64, 4, 8, 8)
    plain = sample_noise(latents, 0.0, torch.Generator().manual_seed(0))
    offset = sample_noise(latents, 0.5, torch.Generator().manual_seed(0))
    channel_means = (offset - plain).mean(dim=(2, 3))
    assert torch.allclose(offset - plain, channel_means[:, :, None, None].expand_as(plain), atol=1e-6)
    assert 0.3 < channel_means.std().item() < 0.7
