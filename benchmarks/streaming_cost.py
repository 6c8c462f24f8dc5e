"""Cost of Dynamic Chunk Training for the PoM mixer: forward + backward time
and peak memory of three paths on the same padded batch.

- ``padding``: no chunks, padding excluded (the offline path);
- ``chunked``: a ``DynChunkTrainConfig`` (linear: chunk sums, then a window
  over chunks);
- ``quadratic``: SpeechBrain's (time, time) chunk mask as a tensor, which
  PoM takes as an arbitrary mask (the reference path).

Each path runs in its own process (peak memory: the growth of the process's
resident-set high-water mark, VmHWM, over the run, Linux only), on one CPU
thread by default. Prints one line per path and the ratios.

Usage:
    .venv/bin/python benchmarks/streaming_cost.py            # 3000 frames, B=8, d=144
    .venv/bin/python benchmarks/streaming_cost.py --frames 1000 --repeats 2

Authors
* speechbrain-pom contributors 2026
"""

import argparse
import multiprocessing
import statistics
import time

import torch
from speechbrain.lobes.models.transformer.TransformerASR import (
    make_transformer_src_mask,
)
from speechbrain.utils.dynamic_chunk_training import DynChunkTrainConfig

from speechbrain_pom.nnet.pom import PoM

PATHS = ("padding", "chunked", "quadratic")


def memory_high_water_mark():
    """The process's resident-set high-water mark (VmHWM), in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("VmHWM not found in /proc/self/status")


def measure_path(path, args, results):
    """Times forward + backward of one path; puts (path, seconds, MiB)."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    mixer = PoM(args.d_model)
    x = torch.randn(args.batch, args.frames, args.d_model, requires_grad=True)
    # Half the batch is padded to three quarters of the length.
    lengths = torch.full((args.batch,), args.frames)
    lengths[args.batch // 2 :] = args.frames * 3 // 4
    padding = torch.arange(args.frames)[None] >= lengths[:, None]
    config = DynChunkTrainConfig(args.chunk_size, args.left_chunks)
    mask = {
        "padding": None,
        "chunked": config,
        "quadratic": make_transformer_src_mask(x, dynchunktrain_config=config),
    }[path]
    baseline = memory_high_water_mark()
    times = []
    for _ in range(args.repeats + 1):  # the first run warms up
        start = time.perf_counter()
        out, _ = mixer(x, x, x, attn_mask=mask, key_padding_mask=padding)
        out.sum().backward()
        times.append(time.perf_counter() - start)
        x.grad = None
        mixer.zero_grad()
    peak = (memory_high_water_mark() - baseline) / 2**20
    results.put((path, statistics.median(times[1:]), peak))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--d-model", type=int, default=144)
    parser.add_argument("--chunk-size", type=int, default=16)
    parser.add_argument("--left-chunks", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    print(
        f"PoM (A, degree 3, expand 2), d_model {args.d_model}, batch {args.batch}, "
        f"{args.frames} frames, chunks of {args.chunk_size} with "
        f"{args.left_chunks} left, {args.threads} thread(s), forward + backward, "
        f"median of {args.repeats}"
    )
    context = multiprocessing.get_context("spawn")
    measured = {}
    for path in PATHS:
        results = context.Queue()
        process = context.Process(target=measure_path, args=(path, args, results))
        process.start()
        name, seconds, peak_mib = results.get()
        process.join()
        measured[name] = (seconds, peak_mib)
        print(f"{name:>9}: {seconds:8.3f} s  peak +{peak_mib:8.1f} MiB")
    (padding_s, _), (chunked_s, chunked_mib), (_, quadratic_mib) = (
        measured[path] for path in PATHS
    )
    print(f"chunked / padding time: {chunked_s / padding_s:.2f}x")
    print(f"quadratic / chunked peak memory: {quadratic_mib / chunked_mib:.1f}x")


if __name__ == "__main__":
    main()
