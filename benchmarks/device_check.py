"""Device check: every model family computes the same numbers on another device as on the CPU.

What it checks
    For each model (``--models``: tiny presets by default, every family and each kind of
    position), one model is made on the CPU from a seed, and a copy of it is moved to
    ``--device``. Both then run, in float32:

    * one forward and backward pass (a sum of squares of the outputs as the loss): the
      outputs and every weight's gradient;
    * for the models that generate text, greedy decoding and beam search (beam 3) on the
      KV cache, and for GPT greedy decoding of a left-padded batch: the tokens, and beam
      search's scores;
    * a checkpoint written from the device (``save_pretrained``) and read back with
      ``from_pretrained(device=...)``, on the CPU and on the device: the same weights.

    Numbers are equal when no element differs by more than ``--tolerance`` (1e-4) plus that
    much of its size; tokens must be equal. TF32 matrix products are turned off, so a GPU
    computes in full float32. One line per check; the exit status is 1 when one fails.

    With ``--device cpu`` both copies are on the CPU: a quick run of the script itself,
    which the tests do.

Run it (from the repository root, with taa importable)::

    python benchmarks/device_check.py --device cuda
    python benchmarks/device_check.py --device cuda:1 --models gpt-tiny t5-tiny
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from collections.abc import Callable, Sequence

import torch

from taa.config import ConfigError, preset
from taa.decoding import DecodingConfig
from taa.torch.devices import resolve_device
from taa.torch.generate import decode
from taa.torch.hub import build_model, from_pretrained, save_pretrained

# Each model as PRESET[:POSITIONAL], with the class to build (None: the family's default).
MODELS = {
    "vaswani-tiny": None, "vaswani-tiny:learned": None, "vaswani-tiny:rotary": None, "vaswani-tiny:relative": None,
    "gpt-tiny": None, "gpt-tiny:rotary": None, "gpt-tiny:alibi": None,
    "bert-tiny": "BertForMaskedLM", "t5-tiny": None, "t5-v1_1-tiny": None,
}
GREEDY, BEAM = DecodingConfig(), DecodingConfig(beam=3, length_penalty=0.6)


class Checks:
    """Runs checks, one line each; remembers whether any failed."""

    def __init__(self, tolerance: float) -> None:
        self.tolerance, self.failed = tolerance, 0

    def close(self, what: str, found: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
        """``found`` (on the device) against ``expected`` (on the CPU), name by name."""
        worst, problems = 0.0, []
        for name, value in expected.items():
            other = found[name].detach().cpu().float()
            value = value.detach().float()
            if other.shape != value.shape:
                problems.append(f"{name}: shape {tuple(other.shape)} != {tuple(value.shape)}")
                continue
            difference = (other - value).abs()
            worst = max(worst, float(difference.max()) if difference.numel() else 0.0)
            if not bool((difference <= self.tolerance * (1 + value.abs())).all()):
                problems.append(f"{name}: max |diff| {float(difference.max()):.3g}")
        self._report(what, problems, f"max |diff| {worst:.2g} over {len(expected)} tensors")

    def equal(self, what: str, found: torch.Tensor, expected: torch.Tensor) -> None:
        same = found.shape == expected.shape and torch.equal(found.cpu(), expected)
        rows = "" if same else f"{found.cpu().tolist()} != {expected.tolist()}"
        self._report(what, [rows] if rows else [], f"{tuple(expected.shape)} tokens equal")

    def run(self, what: str, check: Callable[[], None]) -> None:
        """``check()``; an exception in it (a tensor on the wrong device, ...) fails the check."""
        try:
            check()
        except Exception as error:  # noqa: BLE001 - every failure is one line, and the next check runs
            self._report(what, [f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"], "")

    def _report(self, what: str, problems: list[str], figures: str) -> None:
        self.failed += bool(problems)
        print(f"{'FAIL' if problems else 'ok  '}  {what:<48} {'; '.join(problems) if problems else figures}",
              flush=True)


def make_model(name: str) -> torch.nn.Module:
    """The model ``PRESET[:POSITIONAL]`` names, from seed 0, on the CPU in float32."""
    preset_name, _, positional = name.partition(":")
    torch.manual_seed(0)
    config = preset(preset_name, **({"positional": positional} if positional else {}))
    model = build_model(config, MODELS.get(name))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # non-zero biases, non-unit norms: every parameter matters
        for parameter in model.parameters():
            if parameter.dim() == 1:
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.1)
    return model


def forward(model: torch.nn.Module, name: str, ids: torch.Tensor) -> torch.Tensor:
    """The training-time forward pass on ``ids`` (b, n)."""
    if name.startswith("vaswani"):
        return model(ids, ids)
    if name.startswith("t5"):
        return model(ids, ids, attention_mask=ids != model.config.pad_id)
    if name.startswith("bert"):
        return model(ids, (ids != model.config.pad_id).long())
    return model(ids)


def forward_backward(model: torch.nn.Module, name: str, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """The outputs and every weight's gradient of one forward and backward pass."""
    model.zero_grad()
    output = forward(model.train(), name, ids)
    output.square().mean().backward()
    return {"output": output, **{f"grad {key}": p.grad for key, p in model.named_parameters() if p.grad is not None}}


