"""Losses and augmentations against hand-computed values on tiny inputs."""

import math

import numpy as np
import pytest
import torch

from asd.training.augment import featex, mixup
from asd.losses import available, build_loss, dynamic_scale


def _set_centres(loss, W):
    with torch.no_grad():
        loss.W.copy_(torch.tensor(W, dtype=torch.float32))


def _softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def _dcos_dx(x, W):
    """d cos(x, w_c) / dx for unit rows w_c: (w_c − cos_c·x̂) / ‖x‖, shape (C, d)."""
    n = np.linalg.norm(x)
    xh = x / n
    cos = W @ xh
    return (W - cos[:, None] * xh[None, :]) / n, cos


W3 = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
X = np.array([3.0, 4.0])  # normalised: (0.6, 0.8); cosines to W3: 0.6, 0.8, -0.6


def test_unknown_loss_lists_the_available_ones():
    from asd.registry import UnknownComponentError

    with pytest.raises(UnknownComponentError, match="available: " + ", ".join(available())):
        build_loss("nope", 4, 3)


def test_adacos_fixed_scale_and_scadacos_scale():
    assert float(build_loss("adacos", 8, 5).s) == pytest.approx(math.sqrt(2) * math.log(4))
    assert float(build_loss("adacos", 8, 187).s) == pytest.approx(7.39, abs=0.01)  # SPEC: 2023 main
    assert float(build_loss("scadacos", 8, 3, subclusters=4).s) == pytest.approx(math.sqrt(2) * math.log(11))
    assert float(build_loss("adacos", 8, 5, scale=3.0).s) == 3.0


def test_adacos_loss_and_gradient_by_hand():
    loss = build_loss("adacos", 2, 3, trainable=False)
    _set_centres(loss, W3)
    s = math.sqrt(2) * math.log(2)
    x = torch.tensor(X[None], dtype=torch.float32, requires_grad=True)
    y = torch.tensor([[1.0, 0.0, 0.0]])
    out = loss(x, y)
    dcos, cos = _dcos_dx(X, W3)
    assert np.allclose(cos, [0.6, 0.8, -0.6])
    p = _softmax(s * cos)
    assert out.item() == pytest.approx(-math.log(p[0]), rel=1e-5)
    out.backward()
    grad = ((p - [1, 0, 0]) * s) @ dcos
    assert np.allclose(x.grad.numpy()[0], grad, atol=1e-5)
    assert loss.W.grad is None  # fixed centres do not learn


def test_arcface_margin_on_target_only_with_gradient():
    m, s = 0.5, 10.0
    loss = build_loss("arcface", 2, 3, margin=m, scale=s)
    _set_centres(loss, W3)
    x = torch.tensor(X[None], dtype=torch.float32, requires_grad=True)
    y = torch.tensor([[0.0, 1.0, 0.0]])  # target: class 1, cos 0.8
    out = loss(x, y)
    dcos, cos = _dcos_dx(X, W3)
    theta1 = math.acos(0.8)
    z = s * cos.copy()
    z[1] = s * math.cos(theta1 + m)  # only the target logit gets the margin
    p = _softmax(z)
    assert out.item() == pytest.approx(-math.log(p[1]), rel=1e-5)
    out.backward()
    dz_dcos = np.array([s, s * math.sin(theta1 + m) / math.sin(theta1), s])
    grad = ((p - [0, 1, 0]) * dz_dcos) @ dcos
    assert np.allclose(x.grad.numpy()[0], grad, atol=1e-4)
    # Inference logits carry no margin.
    assert np.allclose(loss.logits(x).detach().numpy()[0], s * cos, atol=1e-5)


