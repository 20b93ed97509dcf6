import math

import pytest
import torch

from nlora_lightning.analysis import functional as F


def rows_update(rows: list[int], d_out: int = 6, d_in: int = 5, k: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Factors of a dense-within-``rows`` update: B is non-zero only on those output rows."""
    generator = torch.Generator().manual_seed(seed)
    A = torch.rand(k, d_in, generator=generator) + 0.5  # positive: every entry of B A in those rows is non-zero
    B = torch.zeros(d_out, k)
    B[rows] = torch.rand(len(rows), k, generator=generator) + 0.5
    return A, B


def dense_overlap(dw_i: torch.Tensor, dw_j: torch.Tensor) -> float:
    fro = lambda m: math.sqrt(float((m.double() ** 2).sum()))  # noqa: E731 - explicit Frobenius norm
    return fro(dw_i.T @ dw_j) / (fro(dw_i) * fro(dw_j))


def test_dense_update_is_b_times_a():
    A, B = torch.randn(3, 7), torch.randn(4, 3)
    assert torch.allclose(F.dense_update(A, B), B @ A)
    with pytest.raises(ValueError, match="same k"):
        F.dense_update(torch.randn(3, 7), torch.randn(4, 2))


def test_hand_worked_three_by_three_collision_and_sparsity():
    dw_i = torch.tensor([[1.0, 0.005, 0.0], [0.5, 0.0, 0.0], [0.0, 0.0, -0.2]])
    dw_j = torch.tensor([[0.0, 2.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.015]])
    # tau = 0.01: threshold_i = 0.01 * 1.0 = 0.01 -> support_i = {(0,0), (1,0), (2,2)} (0.005 is below)
    #             threshold_j = 0.01 * 2.0 = 0.02 -> support_j = {(0,1), (1,0)} (0.015 is below;
    #             an absolute threshold of 0.01 would count it and add (2,2) as a collision)
    # both above threshold only at (1,0): collision = 1/9; sparsity_i = 6/9, sparsity_j = 7/9
    assert F.collision_rate(dw_i, dw_j, tau=0.01).item() == pytest.approx(1 / 9)
    assert F.collision_rate(dw_j, dw_i, tau=0.01).item() == pytest.approx(1 / 9)
    assert F.sparsity(dw_i, 0.01).item() == pytest.approx(6 / 9)
    assert F.sparsity(dw_j, 0.01).item() == pytest.approx(7 / 9)
    # tau = 0: every exactly non-zero entry counts, so (0,1) (dw_i's 0.005) and (2,2) (dw_j's 0.015) collide too
    assert F.collision_rate(dw_i, dw_j, tau=0.0).item() == pytest.approx(3 / 9)


def test_entry_at_threshold_counts_as_zero():
    dw = torch.tensor([[1.0, 0.25], [0.2500001, 0.0]])
    assert F.sparsity(dw, tau=0.25).item() == pytest.approx(2 / 4)  # 0.25 and 0.0 are "at or below"


def test_zero_update_has_no_support():
    zero, dense = torch.zeros(4, 3), torch.ones(4, 3)
    assert F.collision_rate(zero, dense).item() == 0.0
    assert F.sparsity(zero).item() == 1.0
    assert F.sparsity(dense).item() == 0.0
    A, B = rows_update([0, 1])
    assert F.update_overlap(A, torch.zeros_like(B), A, B).item() == 0.0
    assert F.nuclear_norm(A, torch.zeros_like(B)).item() == 0.0


def test_disjoint_output_rows_give_zero_collision_and_zero_overlap():
    A_i, B_i = rows_update([0, 1], seed=1)
    A_j, B_j = rows_update([2, 3, 4], seed=2)
    dw_i, dw_j = F.dense_update(A_i, B_i), F.dense_update(A_j, B_j)
    assert F.collision_rate(dw_i, dw_j).item() == 0.0
    assert F.update_overlap(A_i, B_i, A_j, B_j).item() == pytest.approx(0.0, abs=1e-12)


def test_no_collision_does_not_imply_zero_overlap():
    # dW_i = e0 e0^T, dW_j = e0 e1^T: disjoint entries (Frobenius inner product 0, the paper's
    # orthogonality) but the same output row, so dW_i^T dW_j = e0 e1^T and the overlap is 1.
    e0, e1 = torch.eye(3)[:, :1], torch.eye(3)[:, 1:2]
    A_i, B_i, A_j, B_j = e0.T, e0, e1.T, e0
    dw_i, dw_j = F.dense_update(A_i, B_i), F.dense_update(A_j, B_j)
    assert F.collision_rate(dw_i, dw_j).item() == 0.0
    assert float((dw_i * dw_j).sum()) == 0.0
    assert F.update_overlap(A_i, B_i, A_j, B_j).item() == pytest.approx(1.0)


def test_identical_rank_one_updates_collide_everywhere_and_overlap_fully():
    A, B = torch.rand(1, 5) + 0.1, torch.rand(4, 1) + 0.1  # rank 1, every entry non-zero
    dw = F.dense_update(A, B)
    assert F.collision_rate(dw, dw.clone()).item() == 1.0
    assert F.update_overlap(A, B, A, B).item() == pytest.approx(1.0)
    assert F.update_overlap(A, B, 3 * A, -B).item() == pytest.approx(1.0)  # scale and sign do not matter


def test_identical_rank_k_update_overlaps_itself_by_one_over_sqrt_k():
    k, c = 4, 2.5
    A, B = torch.eye(6)[:k], c * torch.eye(8)[:, :k]  # k equal singular values c
    # ||dW^T dW||_F / ||dW||_F^2 = sqrt(k c^4) / (k c^2) = 1 / sqrt(k)
    assert F.update_overlap(A, B, A, B).item() == pytest.approx(1 / math.sqrt(k))


@pytest.mark.parametrize("d_out,d_in,k_i,k_j", [(5, 7, 2, 3), (16, 16, 4, 4), (3, 9, 5, 1), (8, 4, 8, 2)])
def test_factor_based_norms_match_dense_computations(d_out, d_in, k_i, k_j):
    generator = torch.Generator().manual_seed(d_out * 100 + d_in)
    A_i, B_i = torch.randn(k_i, d_in, generator=generator), torch.randn(d_out, k_i, generator=generator)
    A_j, B_j = torch.randn(k_j, d_in, generator=generator), torch.randn(d_out, k_j, generator=generator)
    dw_i, dw_j = (B_i @ A_i).double(), (B_j @ A_j).double()
    assert F.update_overlap(A_i, B_i, A_j, B_j).item() == pytest.approx(dense_overlap(dw_i, dw_j), rel=1e-5)
    assert F.nuclear_norm(A_i, B_i).item() == pytest.approx(torch.linalg.matrix_norm(dw_i, "nuc").item(), rel=1e-5)
    assert F.frobenius_norm(A_j, B_j).item() == pytest.approx(math.sqrt(float((dw_j**2).sum())), rel=1e-5)


def test_rejects_bad_tau_and_mismatched_shapes():
    with pytest.raises(ValueError, match="tau"):
        F.sparsity(torch.ones(2, 2), tau=1.0)
    with pytest.raises(ValueError, match="same shape"):
        F.collision_rate(torch.ones(2, 3), torch.ones(3, 2))
    with pytest.raises(ValueError, match="same shape"):
        F.update_overlap(torch.ones(1, 3), torch.ones(2, 1), torch.ones(1, 4), torch.ones(2, 1))


def three_tasks_two_layers() -> dict[int, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    # Layer "disjoint": each task owns other output rows (collision 0, overlap 0 between tasks).
    # Layer "shared": every task has the same dense rank-1 update up to scale (collision 1, overlap 1).
    u, v = torch.rand(6, 1) + 0.5, torch.rand(1, 5) + 0.5
    rows = {0: [0, 1], 1: [2, 3], 2: [4, 5]}
    return {task: {"disjoint": rows_update(rows[task], seed=task), "shared": (v, (task + 1) * u)} for task in (0, 1, 2)}


def test_pairwise_analysis_averages_layers_then_pairs():
    result = F.pairwise_analysis(three_tasks_two_layers(), tau=0.01)
    assert result.tasks == [0, 1, 2] and result.layers == ["disjoint", "shared"]
    off_diagonal = ~torch.eye(3, dtype=torch.bool)
    assert torch.all(result.collision_per_layer[0][off_diagonal] == 0.0)
    assert torch.all(result.collision_per_layer[1] == 1.0)
    assert torch.allclose(result.collision[off_diagonal], torch.full((6,), 0.5, dtype=torch.float64))
    assert torch.allclose(result.overlap[off_diagonal], torch.full((6,), 0.5, dtype=torch.float64), atol=1e-9)
    assert result.collision_mean == pytest.approx(0.5)
    assert result.overlap_mean == pytest.approx(0.5)
    # diagonal: share of non-zero entries = 1 - sparsity; "disjoint" updates fill 2 of 6 rows
    assert torch.allclose(result.collision_per_layer[0].diagonal(), torch.full((3,), 2 / 6, dtype=torch.float64))
    assert torch.allclose(result.sparsity[:, 0], torch.full((3,), 4 / 6, dtype=torch.float64))
    assert torch.all(result.sparsity[:, 1] == 0.0)


def test_pairwise_analysis_matches_direct_calls_on_random_updates():
    generator = torch.Generator().manual_seed(7)
    shapes = {"q": (6, 4), "v": (3, 4)}
    factors = {t: {n: (torch.randn(2, d_in, generator=generator), torch.randn(d_out, 2, generator=generator))
                   for n, (d_out, d_in) in shapes.items()} for t in (0, 1, 2)}
    result = F.pairwise_analysis(factors, tau=0.3)
    for l, layer in enumerate(result.layers):
        for a in range(3):
            A_a, B_a = factors[a][layer]
            assert result.nuclear_norm[a, l].item() == pytest.approx(F.nuclear_norm(A_a, B_a).item())
            assert result.sparsity[a, l].item() == pytest.approx(F.sparsity(B_a @ A_a, 0.3).item())
            for b in range(3):
                A_b, B_b = factors[b][layer]
                collision = F.collision_rate(B_a @ A_a, B_b @ A_b, 0.3).item()
                assert result.collision_per_layer[l, a, b].item() == pytest.approx(collision)
                assert result.overlap_per_layer[l, a, b].item() == pytest.approx(F.update_overlap(A_a, B_a, A_b, B_b).item())
    pairs = [(0, 1), (0, 2), (1, 2)]
    expected = sum(float(result.collision_per_layer[:, a, b].mean()) for a, b in pairs) / 3
    assert result.collision_mean == pytest.approx(expected)
    assert result.nuclear_norm_mean == pytest.approx(float(result.nuclear_norm.mean()))


def test_pairwise_analysis_of_one_task_has_no_pair_means():
    result = F.pairwise_analysis({3: {"q": rows_update([0])}})
    assert result.tasks == [3] and math.isnan(result.collision_mean) and math.isnan(result.overlap_mean)
    assert result.collision.shape == (1, 1)


def test_pairwise_analysis_rejects_inconsistent_layers():
    with pytest.raises(ValueError, match="layers"):
        F.pairwise_analysis({0: {"q": rows_update([0])}, 1: {"v": rows_update([0])}})
    with pytest.raises(ValueError, match="shape"):
        F.pairwise_analysis({0: {"q": rows_update([0], d_out=6)}, 1: {"q": rows_update([0], d_out=7)}})
    with pytest.raises(ValueError, match="at least one"):
        F.pairwise_analysis({})
