"""Beam search speed: how long beam-decoding a Multi30k-sized test set takes on a CPU.

What it measures
    The wall time of ``taa.torch.generate.beam_search`` (and of ``greedy_decode`` for
    scale) over ``--sentences`` random source sentences of 10-20 tokens, ``--batch``
    sentences per call, with a randomly initialised model of the given size in float32.
    The project's goal: the 1000 Multi30k test sentences, beam 4, in under 60 s with
    2 threads, with a model of d_model=256, 3+3 layers, 4 heads, d_ff=1024, vocab 8000.

Two models, because a random model decides when it stops
    * ``random``: a random model hardly ever emits the end token, so every sentence
      runs to its limit, source length + ``--max-extra`` (the paper's +50): the worst case.
    * ``ends``: the same model with the end token's logit biased by
      ``4 * (position - --ends-after)``: it ends sentences after about that many tokens,
      as a trained model would (Multi30k's German references average ~12 words).

Both the wall time and the CPU time of the process are reported. On a shared machine
the CPU time with ``--threads 1`` is the figure other load barely disturbs; with two
threads and a busy second core, every parallel op waits for a time slice and the wall
time can grow tenfold.

Run it (from the repository root, with taa importable)::

    python benchmarks/beam_search_speed.py                 # both models, 1000 sentences, 2 threads
    python benchmarks/beam_search_speed.py --threads 1 --sentences 200 --models ends --profile
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import time
from typing import Optional

import torch
from torch import Tensor

from taa.config import TransformerConfig
from taa.torch.blocks import DecoderCache
from taa.torch.generate import beam_search, greedy_decode
from taa.torch.models.transformer import Transformer


class EndsAfter(Transformer):
    """A Transformer whose end-token logit grows with the position: it stops after ~``ends_after`` tokens."""

    def __init__(self, config: TransformerConfig, ends_after: int) -> None:
        super().__init__(config)
        self.ends_after = ends_after

    def decode(
        self,
        target: Tensor,
        memory: Tensor,
        source_padding: Tensor,
        target_padding: Optional[Tensor] = None,
        cache: Optional[DecoderCache] = None,
    ) -> Tensor:
        offset = cache.length if cache is not None else 0
        logits = super().decode(target, memory, source_padding, target_padding, cache)  # (b, n, v)
        decoded = torch.arange(offset + 1, offset + 1 + target.shape[1], device=logits.device)  # tokens so far
        logits[..., self.config.eos_id] += 4.0 * (decoded - self.ends_after)
        return logits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sentences", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--beam", type=int, default=4)
    parser.add_argument("--max-extra", type=int, default=50)
    parser.add_argument("--ends-after", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--d-ff", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--models", nargs="+", default=["ends", "random"], choices=["ends", "random"])
    parser.add_argument("--greedy", action="store_true", help="also time greedy decoding")
    parser.add_argument("--profile", action="store_true", help="print the top of a cProfile of beam search")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    config = TransformerConfig(
        d_model=args.d_model, n_heads=args.heads, d_ff=args.d_ff, dropout=0.0,
        n_encoder_layers=args.layers, n_decoder_layers=args.layers,
        source_vocab_size=args.vocab, target_vocab_size=args.vocab, max_length=128,
    )
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(10, 21, (args.sentences,), generator=generator)  # ~15 tokens
    sources = torch.randint(3, args.vocab, (args.sentences, int(lengths.max())), generator=generator)
    sources[torch.arange(sources.shape[1])[None, :] >= lengths[:, None]] = config.pad_id
    batches = sources.split(args.batch)

    report = {"sentences": args.sentences, "batch": args.batch, "beam": args.beam, "threads": args.threads,
              "load_average_before": os.getloadavg()[0]}
    for name in args.models:
        torch.manual_seed(0)
        model = (EndsAfter(config, args.ends_after) if name == "ends" else Transformer(config)).eval()
        profiler = cProfile.Profile() if args.profile else None
        start, cpu_start, tokens = time.perf_counter(), time.process_time(), 0
        if profiler:
            profiler.enable()
        for batch in batches:
            tokens += sum(len(t) for t in beam_search(model, batch, args.beam, max_extra=args.max_extra))
        if profiler:
            profiler.disable()
        report[f"{name}_beam_seconds"] = round(time.perf_counter() - start, 2)
        report[f"{name}_beam_cpu_seconds"] = round(time.process_time() - cpu_start, 2)
        report[f"{name}_beam_mean_output_tokens"] = round(tokens / args.sentences, 1)
        if args.greedy:
            start, cpu_start = time.perf_counter(), time.process_time()
            for batch in batches:
                greedy_decode(model, batch, max_extra=args.max_extra)
            report[f"{name}_greedy_seconds"] = round(time.perf_counter() - start, 2)
            report[f"{name}_greedy_cpu_seconds"] = round(time.process_time() - cpu_start, 2)
        if not args.json:
            print({key: value for key, value in report.items() if key.startswith(name)}, flush=True)
        if profiler:
            pstats.Stats(profiler).sort_stats("tottime").print_stats(15)
    report["load_average_after"] = os.getloadavg()[0]
    print(json.dumps(report) if args.json else report)


if __name__ == "__main__":
    main()
