"""What every registered component promises, checked for each one the registries discover
(scikit-learn's ``check_estimator`` idea): a new backend, loss or model gets these tests for free."""

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from asd.backends import available as backends
from asd.backends import backend_class, build_backend
from asd.config import BackendConfig, Config, LossConfig
from asd.losses import available as losses
from asd.losses import build_loss
from asd.models import REGISTRY as MODELS
from asd.models import build_model


def _separable(dim=8, seed=0):
    """Normal training clips near 8 directions (source and target), test normals and anomalies."""
    rng = np.random.default_rng(seed)
    modes = rng.normal(size=(8, dim))
    pick = lambda n: modes[rng.integers(0, 8, n)] + 0.05 * rng.normal(size=(n, dim))  # noqa: E731
    train = pick(60)
    domains = np.array(["source"] * 50 + ["target"] * 10)
    test = np.vstack([pick(30), rng.normal(size=(30, dim)) * 2.0])  # anomalies lie between the modes
    return train, domains, test, np.r_[np.zeros(30), np.ones(30)]


def _inputs(cls, X):
    """What the backend reads: for ``recon`` the score itself (a distance to the nearest mode)."""
    if cls.input[0] == "recon":
        return np.linalg.norm(X - X.mean(0), axis=1, keepdims=True)
    return X


@pytest.mark.parametrize("name", backends())
def test_backend_contract(name):
    cls = backend_class(name)
    assert set(cls.input) <= {"embedding", "recon", "residual"}
    be = build_backend(name, **vars(BackendConfig()))  # a whole config section is accepted
    params = be.get_params()
    assert not [k for k in vars(be) if k.endswith("_")]  # __init__ only stores parameters
    X, domains, test, y = _separable()
    X, test = _inputs(cls, X), _inputs(cls, test)
    assert be.fit(X, domains) is be
    scores = be.decision_function(test)
    assert scores.shape == (len(test),) and np.isfinite(scores).all()
    if cls.input[0] != "recon":  # higher = more anomalous
        assert roc_auc_score(y, scores) > 0.9
    assert be.decision_scores_.shape == (len(X),) and np.isfinite(be.threshold_)
    assert np.array_equal(be.predict(test), (scores > be.threshold_).astype(int))
    # a fitted backend is its parameters plus arrays: rebuilt, it scores identically
    back = cls.from_state(params, be.fitted_state())
    assert np.array_equal(back.decision_function(test), scores) and back.threshold_ == be.threshold_
    # deterministic
    assert np.array_equal(build_backend(name, **params).fit(X, domains).decision_function(test), scores)


@pytest.mark.parametrize("name", losses())
def test_loss_contract(name):
    torch.manual_seed(0)
    n_classes, dim = 5, 16
    head = build_loss(name, dim, n_classes, **vars(LossConfig(subclusters=2)))
    emb = torch.randn(20, dim, requires_grad=True)
    target = torch.nn.functional.one_hot(torch.arange(20) % n_classes, n_classes).float()
    assert head.logits(emb).shape == (20, n_classes)
    loss = head(emb, target)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert emb.grad is not None and emb.grad.abs().sum() > 0
    soft = 0.3 * target + 0.7 * target.roll(1, 0)  # mixup targets are accepted
    assert torch.isfinite(head(emb.detach(), soft))
    # the loss can be minimised: gradient steps on the embeddings make every clip's class the argmax
    head.eval()
    x = emb.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=0.05)
    first = float(head(x, target).detach())
    for _ in range(200):
        opt.zero_grad()
        head(x, target).backward()
        opt.step()
    assert float(head(x, target).detach()) < first
    assert (head.logits(x).argmax(1) == target.argmax(1)).all()


@pytest.fixture(scope="module")
def base_checkpoints(tmp_path_factory):
    """Tiny random base encoders in their official formats, for the models that need one."""
    from beats_fixtures import TINY, write_checkpoint
    from hf_fixtures import write_folder

    tmp = tmp_path_factory.mktemp("bases")
    return {"beats": str(write_checkpoint(tmp / "beats.pt", TINY)), "hf": str(write_folder("wavlm", tmp / "hf"))}


def _model_and_input(name, base_checkpoints):
    """A small instance of model ``name`` built from its family's ``model_args`` and a fitting input."""
    from asd.config.overrides import apply_overrides
    from asd.training import family

    cfg = apply_overrides(Config(), {"model.name": name, "data.clip_seconds": 1.0,
                                     "model.checkpoint": base_checkpoints.get(name, "")})
    args = family(name).model_args(cfg)
    model = build_model(name, **args)
    torch.manual_seed(0)
    if "input_dim" in args:  # frame vectors (the autoencoder)
        return model, torch.randn(16, args["input_dim"])
    return model, 0.1 * torch.randn(4, 16000)  # waveforms of 1 s


@pytest.mark.parametrize("name", MODELS.available())
def test_model_contract(name, base_checkpoints):
    from asd.training import family_name

    fam = family_name(name)
    model, x = _model_and_input(name, base_checkpoints)
    model.train()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    opt = torch.optim.SGD([p for _, p in trainable], lr=1e-3)
    for _ in range(2):  # after one step: LoRA's A only gets a gradient once B has left zero
        opt.zero_grad()
        out = model(x)
        y = out[0] if isinstance(out, tuple) else out  # the autoencoder returns (reconstruction, bottleneck)
        if fam == "ae":
            assert y.shape == x.shape
        else:
            assert y.shape == (len(x), model.dim)
        (y.float() ** 2).mean().backward()
        opt.step()
    missing = [n for n, p in trainable if p.grad is None]
    assert not missing, f"no gradient reaches {missing[:3]}"  # every parameter is on the graph
    zero = [n for n, p in trainable if p.grad.abs().sum() == 0]  # a dead ReLU unit may give exact zeros
    assert len(zero) <= 0.05 * len(trainable), f"zero gradients for {zero[:3]}"
    model.eval()
    with torch.no_grad():
        a, b = model(x), model(x)
    a, b = (a[0], b[0]) if isinstance(a, tuple) else (a, b)
    assert torch.equal(a, b)  # deterministic in eval mode
    clone, _ = _model_and_input(name, base_checkpoints)
    clone.load_state_dict(model.state_dict())
    clone.eval()
    with torch.no_grad():
        c = clone(x)
    assert torch.equal(c[0] if isinstance(c, tuple) else c, a)
