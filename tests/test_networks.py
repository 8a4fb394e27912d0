"""The network factory: mlp and cnn trunks, the automatic choice from the observations, image encoding."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from rlrun.errors import ConfigError
from rlrun.networks import ActorCritic, ConvFeatures, ObservationEncoder, PolicyHead, network

ATARI = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)


def test_auto_picks_the_nature_cnn_for_images_and_the_mlp_for_vectors():
    cnn = network((4, 84, 84), 6)
    convolutions = [layer for layer in cnn.modules() if isinstance(layer, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride) for c in convolutions] == [
        (4, 32, (8, 8), (4, 4)), (32, 64, (4, 4), (2, 2)), (64, 64, (3, 3), (1, 1))]
    linears = [layer for layer in cnn.modules() if isinstance(layer, nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linears] == [(64 * 7 * 7, 512), (512, 6)]  # Mnih et al. 2015
    mlp = network(4, 2)
    assert not any(isinstance(layer, nn.Conv2d) for layer in mlp.modules())
    assert [l.out_features for l in mlp.modules() if isinstance(l, nn.Linear)] == [64, 64, 2]


def test_the_cnn_scales_uint8_pixels_to_the_unit_interval_inside_the_network():
    torch.manual_seed(0)
    net = network((4, 84, 84), 3)
    pixels = torch.randint(0, 256, (2, 4, 84, 84), dtype=torch.uint8)
    features, body = net[1], net[2]
    np.testing.assert_allclose(net(pixels).detach(), body(features(pixels.float() / 255)).detach(), rtol=1e-6)


def test_cnn_heads_serve_dqn_dueling_and_a_shared_actor_critic():
    pixels = torch.zeros(5, 4, 84, 84, dtype=torch.uint8)
    assert network((4, 84, 84), 6, dueling=True)(pixels).shape == (5, 6)
    logits, value = network((4, 84, 84), (6, 1))(pixels)
    assert logits.shape == (5, 6) and value.shape == (5, 1)


def test_images_stay_uint8_and_channels_last_images_are_turned_channels_first():
    encode = ObservationEncoder(ATARI, torch.device("cpu"))
    batch = encode(np.zeros((2, 4, 84, 84), np.uint8))
    assert encode.input_shape == (4, 84, 84) and batch.dtype == torch.uint8 and batch.shape == (2, 4, 84, 84)
    rgb = ObservationEncoder(gym.spaces.Box(0, 255, (96, 96, 3), np.uint8), torch.device("cpu"))
    image = np.arange(96 * 96 * 3, dtype=np.uint8).reshape(1, 96, 96, 3)
    assert rgb.input_shape == (3, 96, 96)
    np.testing.assert_array_equal(rgb(image)[0, 2], image[0, :, :, 2])
    assert ObservationEncoder(gym.spaces.Box(-1, 1, (3, 4, 5), np.float32), torch.device("cpu")).input_shape == 60


@pytest.mark.parametrize("build, message", [
    (lambda: network(4, 2, trunk="cnn"), "network=cnn needs image observations"),
    (lambda: network(4, 2, trunk="resnet"), "network.trunk='resnet' is unknown"),
    (lambda: ConvFeatures((1, 20, 20), [[32, 8, 4], [64, 4, 2], [64, 3, 1]]), r"images of shape \(1, 20, 20\) are too small"),
])
def test_bad_network_settings_are_one_line_errors(build, message):
    with pytest.raises(ConfigError, match=message):
        build()


def test_policy_head_log_probs_and_entropies_by_hand():
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]]))
    log_prob, entropy = PolicyHead(gym.spaces.Discrete(3)).log_prob_and_entropy(logits, torch.tensor([0, 2]))
    torch.testing.assert_close(log_prob, torch.log(torch.tensor([0.5, 0.8])))
    torch.testing.assert_close(entropy, torch.tensor([1.5 * np.log(2), -0.2 * np.log(0.1) - 0.8 * np.log(0.8)]).float())
    gaussian = PolicyHead(gym.spaces.Box(-1, 1, (2,)), log_std_init=np.log(2.0))
    log_prob, entropy = gaussian.log_prob_and_entropy(torch.zeros(1, 2), torch.tensor([[2.0, 0.0]]))
    log_density = -np.log(2 * np.sqrt(2 * np.pi))  # N(0, 2^2) at 0; at 2 it is lower by 1/2
    torch.testing.assert_close(log_prob, torch.tensor([2 * log_density - 0.5]).float())
    torch.testing.assert_close(entropy, torch.tensor([2 * (0.5 + 0.5 * np.log(2 * np.pi) + np.log(2.0))]).float())


def sde_actor_critic(action_space: gym.Space = gym.spaces.Box(-1, 1, (2,)), **options) -> ActorCritic:
    """gSDE on 64x64 tanh networks; log sigma = log 0.5 in every entry of W."""
    return ActorCritic(network, 1, action_space, log_std_init=np.log(0.5), state_dependent_noise=True, **options)


def test_state_dependent_noise_is_linear_in_the_policy_features_with_its_gaussian_log_probability():
    torch.manual_seed(0)
    model = sde_actor_critic()
    x = torch.tensor([[0.7], [-1.3]])
    (mean, features), _ = model(x)
    assert features.shape == (2, 64) and not features.requires_grad
    torch.testing.assert_close(features, model.actor[:-1](x).detach())
    # sigma_j(s)^2 = sum_k z_k(s)^2 0.5^2 + 1e-6, the same for both action dimensions
    std = (0.25 * features.pow(2).sum(-1, keepdim=True) + 1e-6).sqrt().expand(2, 2)
    actions = torch.tensor([[0.1, -0.2], [0.3, 0.0]])
    log_prob, entropy = model.head.log_prob_and_entropy((mean, features), actions)
    gaussian = torch.distributions.Normal(mean, std)
    torch.testing.assert_close(log_prob, gaussian.log_prob(actions).sum(-1))
    torch.testing.assert_close(entropy, gaussian.entropy().sum(-1))
    unit_noise = torch.randn(2, 64, 2)
    sampled = model.act(x, explore=True, unit_noise=unit_noise)
    expected = mean + torch.einsum("rk,rkj->rj", features, 0.5 * unit_noise)
    np.testing.assert_allclose(sampled, expected.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.act(x, explore=False), mean.detach().numpy())
    assert not model.head.log_std.requires_grad and model.head.sde.log_std.requires_grad


@pytest.mark.parametrize("build, message", [
    (lambda: sde_actor_critic(gym.spaces.Discrete(2)), "algo.use_sde=true explores Box actions"),
    (lambda: sde_actor_critic(shared_trunk=True), "needs a policy network of its own"),
])
def test_state_dependent_noise_needs_box_actions_and_a_policy_network_of_its_own(build, message):
    with pytest.raises(ConfigError, match=message):
        build()
