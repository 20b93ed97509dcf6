"""The later methods' math (ELLA, EWC-LoRA, EWC, LwF) against independent naive forms: values and gradients."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from nlora_lightning.regularizers import functional as F


def _pairs(*tensors):
    """Leaf copies requiring grad, twice: one set for the blocked form, one for the naive one."""
    first = [t.detach().clone().requires_grad_() for t in tensors]
    second = [t.detach().clone().requires_grad_() for t in tensors]
    return first, second


@pytest.mark.parametrize(
    "shape, block_rows, dtype",
    [((7, 3, 5, 2), 1, torch.float64), ((64, 8, 48, 16), None, torch.float64), ((64, 8, 48, 16), 5, torch.float64),
     ((33, 1, 17, 5), 1000, torch.float64), ((64, 8, 48, 16), 4, torch.float32)],
)
def test_ella_penalty_matches_naive_value_and_gradients(shape, block_rows, dtype):
    d_out, r, d_in, R = shape
    torch.manual_seed(0)
    B, A = torch.randn(d_out, r, dtype=dtype), torch.randn(r, d_in, dtype=dtype)
    past_B, past_A = torch.randn(d_out, R, dtype=dtype), torch.randn(R, d_in, dtype=dtype)
    (B1, A1), (B2, A2) = _pairs(B, A)
    blocked = F.ella_penalty(B1, A1, past_B, past_A, block_rows)
    # independent form: both products by einsum, the Hadamard product squared entry-wise
    naive = (torch.einsum("ik,kj->ij", B2, A2) * torch.einsum("il,lj->ij", past_B, past_A)).pow(2).sum()
    (1.5 * blocked).backward()
    (1.5 * naive).backward()
    tol = 1e-3 if dtype == torch.float32 else 1e-10  # a degree-4 polynomial: fp32 rounding grows with it
    torch.testing.assert_close(blocked, naive, rtol=tol, atol=tol)
    torch.testing.assert_close(B1.grad, B2.grad, rtol=tol, atol=tol)
    torch.testing.assert_close(A1.grad, A2.grad, rtol=tol, atol=tol)
    torch.testing.assert_close(F.ella_penalty_naive(B, A, past_B, past_A), naive.detach(), rtol=tol, atol=tol)


def test_ella_penalty_hand_example_and_no_past():
    B = torch.tensor([[1.0], [2.0]])
    A = torch.tensor([[1.0, -1.0]])  # B A = [[1, -1], [2, -2]]
    past_B = torch.tensor([[1.0], [0.0]])
    past_A = torch.tensor([[3.0, 0.5]])  # W_past = [[3, 0.5], [0, 0]]
    # (1*3)^2 + (-1*0.5)^2 = 9.25
    assert F.ella_penalty(B, A, past_B, past_A).item() == pytest.approx(9.25)
    assert F.ella_penalty(B, A, torch.zeros(2, 0), torch.zeros(0, 2)).item() == 0.0


@pytest.mark.parametrize("block_rows", [None, 3])
def test_weighted_squared_product_matches_naive_value_and_gradients(block_rows):
    torch.manual_seed(1)
    B, A, weight = torch.randn(20, 4, dtype=torch.float64), torch.randn(4, 9, dtype=torch.float64), torch.rand(20, 9, dtype=torch.float64)
    (B1, A1), (B2, A2) = _pairs(B, A)
    blocked = F.weighted_squared_product(B1, A1, weight, block_rows)
    naive = sum(weight[i, j] * (B2[i] @ A2[:, j]) ** 2 for i in range(20) for j in range(9))  # entry by entry
    blocked.backward()
    naive.backward()
    torch.testing.assert_close(blocked, naive)
    torch.testing.assert_close(B1.grad, B2.grad)
    torch.testing.assert_close(A1.grad, A2.grad)


def test_weighted_squared_product_through_concatenated_factors():
    # EWC-LoRA with a shared adapter penalises B A - B* A* = [B, -B*] [A; A*]; gradients reach B and A through cat.
    torch.manual_seed(2)
    B, A = torch.randn(6, 2, requires_grad=True), torch.randn(2, 5, requires_grad=True)
    B_star, A_star, weight = torch.randn(6, 2), torch.randn(2, 5), torch.rand(6, 5)
    value = F.weighted_squared_product(torch.cat([B, -B_star], 1), torch.cat([A, A_star], 0), weight, block_rows=2)
    value.backward()
    B2, A2 = B.detach().clone().requires_grad_(), A.detach().clone().requires_grad_()
    naive = (weight * (B2 @ A2 - B_star @ A_star).square()).sum()
    naive.backward()
    torch.testing.assert_close(value, naive)
    torch.testing.assert_close(B.grad, B2.grad)
    torch.testing.assert_close(A.grad, A2.grad)


class _LargestTensor(TorchDispatchMode):
    """Records the largest tensor any operation produces."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_blocked_ella_never_holds_a_full_size_matrix():
    d, r, R, rows = 128, 4, 12, 16
    B, A = torch.randn(d, r, requires_grad=True), torch.randn(r, d, requires_grad=True)
    past_B, past_A = torch.randn(d, R), torch.randn(R, d)
    with _LargestTensor() as blocked:
        F.ella_penalty(B, A, past_B, past_A, block_rows=rows).backward()
    with _LargestTensor() as naive:
        F.ella_penalty_naive(B, A, past_B, past_A)
    assert naive.largest == d * d  # the check can see a full-size matrix
    assert blocked.largest <= max(rows * d, d * R)  # one block of rows, or a factor


