"""taa.torch.kernels: each device- and dtype-specific choice gives the reference's numbers,
and the choices measured on CPUs apply on CPUs only."""

from __future__ import annotations

import pytest
import torch

from taa.torch import kernels
from taa.torch.attention import attend, padding_mask
from taa.torch.kernels import TanhGeluWithSlope, gelu_tanh, keep_mask

pytestmark = pytest.mark.usefixtures("single_thread")


# --------------------------------------------------------------------------------------
# CPU features
# --------------------------------------------------------------------------------------


def test_cpu_flags_are_read_from_every_core(tmp_path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nflags\t\t: fpu sse2 avx512f\n\n"
        "processor\t: 1\nflags\t\t: fpu sse2 amx_bf16 amx_tile\n"
    )
    assert kernels.cpu_flags(str(cpuinfo)) == {"fpu", "sse2", "avx512f", "amx_bf16", "amx_tile"}
    assert kernels.cpu_flags(str(tmp_path / "missing")) == frozenset()
    assert isinstance(kernels.cpu_has_amx(), bool)


# --------------------------------------------------------------------------------------
# Attention kernel choice
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("device, dtype, training, queries, amx, fused", [
    ("cpu", torch.float32, True, 5, True, True),
    ("cpu", torch.bfloat16, True, 5, False, False),  # the fused bfloat16 backward is slow on CPUs
    ("cpu", torch.float16, True, 5, False, False),
    ("cpu", torch.bfloat16, False, 5, False, True),
    ("cpu", torch.float32, False, 1, False, True),  # a decoding step on a CPU without AMX
    ("cpu", torch.float32, False, 1, True, False),  # ... and with AMX
    ("cpu", torch.bfloat16, False, 1, False, False),
    ("meta", torch.bfloat16, True, 5, True, True),  # other devices: always the fused kernel
    ("meta", torch.float32, False, 1, True, True),
    ("meta", torch.bfloat16, False, 1, False, True),
])
def test_use_fused_attention(monkeypatch, device, dtype, training, queries, amx, fused) -> None:
    monkeypatch.setattr(kernels, "cpu_has_amx", lambda: amx)
    query = torch.zeros(2, 4, queries, 8, dtype=dtype, device=device, requires_grad=training)
    assert kernels.use_fused_attention(query) == fused
    with torch.no_grad():  # no gradient: not training
        assert kernels.use_fused_attention(query) == kernels.use_fused_attention(query.detach())


def test_bfloat16_training_on_cpu_takes_the_readable_path() -> None:
    # The fused CPU kernel's bfloat16 backward is slow; training in bfloat16 uses eq. 1's matmuls.
    torch.manual_seed(11)
    q, k, v = (torch.randn(2, 4, 5, 8, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    mask = padding_mask(torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]), pad_id=0)[:, None, None, :]
    fused, _ = attend(q, k, v, mask, implementation="fused")
    readable, _ = attend(q, k, v, mask, implementation="readable")
    assert torch.equal(fused, readable)
    with torch.no_grad():  # inference keeps the fused kernel, whose numbers differ in the last bits
        inference, _ = attend(q, k, v, mask, implementation="fused")
    torch.testing.assert_close(inference.float(), readable.detach().float(), atol=2e-2, rtol=0)


@pytest.mark.parametrize("dtype, amx, fused", [
    (torch.float32, False, True), (torch.float32, True, False), (torch.bfloat16, False, False),
])
def test_decoding_step_kernel_choice(monkeypatch, dtype: torch.dtype, amx: bool, fused: bool) -> None:
    # One query (a decoding step) in inference on a CPU: the fused kernel in float32 except on
    # CPUs with AMX, eq. 1's matmuls in bfloat16; the same numbers either way.
    monkeypatch.setattr(kernels, "cpu_has_amx", lambda: amx)
    calls = []
    kernel = kernels.fused_attention
    monkeypatch.setattr(kernels, "fused_attention", lambda *args, **kwargs: calls.append(1) or kernel(*args, **kwargs))
    generator = torch.Generator().manual_seed(12)
    q = torch.randn(2, 4, 1, 8, generator=generator).to(dtype)
    k, v = (torch.randn(2, 4, 6, 8, generator=generator).to(dtype) for _ in range(2))
    with torch.inference_mode():
        output, _ = attend(q, k, v, causal=True)
        readable, _ = attend(q, k, v, causal=True, implementation="readable")
    assert bool(calls) == fused
    torch.testing.assert_close(output.float(), readable.float(), atol=1e-5 if dtype == torch.float32 else 2e-2, rtol=0)


