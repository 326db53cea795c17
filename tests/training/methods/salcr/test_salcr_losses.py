"""SALCR losses (methods.md §A.4.1–§A.4.3): part blocks, GPCR masks on a two-triple batch, FGSAL, DAGL."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vireid.training.methods.salcr import (
    dagl_loss,
    dagl_targets,
    fgsal_loss,
    gpcr_global_masks,
    gpcr_part_masks,
    masked_nll,
    part_blocks,
)
from vireid.training.models import split_stripes

N = 2  # triples per batch
C = 4  # per-part width
P = 3


def _tagged(kind: int) -> torch.Tensor:
    """(3n, (P+1)·C) features whose entry encodes (kind, row, part): kind*1000 + row*10 + part."""
    rows = torch.arange(3 * N, dtype=torch.float32)[:, None, None]
    parts = torch.arange(P + 1, dtype=torch.float32)[None, :, None]
    return (kind * 1000 + rows * 10 + parts).expand(3 * N, P + 1, C).reshape(3 * N, (P + 1) * C).clone()


def _code(x: torch.Tensor) -> list[tuple[int, int, int]]:
    """Decode every row of a (rows, C) slice back to (kind, row, part)."""
    v = x[:, 0].long()
    return [(int(t) // 1000, int(t) % 1000 // 10, int(t) % 10) for t in v]


def test_split_stripes_token_ranges_for_the_full_map() -> None:
    # 18 x 9 map, 3 parts: part i = tokens [54 i, 54 (i+1)) of the row-major flattening = rows 6i..6i+5.
    fmap = torch.arange(18 * 9, dtype=torch.float32).reshape(1, 1, 18, 9).expand(2, 5, 18, 9)
    stripes = split_stripes(fmap, 3)
    assert stripes.shape == (2, 3, 54, 5)
    for i in range(3):
        torch.testing.assert_close(
            stripes[0, i, :, 0], torch.arange(54 * i, 54 * (i + 1), dtype=torch.float32)
        )


@pytest.mark.parametrize("a_to_r", ["parity", "intent"])
def test_part_blocks_pick_the_right_rows_and_columns(a_to_r: str) -> None:
    own, pg1, pg2 = _tagged(0), _tagged(1), _tagged(2)
    v, a, r = [0, 1], [2, 3], [4, 5]  # rows of each block (n = 2)
    for part in range(P):
        blocks = part_blocks({"f_pg": own, "f_pg1": pg1, "f_pg2": pg2}, part=part, dim=C, a_to_r=a_to_r)
        assert (
            blocks.h_v.shape == (6 * N, C)
            and blocks.h_r.shape == (3 * N, C)
            and blocks.by_map.shape == (9 * N, C)
        )
        a_slot = (
            [(2, i, part) for i in a] if a_to_r == "parity" else [(1, i, part) for i in a]
        )  # A->V vs A->R
        expected_hv = (
            [(0, i, part) for i in v]  # V->V
            + [(0, i, part) for i in a]  # A->A
            + [(1, i, part) for i in v]  # V->R (pg1 rows V)
            + a_slot  # A->R*
            + [(2, i, part) for i in v]  # V->A (pg2 rows V)
            + [(2, i, part) for i in a]  # A->V (pg2 rows A)
        )
        assert _code(blocks.h_v) == expected_hv
        assert _code(blocks.h_r) == [(0, i, part) for i in r] + [(1, i, part) for i in r] + [
            (2, i, part) for i in r
        ]
        expected_map = (
            [(0, i, part) for i in v]
            + [(2, i, part) for i in a]
            + [(1, i, part) for i in r]  # map V
            + [(2, i, part) for i in v]
            + [(0, i, part) for i in a]
            + [(2, i, part) for i in r]  # map A
            + [(1, i, part) for i in v]
            + a_slot
            + [(0, i, part) for i in r]  # map R
        )
        assert _code(blocks.by_map) == expected_map
    with pytest.raises(ValueError):
        part_blocks(
            {"f_pg": own, "f_pg1": pg1, "f_pg2": pg2}, part=P, dim=C, a_to_r="parity"
        )  # the global slot is not a part
    with pytest.raises(ValueError):
        part_blocks({"f_pg": own, "f_pg1": pg1, "f_pg2": pg2}, part=0, dim=C, a_to_r="typo")


def _mask_rows(rows: list[list[int]], width: int) -> torch.Tensor:
    out = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, cols in enumerate(rows):
        out[i, cols] = True
    return out


def _scores_with_top(top: list[list[int]], width: int) -> torch.Tensor:
    """Scores whose top-2 per row are exactly the given columns (others lower, no ties)."""
    s = torch.arange(width, dtype=torch.float32).repeat(len(top), 1) * 0.01
    for i, cols in enumerate(top):
        s[i, cols] = torch.tensor([5.0, 4.0][: len(cols)])
    return s


def test_gpcr_global_masks_intersect_each_triple() -> None:
    width = 6
    # rows [V0, V1, A0, A1, R0, R1]
    top = [[0, 1], [2, 3], [0, 4], [2, 3], [1, 0], [5, 2]]
    scores = _scores_with_top(top, width)
    t, omega = gpcr_global_masks(scores, k=2)
    torch.testing.assert_close(t, _mask_rows(top, width))
    # triple 0: {0,1} & {0,4} & {1,0} = {0}; triple 1: {2,3} & {2,3} & {5,2} = {2}
    expected = _mask_rows([[0], [2], [0], [2], [0], [2]], width)
    torch.testing.assert_close(omega, expected)
    # strict ">" against the (k+1)-th value: a tie at the boundary is left out
    tied = torch.tensor([[3.0, 2.0, 1.0, 1.0, 0.0, 0.0]] * 6)
    t2, _ = gpcr_global_masks(tied, k=2)
    assert t2[0].tolist() == [True, True, False, False, False, False]
    tied3 = torch.tensor([[3.0, 2.0, 2.0, 1.0, 0.0, 0.0]] * 6)
    t3, _ = gpcr_global_masks(tied3, k=2)
    assert t3[0].tolist() == [True, False, False, False, False, False]


def test_gpcr_part_masks_union_of_the_other_maps_and_global() -> None:
    width = 6
    global_top = _mask_rows([[0, 1], [2, 3], [0, 4], [2, 3], [1, 0], [5, 2]], width)
    # 18 by-map rows: map V (V0 V1 A0 A1 R0 R1), map A (...), map R (...); give each a top-2
    part_top = [
        [0, 5],
        [3, 4],
        [4, 1],
        [2, 1],
        [0, 2],
        [5, 4],  # map V
        [1, 2],
        [0, 1],
        [0, 3],
        [3, 5],
        [1, 4],
        [2, 1],  # map A
        [2, 3],
        [2, 5],
        [4, 5],
        [0, 1],
        [3, 0],
        [3, 4],  # map R
    ]
    mask = gpcr_part_masks(_scores_with_top(part_top, width), global_top, k=2)
    u = [set(c) for c in part_top]
    g = [set(c) for c in [[0, 1], [2, 3], [0, 4], [2, 3], [1, 0], [5, 2]]]
    for row in range(18):
        m, within = divmod(row, 6)
        others = u[((m + 1) % 3) * 6 + within] | u[((m + 2) % 3) * 6 + within]
        expected = g[within] & others
        assert set(torch.nonzero(mask[row]).flatten().tolist()) == expected, row
    with pytest.raises(ValueError):
        gpcr_part_masks(torch.zeros(12, width), global_top, k=2)


def test_masked_nll_matches_the_probability_form_and_skips_empty_rows() -> None:
    logits = torch.tensor([[1.0, 2.0, 0.5], [0.0, 0.0, 3.0], [1.0, 1.0, 1.0]], requires_grad=True)
    mask = torch.tensor([[True, True, False], [False, False, False], [False, False, True]])
    loss = masked_nll(logits, mask)
    p = logits.softmax(1)
    expected = (-(p[0, :2].sum()).log() - p[2, 2].log()) / 2
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert logits.grad is not None and logits.grad[1].abs().sum() == 0
    empty = masked_nll(logits, torch.zeros_like(mask))
    assert float(empty.detach()) == 0.0 and empty.requires_grad


class _Mem:
    """A cluster memory stand-in: logits norm(f)·Cᵀ/τ, CE loss (the ClusterMemory contract)."""

    def __init__(self, feats: torch.Tensor) -> None:
        self.features = F.normalize(feats, dim=1)

    def loss(self, f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(F.normalize(f, dim=1) @ self.features.T / 0.05, y)


def test_dagl_targets_and_loss() -> None:
    y_v, cross_v, y_r, cross_r = (
        torch.tensor([0, 1]),
        torch.tensor([2, 0]),
        torch.tensor([1, 2]),
        torch.tensor([1, 0]),
    )
    rgb, ir = dagl_targets(y_v=y_v, cross_v=cross_v, y_r=y_r, cross_r=cross_r)
    assert rgb.tolist() == [0, 1, 0, 1, 1, 0] and ir.tolist() == [2, 0, 2, 0, 1, 2]
    gen = torch.Generator().manual_seed(0)
    f = torch.randn(6, 8, generator=gen)
    mv, mr = _Mem(torch.randn(2, 8, generator=gen)), _Mem(torch.randn(3, 8, generator=gen))
    torch.testing.assert_close(
        dagl_loss(f, rgb_space=rgb, ir_space=ir, memory_v=mv, memory_r=mr), mv.loss(f, rgb) + mr.loss(f, ir)
    )


def test_fgsal_loss_is_the_part_average_of_four_terms() -> None:
    gen = torch.Generator().manual_seed(1)
    own, pg1, pg2 = (torch.randn(3 * N, (P + 1) * C, generator=gen) for _ in range(3))
    parts = [
        part_blocks({"f_pg": own, "f_pg1": pg1, "f_pg2": pg2}, part=k, dim=C, a_to_r="parity")
        for k in range(P)
    ]
    mems = [
        {name: _Mem(torch.randn(3, C, generator=gen)) for name in ("vp", "rp", "vpa", "rpa")}
        for _ in range(P)
    ]
    y_v, cross_v, y_r, cross_r = (
        torch.tensor([0, 2]),
        torch.tensor([1, 1]),
        torch.tensor([2, 0]),
        torch.tensor([0, 1]),
    )
    loss, updates = fgsal_loss(parts, y_v=y_v, cross_v=cross_v, y_r=y_r, cross_r=cross_r, memories=mems)
    expected = (
        sum(
            m["vp"].loss(b.h_v, y_v.repeat(6))
            + m["rp"].loss(b.h_v, cross_v.repeat(6))
            + m["vpa"].loss(b.h_r, cross_r.repeat(3))
            + m["rpa"].loss(b.h_r, y_r.repeat(3))
            for b, m in zip(parts, mems, strict=True)
        )
        / P
    )
    torch.testing.assert_close(loss, expected)
    assert len(updates) == 4 * P
    memory, rows, targets = updates[1]
    assert (
        memory is mems[0]["rp"]
        and rows.shape == (6 * N, C)
        and targets.tolist() == cross_v.repeat(6).tolist()
    )