def test_ewc_penalty_matches_hand_value_and_gradient():
    theta = torch.tensor([1.0, 2.0], requires_grad=True)
    value = F.ewc_penalty([theta], [torch.tensor([0.0, 4.0])], [torch.tensor([3.0, 0.5])])
    assert value.item() == pytest.approx(3.0 * 1 + 0.5 * 4)
    value.backward()
    torch.testing.assert_close(theta.grad, torch.tensor([2 * 3.0 * 1, 2 * 0.5 * -2]))
    with pytest.raises(ValueError, match="one shape"):
        F.ewc_penalty([theta], [torch.zeros(3)], [torch.zeros(2)])


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_distillation_kl_matches_naive_value_and_gradient(temperature):
    torch.manual_seed(3)
    student = torch.randn(5, 11, requires_grad=True)
    teacher = torch.randn(5, 11)
    value = F.distillation_kl(student, teacher, temperature)
    value.backward()
    s2 = student.detach().clone().requires_grad_()
    p = torch.softmax(teacher / temperature, -1)
    q = torch.softmax(s2 / temperature, -1)
    naive = (p * (p.log() - q.log())).sum(-1).mean()
    naive.backward()
    torch.testing.assert_close(value, naive)
    torch.testing.assert_close(student.grad, s2.grad)
    assert F.distillation_kl(teacher, teacher, temperature).item() == pytest.approx(0.0, abs=1e-6)


def test_shape_errors_name_the_shapes():
    with pytest.raises(ValueError, match="d_out x r"):
        F.ella_penalty(torch.randn(3, 2), torch.randn(3, 4), torch.randn(3, 1), torch.randn(1, 4))
    with pytest.raises(ValueError, match="differ in shape"):
        F.ella_penalty(torch.randn(3, 2), torch.randn(2, 4), torch.randn(5, 1), torch.randn(1, 4))
    with pytest.raises(ValueError, match="weight must be"):
        F.weighted_squared_product(torch.randn(3, 2), torch.randn(2, 4), torch.randn(4, 3))
    with pytest.raises(ValueError, match="temperature"):
        F.distillation_kl(torch.randn(2, 3), torch.randn(2, 3), 0.0)