def test_scadacos_subcluster_probabilities_sum_per_class():
    torch.manual_seed(0)
    C, K, d = 3, 4, 5
    loss = build_loss("scadacos", d, C, subclusters=K)
    x = torch.randn(2, d)
    xn = x.numpy() / np.linalg.norm(x.numpy(), axis=1, keepdims=True)
    Wn = loss.W.detach().numpy() / np.linalg.norm(loss.W.detach().numpy(), axis=1, keepdims=True)
    s = math.sqrt(2) * math.log(C * K - 1)
    for i in range(2):
        p_sub = _softmax(s * Wn @ xn[i])  # over all C·K centres
        P = p_sub.reshape(C, K).sum(1)  # centre c·K + k belongs to class c
        got = torch.softmax(loss.logits(x[i:i + 1]), 1).detach().numpy()[0]
        assert np.allclose(got, P, atol=1e-5) and got.sum() == pytest.approx(1.0, abs=1e-5)
    y = torch.tensor([[0.0, 0.0, 1.0], [0.5, 0.5, 0.0]])
    P = torch.softmax(loss.logits(x), 1).detach().numpy()
    expect = -(np.log(P[0, 2]) + 0.5 * np.log(P[1, 0]) + 0.5 * np.log(P[1, 1])) / 2
    assert loss(x, y).item() == pytest.approx(expect, rel=1e-5)


def test_adaproj_cosine_to_class_subspace():
    loss = build_loss("adaproj", 3, 2, subclusters=2, scale=1.0)
    _set_centres(loss, [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1]])  # class 0: e1,e2; class 1: e3 (twice)
    x = torch.tensor([[1.0, 1.0, 1.0]])
    cos = loss.cosines(x).detach().numpy()[0]
    # class 0: ‖P x‖ of the unit x = √(2/3); class 1: the repeated e3 doubles the "projection",
    # which re-normalisation undoes: cos = 2·(1/3) / (2·√(1/3)) = √(1/3).
    assert np.allclose(cos, [math.sqrt(2 / 3), math.sqrt(1 / 3)], atol=1e-6)


def test_dynamic_scale_formula():
    cos = torch.tensor([[0.8, 0.1, -0.2]])
    y = torch.tensor([[1.0, 0.0, 0.0]])
    expect = math.log(math.exp(2 * 0.1) + math.exp(2 * -0.2)) / 0.8  # θ = acos 0.8 < π/4
    assert dynamic_scale(cos, y, 2.0) == pytest.approx(expect, rel=1e-5)


def test_mixup_mixes_waves_and_targets_with_the_same_lambda():
    g = torch.Generator().manual_seed(0)
    y = torch.eye(6)
    wave, target = mixup(y.clone(), y.clone(), 1.0, g)
    assert torch.allclose(wave, target) and torch.allclose(target.sum(1), torch.ones(6))
    assert not torch.allclose(target, y)
    same_w, same_t = mixup(y.clone(), y.clone(), 0.0, g)
    assert torch.equal(same_w, y) and torch.equal(same_t, y)


def test_featex_exchanges_second_part_and_builds_3c_targets():
    g = torch.Generator().manual_seed(0)
    emb = torch.tensor([[1.0, 1.0, 10.0, 10.0], [2.0, 2.0, 20.0, 20.0]])
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    out, t = featex(emb, y, 1.0, g, split=2)
    swapped = (out[:, 2:] != emb[:, 2:]).all(1)
    assert torch.equal(out[:, :2], emb[:, :2])
    for i in range(2):
        if swapped[i]:
            j = 1 - i
            assert torch.equal(out[i, 2:], emb[j, 2:])
            assert torch.allclose(t[i], torch.cat([torch.zeros(2), 0.5 * y[i], 0.5 * y[j]]))
        else:
            assert torch.allclose(t[i], torch.cat([y[i], torch.zeros(4)]))
    assert torch.allclose(t.sum(1), torch.ones(2))


def test_specaug_masks_through_stft_round_trip():
    from asd.training.augment import specaug

    g = torch.Generator().manual_seed(0)
    t = torch.arange(16000) / 16000
    wave = torch.sin(2 * torch.pi * 440 * t).repeat(4, 1)
    assert torch.equal(specaug(wave, 0.0, g), wave)
    out = specaug(wave, 1.0, g, width=20)
    assert out.shape == wave.shape
    # Unmasked parts come back from the iSTFT nearly unchanged; masks remove energy somewhere.
    assert (out.pow(2).sum(1) < wave.pow(2).sum(1)).all()
    assert torch.isclose(out[:, 4000:4100], wave[:, 4000:4100], atol=1e-3).float().mean() > 0.5
