import torch

from asd.config.recipes import load_recipe
from asd.models import build_model
from asd.training.ae import model_args as ae_model_args


def test_baseline_shape():
    cfg = load_recipe("ae")
    args = ae_model_args(cfg)
    assert args == dict(input_dim=640, hidden=128, bottleneck=8, layers=4)
    model = build_model("ae", **args)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    dims = [(m.in_features, m.out_features) for m in linears]
    assert dims == [(640, 128), (128, 128), (128, 128), (128, 128), (128, 8),
                    (8, 128), (128, 128), (128, 128), (128, 128), (128, 640)]
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert len(bns) == 9 and all(b.momentum == 0.01 and b.eps == 1e-3 for b in bns)
    recon, z = model(torch.randn(4, 640))
    assert recon.shape == (4, 640) and z.shape == (4, 8)


def test_learns_a_low_dimensional_signal():
    torch.manual_seed(0)
    basis = torch.randn(3, 32)
    data = torch.randn(512, 3) @ basis
    model = build_model("ae", input_dim=32, hidden=32, bottleneck=4, layers=2)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    first = None
    for _ in range(200):
        loss = torch.mean((model(data)[0] - data) ** 2)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.2 * first