def test_empty_query_rows() -> None:
    mask = torch.tensor([[True, False], [False, False]])[None, None]  # (1, 1, q=2, k=2)
    assert kernels.empty_query_rows(mask).flatten().tolist() == [False, True]
    assert kernels.empty_query_rows(torch.ones(1, 1, 2, 2, dtype=torch.bool)) is None  # on a CPU: none empty
    on_meta = kernels.empty_query_rows(torch.ones(1, 1, 2, 2, dtype=torch.bool, device="meta"))
    assert on_meta is not None and on_meta.shape == (1, 1, 2, 1)  # elsewhere: no sync, always the rows


@pytest.mark.parametrize("rows, stacked", [(1, False), (63, False), (64, True), (4096, True)])
def test_stacked_projections_from_the_threshold(rows: int, stacked: bool) -> None:
    assert kernels.stack_qkv_projections(rows, torch.device("cpu")) == stacked
    assert not kernels.stack_qkv_projections(rows, torch.device("meta"))  # measured on CPUs only


# --------------------------------------------------------------------------------------
# The tanh GELU
# --------------------------------------------------------------------------------------


def test_gelu_tanh_training_path_matches_the_builtin_values_and_gradients() -> None:
    # Training in float32 takes the function that computes the derivative in its forward pass.
    torch.manual_seed(7)
    x = torch.cat([torch.randn(4000) * 3, torch.tensor([0.0, -1e-30, 50.0, -50.0, 1e5, -1e5, 3e19, -3e19])])
    ours_in, builtin_in = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours = gelu_tanh(ours_in)
    assert ours.grad_fn is not None and "TanhGelu" in type(ours.grad_fn).__name__
    builtin = torch.nn.functional.gelu(builtin_in, approximate="tanh")
    grad = torch.randn_like(x)
    ours.backward(grad)
    builtin.backward(grad)
    torch.testing.assert_close(ours, builtin, atol=1e-6, rtol=1e-6)
    # The built-in backward overflows to NaN at |x| = 3e19; this one gives GELU's limits 1 and 0.
    torch.testing.assert_close(ours_in.grad[:-2], builtin_in.grad[:-2], atol=1e-5, rtol=1e-6)
    assert ours_in.grad[-2:].tolist() == [grad[-2].item(), 0.0]
    double = torch.randn(30, dtype=torch.float64) * 3  # the formula itself, against finite differences
    assert torch.autograd.gradcheck(TanhGeluWithSlope.apply, (double.requires_grad_(),))
    first, = torch.autograd.grad(gelu_tanh(ours_in).sum(), ours_in, create_graph=True)
    with pytest.raises(RuntimeError):  # no silent wrong second derivative
        first.sum().backward()


def test_gelu_tanh_outside_float32_training_on_a_cpu_is_the_builtin() -> None:
    x = torch.randn(10)
    assert torch.equal(gelu_tanh(x), torch.nn.functional.gelu(x, approximate="tanh"))
    half = torch.randn(10, dtype=torch.bfloat16, requires_grad=True)
    assert "TanhGelu" not in type(gelu_tanh(half).grad_fn).__name__
    elsewhere = torch.zeros(10, device="meta", requires_grad=True)  # measured on CPUs only
    assert "TanhGelu" not in type(gelu_tanh(elsewhere).grad_fn).__name__


# --------------------------------------------------------------------------------------
# The dropout mask
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("p", [0.1, 0.2, 0.5, 0.9])
def test_keep_rate_matches_p(p: float) -> None:
    torch.manual_seed(0)
    keep = keep_mask((1000, 1000), p)
    assert keep.dtype == torch.bool and keep.shape == (1000, 1000)
    rate = keep.float().mean().item()
    assert abs(rate - (1 - p)) < 3e-3  # 1e6 draws: the standard error is <= 5e-4


def test_mask_is_uniform_across_positions() -> None:
    # Four 15-bit numbers come from each 64-bit draw: no lane may be biased.
    torch.manual_seed(1)
    keep = keep_mask((400_000,), 0.5).float().view(-1, 4).mean(dim=0)
    torch.testing.assert_close(keep, torch.full((4,), 0.5), atol=6e-3, rtol=0)


def test_odd_sizes_and_empty() -> None:
    assert keep_mask((3, 7), 0.3).shape == (3, 7)
    assert keep_mask((0, 5), 0.3).shape == (0, 5)


def test_apply_dropout_uses_the_fast_mask_on_cpus_only(monkeypatch) -> None:
    x = torch.randn(40, 30)
    torch.manual_seed(5)
    keep = keep_mask(x.shape, 0.3)
    torch.manual_seed(5)
    torch.testing.assert_close(kernels.apply_dropout(x, 0.3), x * keep / 0.7)
    calls = []
    monkeypatch.setattr(kernels, "keep_mask", lambda *args: calls.append(1) or keep_mask(*args))
    kernels.apply_dropout(torch.zeros(40, 30, device="meta"), 0.3)  # torch.nn.functional.dropout
    assert not calls
    kernels.apply_dropout(x, 0.3)
    assert calls