def check_model(checks: Checks, name: str, device: torch.device) -> None:
    model = make_model(name)
    moved = copy.deepcopy(model).to(device)
    generator = torch.Generator().manual_seed(2)
    ids = torch.randint(4, 40, (3, 9), generator=generator)  # (b, n)
    pad_id = getattr(model.config, "pad_id", None)
    if pad_id is not None:  # a padded row: the padding masks on the device too
        ids[0, 6:] = pad_id

    def training() -> None:
        checks.close(f"{name} forward+backward", forward_backward(moved, name, ids.to(device)),
                     forward_backward(model, name, ids))

    checks.run(f"{name} forward+backward", training)
    if not hasattr(model, "new_cache"):  # BERT: no decoding
        return
    prompt = ids[:, :6]
    mask = None
    for how, settings in (("greedy", GREEDY), ("beam", BEAM)):
        def decoding(settings=settings, how=how) -> None:
            expected = decode(model, prompt, mask, settings, max_new_tokens=8, n_best=settings.beam)
            found = decode(moved, prompt.to(device), mask, settings, max_new_tokens=8, n_best=settings.beam)
            checks.equal(f"{name} {how} decoding", found.tokens, expected.tokens)
            if expected.hypotheses is not None:
                scores = {f"sentence {i} hypothesis {j}": torch.tensor([h.score, h.log_prob])
                          for i, hypotheses in enumerate(expected.hypotheses) for j, h in enumerate(hypotheses)}
                found_scores = {f"sentence {i} hypothesis {j}": torch.tensor([h.score, h.log_prob])
                                for i, hypotheses in enumerate(found.hypotheses) for j, h in enumerate(hypotheses)}
                checks.close(f"{name} beam scores", found_scores, scores)

        checks.run(f"{name} {how} decoding", decoding)
    if name.startswith("gpt"):
        def padded() -> None:
            left_padded = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1], [0, 1, 1, 1, 1, 1]])
            expected = decode(model, prompt, left_padded, GREEDY, max_new_tokens=8)
            found = decode(moved, prompt.to(device), left_padded.to(device), GREEDY, max_new_tokens=8)
            checks.equal(f"{name} greedy decoding, left-padded", found.tokens, expected.tokens)

        checks.run(f"{name} greedy decoding, left-padded", padded)


def check_checkpoint(checks: Checks, name: str, device: torch.device) -> None:
    """Weights written from ``device`` load on the CPU and on ``device``, equal to the CPU's."""
    model = make_model(name)
    expected = dict(model.state_dict())

    def round_trip() -> None:
        with tempfile.TemporaryDirectory() as folder:
            save_pretrained(copy.deepcopy(model).to(device), folder)
            for where in dict.fromkeys((torch.device("cpu"), device)):  # the CPU, and the device if another
                loaded = from_pretrained(folder, device=where).model
                wrong = [key for key, value in loaded.state_dict().items() if value.device.type != where.type]
                if wrong:
                    raise AssertionError(f"{len(wrong)} tensors not on {where}, e.g. {wrong[0]}")
                if len(list(loaded.parameters())) != len(list(model.parameters())):  # tied weights stay one
                    raise AssertionError(f"{len(list(loaded.parameters()))} weights on {where}, "
                                         f"{len(list(model.parameters()))} on the CPU: a tie was lost")
                checks.close(f"{name} checkpoint from {device.type}, loaded on {where.type}",
                             dict(loaded.state_dict()), expected)

    checks.run(f"{name} checkpoint", round_trip)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="auto, cpu, cuda, cuda:N or mps (default: cuda)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS), metavar="MODEL",
                        help=f"PRESET[:POSITIONAL], from: {', '.join(MODELS)}")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    args = parser.parse_args(argv)
    try:
        device = resolve_device(args.device, "--device")
    except ConfigError as error:  # a GPU this machine does not have: one line
        print(error, file=sys.stderr)
        return 2
    torch.backends.cuda.matmul.allow_tf32 = False  # full float32 products, as on the CPU
    torch.backends.cudnn.allow_tf32 = False
    print(f"taa device check: {device} against cpu, float32, tolerance {args.tolerance:g}", flush=True)
    checks = Checks(args.tolerance)
    for name in args.models:
        check_model(checks, name, device)
    for name in dict.fromkeys(name.partition(":")[0] for name in args.models):  # each preset once
        check_checkpoint(checks, name, device)
    print(f"{'all checks passed' if not checks.failed else f'{checks.failed} checks failed'}", flush=True)
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
