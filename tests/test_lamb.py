"""LAMB against a step-by-step numpy computation of its update rule."""
import numpy as np
import pytest
import torch

from libai.optim import LAMB


def _numpy_lamb(w, grads, lr, betas, eps, decay, adam_w_mode=True, amsgrad=False):
    """The LAMB rule written out, one gradient per step."""
    b1, b2 = betas
    m, v, vmax = np.zeros_like(w), np.zeros_like(w), np.zeros_like(w)
    for t, g in enumerate(grads, start=1):
        if decay and not adam_w_mode:
            g = g + decay * w
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        vmax = np.maximum(vmax, v)
        second = vmax if amsgrad else v
        update = (m / (1 - b1**t)) / (np.sqrt(second / (1 - b2**t)) + eps)
        if decay and adam_w_mode:
            update = update + decay * w
        w_norm, u_norm = np.linalg.norm(w), np.linalg.norm(update)
        trust = w_norm / u_norm if w_norm > 0 and u_norm > 0 else 1.0
        w = w - lr * trust * update
    return w


@pytest.mark.parametrize("adam_w_mode,amsgrad", [(True, False), (False, False), (True, True)])
def test_lamb_follows_its_update_rule(adam_w_mode, amsgrad):
    rng = np.random.default_rng(0)
    start = rng.normal(size=(4, 3))
    grads = [rng.normal(size=(4, 3)) for _ in range(4)]
    param = torch.nn.Parameter(torch.tensor(start))
    optimizer = LAMB([param], lr=0.01, betas=(0.9, 0.99), eps=1e-6, weight_decay=0.1,
                     adam_w_mode=adam_w_mode, amsgrad=amsgrad)
    for g in grads:
        param.grad = torch.tensor(g)
        optimizer.step()
    expected = _numpy_lamb(start, grads, 0.01, (0.9, 0.99), 1e-6, 0.1, adam_w_mode, amsgrad)
    np.testing.assert_allclose(param.detach().numpy(), expected, rtol=1e-10, atol=1e-12)


def test_zero_weight_moves_with_trust_ratio_one():
    param = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    optimizer = LAMB([param], lr=0.5)
    param.grad = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    optimizer.step()
    # First Adam step: m_hat / sqrt(v_hat) = sign(g) (up to eps), trust ratio 1.
    np.testing.assert_allclose(param.detach().numpy(), [-0.5, 0.5, -0.5], rtol=1e-6)


def test_lamb_rejects_bad_hyperparameters():
    with pytest.raises(ValueError, match="betas"):
        LAMB([torch.nn.Parameter(torch.ones(1))], betas=(1.0, 0.9))
    with pytest.raises(ValueError, match="lr, eps and weight_decay"):
        LAMB([torch.nn.Parameter(torch.ones(1))], lr=-1.0)
