"""The optimiser step's linear learning-rate warm-up (train.warmup_steps) and its resume."""

import pytest
import torch

from asd.training.runtime import Stepper


def _stepper(warmup: int, lr: float = 0.1) -> tuple[Stepper, torch.nn.Linear]:
    torch.manual_seed(0)
    layer = torch.nn.Linear(3, 1)
    params = list(layer.parameters())
    opt = torch.optim.AdamW(params, lr=lr)
    return Stepper(opt, torch.amp.GradScaler("cuda", enabled=False), params, warmup_steps=warmup), layer


def _lrs(step: Stepper, layer, n: int) -> list[float]:
    out = []
    for _ in range(n):
        step(layer(torch.ones(2, 3)).square().mean())
        out.append(step.optimizer.param_groups[0]["lr"])
    return out


def test_learning_rate_ramps_linearly_from_zero_then_stays():
    step, layer = _stepper(warmup=4)
    assert _lrs(step, layer, 6) == pytest.approx([0.0, 0.025, 0.05, 0.075, 0.1, 0.1])
    none, layer = _stepper(warmup=0)
    assert _lrs(none, layer, 3) == [0.1, 0.1, 0.1]


def test_a_resumed_stepper_continues_the_ramp():
    whole, layer = _stepper(warmup=4)
    expected = _lrs(whole, layer, 6)
    first, layer = _stepper(warmup=4)
    _lrs(first, layer, 2)
    state = first.state_dict()
    second = Stepper(torch.optim.AdamW(list(layer.parameters()), lr=0.1), first.scaler, list(layer.parameters()),
                     warmup_steps=4)
    second.load_state_dict(state["optim"], state["scaler"])
    assert _lrs(second, layer, 4) == pytest.approx(expected[2:])


def test_optimiser_state_without_a_step_count_loads():
    """Checkpoints written before the warm-up existed carry no count: they resume with the count at 0."""
    step, layer = _stepper(warmup=0)
    state = step.state_dict()["optim"]
    for group in state["param_groups"]:
        del group["steps_done"], group["target_lr"]
    again, _ = _stepper(warmup=0)
    again.load_state_dict(state, None)
    assert again.optimizer.param_groups[0]["steps_done"] == 0
    assert _lrs(again, layer, 1) == [0.1]
