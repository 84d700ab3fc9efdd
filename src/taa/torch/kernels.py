"""Device- and dtype-specific choices: which kernel computes a layer's formula, and how fast.

The reference layers (``attention.py``, ``feedforward.py``, ``dropout.py``) say what is
computed, as the papers write it; this module says how, on a given device and dtype. Every
choice here gives the same numbers as the formula (within the dtype's rounding), so a port
to another framework mirrors the reference layers file for file and writes its own version
of this module, or none.

The choices, each with the measurement that justified it (PyTorch 2.13):

- Attention (:func:`use_fused_attention`). The fused kernel
  (``torch.nn.functional.scaled_dot_product_attention``) is the default; on CPUs:
  - training in bfloat16 or float16 takes equation 1's two matmuls: the fused kernel's
    bfloat16 backward was 4-6x slower than them, while its forward and float32 paths are fast;
  - a decoding step (one query per head, no gradient) takes the matmuls in bfloat16 and
    float16 on every CPU, and in float32 on CPUs with AMX (:func:`cpu_has_amx`). On CPUs with
    AMX the fused kernel's fixed cost per call (~48 us on 2 cores) was larger than the work;
    on CPUs with AVX-512 and no AMX it won in float32 (7-19 us at batch 1 against 19-31 us
    for the matmuls) and lost in bfloat16 (up to 2x slower at batch 8).
  Other devices always keep the fused kernel.
- Empty query rows (:func:`empty_query_rows`): whether any query sees no key at all is
  decided on CPUs only, where reading the answer costs no device synchronisation.
- Stacked Q, K, V (:func:`stack_qkv_projections`): on CPUs, self-attention computes the
  three projections with one product from :data:`STACKED_PROJECTION_ROWS` rows (batch x
  length) up: a training step at nanoGPT's CPU shape then runs 16 products forward instead
  of 24. Below it (a decoding step) rebuilding the stacked weight costs more than it saves.
  It was measured on CPUs only: other devices keep the three products.
- The tanh GELU (:func:`gelu_tanh`): training in float32 on CPUs computes the derivative in
  the forward pass (:class:`TanhGeluWithSlope`); ATen's float32 tanh-GELU backward cost more
  than that whole forward pass (0.8 against 0.53 ms forward + backward for 768 x 512 values
  on 2 threads of a CPU with AVX-512).
- The dropout mask (:func:`apply_dropout`, :func:`keep_mask`): on CPUs, PyTorch's dropout
  draws its mask with ``bernoulli_``, one 32-bit Mersenne Twister call and a float compare
  per element, which was a quarter of a translation training step on 2 cores. The mask
  here takes four 15-bit uniform numbers from each 64-bit draw of the same global
  generator (so ``torch.manual_seed`` and a saved RNG state still make a run repeatable);
  an element is kept when its number is at least round(p * 2**15), so p is rounded to a
  multiple of 2**-15 (0.2 becomes 0.20001), far below anything that changes training.
  Other devices use ``torch.nn.functional.dropout``, whose kernels are fast there.

Notation: ``b`` batch, ``h`` heads, ``q`` query length, ``k`` key length, ``e`` head dim.
"""

from __future__ import annotations

import functools
import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

# --------------------------------------------------------------------------------------
# CPU features
# --------------------------------------------------------------------------------------


@functools.cache
def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags, as Linux lists them per core in ``cpuinfo``; empty where there are none."""
    flags: set[str] = set()
    try:
        with open(cpuinfo, encoding="utf-8") as lines:
            for line in lines:
                if line.startswith("flags"):
                    flags.update(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset(flags)


def cpu_has_amx() -> bool:
    """Whether the CPU has AMX tile units (Intel's Advanced Matrix Extensions)."""
    return "amx_tile" in cpu_flags()


# --------------------------------------------------------------------------------------
# Attention
# --------------------------------------------------------------------------------------

STACKED_PROJECTION_ROWS = 64  # self-attention's Q, K, V come from one product from this many rows up


def stack_qkv_projections(rows: int, device: torch.device) -> bool:
    """Whether self-attention over ``rows`` (batch x length) rows on ``device`` computes Q, K, V
    with one product: on a CPU from :data:`STACKED_PROJECTION_ROWS` rows up, elsewhere never."""
    return device.type == "cpu" and rows >= STACKED_PROJECTION_ROWS


def use_fused_attention(query: Tensor) -> bool:
    """Whether the fused kernel is the faster one for these queries (b, h, q, e), on their device and dtype."""
    if query.device.type != "cpu":
        return True
    training = query.requires_grad and torch.is_grad_enabled()
    half = query.dtype in (torch.bfloat16, torch.float16)
    if training:
        return not half  # the fused bfloat16 backward is slow on CPUs
    decoding_step = query.shape[-2] == 1
    return not (decoding_step and (query.dtype != torch.float32 or cpu_has_amx()))


def empty_query_rows(mask: Tensor) -> Optional[Tensor]:
    """(.., q, 1) bool, True at queries that may attend to no key; None when the mask has none.

    "None" is only decided on a CPU, where the check costs no device sync; elsewhere the
    rows are always returned (zeroing rows that are not empty changes nothing).
    """
    empty = ~mask.any(dim=-1, keepdim=True)
    if empty.device.type == "cpu" and not bool(empty.any()):
        return None  # the usual case
    return empty


def fused_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    mask: Optional[Tensor] = None,
    dropout_p: float = 0.0,
    *,
    bias: Optional[Tensor] = None,
    scale: Optional[float] = None,
    is_causal: bool = False,
) -> Tensor:
    """Equation 1 on PyTorch's fused kernel: query, key and value (b, h, *, e), as many key heads as query heads.

    ``mask`` bool, True = may attend; ``bias`` added to the logits; ``is_causal`` the
    kernel's own causal mask (equal query and key lengths, no other mask). A query with
    no visible key gets a zero output, as in the readable function.
    """
    empty_rows = None
    if mask is not None:
        # Let a query with no visible key attend everywhere, then zero its output:
        # the kernel never sees an all -inf row, so no NaN reaches forward or backward.
        empty_rows = empty_query_rows(mask)  # (.., q, 1) or None
        if empty_rows is not None:
            mask = mask | empty_rows
    attn_mask = mask
    if bias is not None:
        attn_mask = bias if mask is None else bias.masked_fill(~mask, float("-inf"))
        attn_mask = attn_mask.to(query.dtype)
    output = F.scaled_dot_product_attention(
        query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale
    )  # (b, h, q, e)
    if empty_rows is not None:
        output = output.masked_fill(empty_rows, 0.0)
    return output


