"""The sampled softmax of a bilinear score, fused: the loss of the batch's rows against the drawn items.

A sampled softmax term scores every row of a batch against the items drawn for
it: a ``(rows, drawn)`` block of logits, the term's whole cost (1024 × 512 at
the defaults, against a few thousand numbers anywhere else in a step).
:func:`sampled_softmax` and :class:`_BlockSoftmaxLoss` compute its loss and
gradients in as few passes over that block as the maths allows, written out
rather than composed of autograd ops:

- the block is one matrix product: the score's parts (rating factors that
  must not move, the trained factors, each drawn item's bias and log-q
  correction) are columns of the two factors, ``[u_fixed | u | 1] @ [d_fixed | d
  | shift].T``, not a product, an add and a second product;
- the row's own item among the drawn ones (it would count as its own
  negative) is zeroed after the exponential, at its few places on the CPU
  (:func:`own_item_hits`), not masked over the whole block; its logit is the
  row's positive logit, so leaving it in the row's maximum changes nothing;
- the exponentials are kept unnormalised: the backward pass puts each row's
  ``1 / total`` on the small factors, so the block is read by two matrix
  products there, which also give the drawn items' bias gradient.

Five passes forward and two back, against thirteen when the block was built
by parts, masked whole and normalised in place.
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch

Hits = Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]


def sampled_softmax(pos: torch.Tensor, u: torch.Tensor, d: torch.Tensor, d_bias: Optional[torch.Tensor],
                    items: torch.Tensor, drawn: torch.Tensor, log_q: torch.Tensor,
                    fixed: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
                    weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean cross-entropy (weighted by ``weight``, each row's share of the total, when given) of each row's
    positive against the drawn items: the logits ``[pos | u @ d.T +
    d_bias]`` (plus ``fixed[0] @ fixed[1].T``, a part of the score without gradient), each less the log of
    its item's sampling probability ``log_q`` (the log-q correction), the row's own item among the drawn ones
    left out. ``pos`` must be the same score of the row's own item (it stands in for the left-out entries
    in the row's maximum). Gradients reach ``pos``, ``u``, ``d`` and ``d_bias``."""
    shift = -log_q[drawn] if d_bias is None else d_bias - log_q[drawn]
    u_fixed, d_fixed = fixed if fixed is not None else (u.new_zeros(len(u), 0), d.new_zeros(len(d), 0))
    share = weight.float() if weight is not None else None
    return _BlockSoftmaxLoss.apply(pos.float() - log_q[items], u, d, shift, u_fixed.detach(), d_fixed.detach(),
                                   own_item_hits(items, drawn, len(log_q)), share)


def own_item_hits(items: torch.Tensor, drawn: torch.Tensor, n_items: int) -> Hits:
    """Where the block's row ``k`` meets its own item among the drawn ones (``items[k] == drawn[j]``).

    On the CPU, the (rows, columns) of the few hits: a flag table over the item ids finds the rows whose
    item was drawn at all, and only those are compared with the draw (31 µs at 1024 × 512, against 210 µs
    for comparing and masking the whole block). On a GPU, the whole-block mask: the hits' count would make
    the CPU wait for the device at every step."""
    if items.device.type != "cpu":
        return items[:, None] == drawn[None, :]
    flag = torch.zeros(n_items, dtype=torch.bool)
    flag[drawn] = True
    rows = flag[items].nonzero().squeeze(1)
    hit_rows, cols = (items[rows, None] == drawn[None, :]).nonzero(as_tuple=True)
    return rows[hit_rows], cols


def fill_hits(block: torch.Tensor, hits: Hits, value: float) -> None:
    """Set the ``hits`` (:func:`own_item_hits`, either form) of a ``(rows, drawn)`` block to ``value``, in place."""
    if isinstance(hits, torch.Tensor):
        block.masked_fill_(hits, value)
    else:
        block.index_put_(hits, block.new_full((), value))


class _BlockSoftmaxLoss(torch.autograd.Function):
    """Cross-entropy of ``[pos | [u_fixed | u | 1] @ [d_fixed | d | shift].T]`` with the positive as the
    class and the ``hits`` left out, each row's weighted by its ``share`` (None: the plain mean);
    gradients for ``pos``, ``u``, ``d`` and ``shift`` (the module docstring says why it is written out)."""

    @staticmethod
    def forward(ctx, pos, u, d, shift, u_fixed, d_fixed, hits, share):
        # In float32 whatever autocast made of the inputs, as the composed softmax's logits are.
        pos, u, d, shift = pos.float(), u.float(), d.float(), shift.float()
        left = torch.cat([u_fixed.float(), u, u.new_ones(len(u), 1)], dim=1)
        block = left @ torch.cat([d_fixed.float(), d, shift[:, None]], dim=1).T
        top = torch.maximum(block.amax(1), pos)[:, None]  # amax: max(1) would find the indices too (6x slower)
        exps = block.sub_(top).exp_()
        fill_hits(exps, hits, 0.0)
        exp_pos = (pos[:, None] - top).exp_()
        total = exps.sum(1, keepdim=True).add_(exp_pos)
        ctx.save_for_backward(exps, total, exp_pos, u, d)
        ctx.share = share
        losses = total.log().add_(top).squeeze(1) - pos
        return losses.mean() if share is None else (losses * share).sum()

    @staticmethod
    def backward(ctx, grad):
        exps, total, exp_pos, u, d = ctx.saved_tensors
        # The block's gradient is exps / total × grad × a row's share: the row scale goes on the small factors.
        per_row = grad / len(exps) if ctx.share is None else grad * ctx.share[:, None]
        scale = per_row / total
        grad_u = (exps @ d) * scale
        # (x.T @ exps).T, not exps.T @ x: MKL reads the block's transpose 2x slower (214 against 106 µs).
        grad_d_shift = (torch.cat([u * scale, scale], dim=1).T @ exps).T
        return ((exp_pos * scale - per_row).squeeze(1), grad_u, grad_d_shift[:, :-1], grad_d_shift[:, -1],
                None, None, None, None)
