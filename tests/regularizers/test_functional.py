import pytest
import torch

from nlora_lightning.regularizers import functional as F


@pytest.mark.parametrize("shape", [(7, 3, 5), (64, 8, 64), (192, 8, 576), (33, 1, 17)])
@pytest.mark.parametrize("block_rows", [None, 1, 4, 1000])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_blocked_l1_matches_naive_value_and_gradients(shape, block_rows, dtype):
    d_out, r, d_in = shape
    torch.manual_seed(0)
    B = torch.randn(d_out, r, dtype=dtype, requires_grad=True)
    A = torch.randn(r, d_in, dtype=dtype, requires_grad=True)
    B2, A2 = B.detach().clone().requires_grad_(), A.detach().clone().requires_grad_()

    blocked = F.l1_of_product(B, A, block_rows)
    naive = F.l1_of_product_naive(B2, A2)
    (2.5 * blocked).backward()
    (2.5 * naive).backward()

    tol = 1e-4 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(blocked.to(dtype), naive, rtol=tol, atol=tol)
    torch.testing.assert_close(B.grad, B2.grad, rtol=tol, atol=tol)
    torch.testing.assert_close(A.grad, A2.grad, rtol=tol, atol=tol)


@pytest.mark.parametrize("block_rows", [None, 4096])
def test_blocked_l1_fp32_value_as_accurate_as_naive_at_d4096(block_rows):
    # A whole-block vector_norm accumulates sequentially on CPU: 2.5e-5 (default block) and 5e-3
    # (one 4096-row block) relative error against float64; the naive fp32 form is within 1e-7.
    torch.manual_seed(0)
    B = (torch.randn(4096, 8) * 0.01).requires_grad_()
    A = torch.randn(8, 4096).requires_grad_()
    exact = float((B.detach().double() @ A.detach().double()).abs().sum())
    blocked = F.l1_of_product(B, A, block_rows)
    naive = F.l1_of_product_naive(B.detach(), A.detach())
    assert abs(float(naive) - exact) / exact < 1e-6
    assert abs(float(blocked) - exact) / exact < 1e-6
    blocked.backward()
    sign = torch.sign(B.detach() @ A.detach())
    torch.testing.assert_close(B.grad, sign @ A.detach().T, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(A.grad, B.detach().T @ sign, rtol=1e-5, atol=1e-5)


def test_blocked_l1_bfloat16_close_to_float32():
    torch.manual_seed(1)
    B, A = torch.randn(40, 4), torch.randn(4, 30)
    value = F.l1_of_product(B.bfloat16(), A.bfloat16())
    assert value.dtype == torch.float32  # accumulated in fp32
    torch.testing.assert_close(value, (B @ A).abs().sum(), rtol=2e-2, atol=0.0)


def test_blocked_l1_sign_of_zero_gives_zero_gradient():
    # B = 0 (LoRA's initial state): BA = 0 everywhere, so every subgradient is 0, as autograd's abs gives.
    B = torch.zeros(5, 2, requires_grad=True)
    A = torch.randn(2, 4, requires_grad=True)
    F.l1_of_product(B, A).backward()
    assert torch.count_nonzero(B.grad) == 0 and torch.count_nonzero(A.grad) == 0
    B2 = torch.zeros(5, 2, requires_grad=True)
    A2 = A.detach().clone().requires_grad_()
    F.l1_of_product_naive(B2, A2).backward()
    assert torch.equal(B2.grad, B.grad)


def test_blocked_l1_hand_example():
    B = torch.tensor([[1.0, 0.0], [0.0, -2.0]])
    A = torch.tensor([[1.0, -1.0], [0.5, 0.0]])
    # BA = [[1, -1], [-1, 0]] -> L1 = 3
    assert F.l1_of_product(B, A).item() == pytest.approx(3.0)


def test_blocked_l1_without_grad_needs_no_buffers():
    B, A = torch.randn(6, 2), torch.randn(2, 6)
    with torch.no_grad():
        value = F.l1_of_product(B, A)
    assert value.item() == pytest.approx(F.l1_of_product_naive(B, A).item(), rel=1e-6)


def test_blocked_l1_rejects_bad_shapes():
    with pytest.raises(ValueError, match="d_out x r"):
        F.l1_of_product(torch.randn(3, 2), torch.randn(3, 4))
    with pytest.raises(ValueError, match="block_rows"):
        F.l1_of_product(torch.randn(3, 2), torch.randn(2, 4), block_rows=0)


def test_official_l1_is_norm_of_r_by_r_product():
    torch.manual_seed(2)
    A, B = torch.randn(8, 16), torch.randn(16, 8)
    expected = torch.norm(torch.mm(A, B), p=1)  # the released code's expression
    torch.testing.assert_close(F.official_nlora_l1(A, B), expected)


def test_official_l1_refuses_non_square_layer_naming_it():
    with pytest.raises(ValueError, match=r"model\.layers\.0\.self_attn\.v_proj.*192 x 576"):
        F.official_nlora_l1(torch.randn(8, 576), torch.randn(192, 8), "model.layers.0.self_attn.v_proj")


def test_orthogonality_penalty_matches_sum_over_earlier_tasks():
    torch.manual_seed(3)
    previous = [torch.randn(4, 10) for _ in range(3)]
    A = torch.randn(4, 10)
    expected = sum((P @ A.T).abs().sum() for P in previous)
    torch.testing.assert_close(F.orthogonality_penalty(torch.cat(previous), A), expected)
    assert F.orthogonality_penalty(torch.zeros(0, 10), A).item() == 0.0


def test_l2_penalty_is_sum_of_norms():
    a, b = torch.tensor([3.0, 4.0]), torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    assert F.l2_penalty([a, b]).item() == pytest.approx(6.0)
    with pytest.raises(ValueError):
        F.l2_penalty([])