# --------------------------------------------------------------------------------------
# The tanh GELU with its derivative computed in the forward pass
# --------------------------------------------------------------------------------------

_K = 2 * math.sqrt(2 / math.pi)  # u = _K (x + _C x^3), so that 0.5 (1 + tanh(u / 2)) = sigmoid(u)
_C = 0.044715


class TanhGeluWithSlope(torch.autograd.Function):
    """The tanh GELU whose forward pass also computes its derivative, so backward is one product.

    With u = 2 sqrt(2/pi) (x + 0.044715 x^3) and s = sigmoid(u) = 0.5 (1 + tanh(u / 2)):
    GELU(x) = x s and GELU'(x) = s + x s (1 - s) u'. It keeps one tensor for backward (the
    derivative instead of x), as the built-in does.
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        # Beyond |x| = 100, s is exactly 0 or 1 in float32 and s (1 - s) exactly 0: clamping
        # there changes no value and keeps x^3 from overflowing (inf * 0 would be NaN).
        xc = x.clamp(-100.0, 100.0)
        x2 = xc * xc
        slope = x2 * (3 * _K * _C) + _K  # u'
        s = torch.sigmoid(x2.mul_(_K * _C).add_(_K).mul_(xc))  # sigmoid(u)
        ctx.save_for_backward(torch.sub(1, s).mul_(s).mul_(xc).mul_(slope).add_(s))
        return x * s

    @staticmethod
    @once_differentiable  # the saved derivative is a constant: a second derivative must not pass through
    def backward(ctx, grad: Tensor) -> Tensor:
        (derivative,) = ctx.saved_tensors
        return grad * derivative


def gelu_tanh(x: Tensor) -> Tensor:
    """GELU's tanh approximation: :class:`TanhGeluWithSlope` when training in float32 on a CPU.

    Elsewhere the built-in kernel, which also keeps bfloat16 inputs' arithmetic in float32.
    Both give the same values within float32 rounding.
    """
    if x.requires_grad and torch.is_grad_enabled() and x.dtype == torch.float32 and x.device.type == "cpu":
        return TanhGeluWithSlope.apply(x)
    return F.gelu(x, approximate="tanh")


# --------------------------------------------------------------------------------------
# Dropout
# --------------------------------------------------------------------------------------

_LEVELS = 1 << 15  # 15 uniform bits per element


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, device: torch.device | str = "cpu") -> Tensor:
    """A bool tensor of ``shape``, each element True with probability 1 - p (p in 2**-15 steps)."""
    n = 1
    for size in shape:
        n *= size
    # random_() on int64 gives uniform integers in [0, 2**63): the top bit is always 0,
    # so each 16-bit lane keeps only its low 15 bits, which are uniform in every lane.
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_()
    numbers = words.view(torch.int16)[:n].view(shape) & (_LEVELS - 1)  # uniform in [0, 2**15)
    return numbers >= round(p * _LEVELS)


def apply_dropout(x: Tensor, p: float) -> Tensor:
    """x * keep / (1 - p) for 0 < p < 1, with the faster mask for x's device."""
    if x.device.type != "cpu":
        return F.dropout(x, p, training=True)
    keep = keep_mask(x.shape, p, x.device)
    return x * (keep.to(x.dtype) * (1.0 / (1.0 - p)))  # autograd keeps the scaled mask for backward
