"""Time and peak memory of token mixers against sequence length.

Every configuration (mixer, scope, length, mode) runs in its own child process
(multiprocessing "forkserver": a server imports torch and SpeechBrain once and
forks a fresh process per configuration), so that its peak memory is not
polluted by the others, and a child killed for memory becomes a "failed" row
instead of ending the whole run. Before a child starts, its peak memory and
step time are predicted; configurations over ``--mem-budget-gib`` or
``--max-seconds`` are recorded as skipped, with the reason.

Scopes
------
mixer
    The token mixer alone at the small scale (d_model 144, 4 heads, d_ffn 576),
    called as a Conformer layer calls it: ``mixer(x, x, x, pos_embs=...)``.
small, paper
    ``MixerTransformerASR.encode`` (Conformer encoder, no CNN front-end: the
    input is already ``d_model`` wide and its length is the number of frames
    after the 4x front-end, 25 frames per second). small: d_model 144,
    4 layers, 4 heads, d_ffn 576, kernel 15. paper: d_model 576, 12 layers,
    8 heads, d_ffn 2048, kernel 31.

Memory
------
CPU: ``peak_mem_mib`` is the child's resident-set high-water mark (VmHWM,
whole process, imports included); ``peak_mem_delta_mib`` subtracts the
resident set measured after imports and model build (before the input is
allocated). VmHWM rather than ``getrusage(RUSAGE_SELF).ru_maxrss``: on Linux
ru_maxrss keeps the parent's high-water mark across fork and exec, so a child
of a large parent would report the parent's peak. CUDA:
``torch.cuda.max_memory_allocated`` and the same minus the memory allocated
after model build. Ratios in the targets table use the delta.

Usage
-----
    python benchmarks/mixer_scaling.py --quick --out /tmp/bench
    python benchmarks/mixer_scaling.py --out benchmarks/results/cpu-2threads \\
        --scopes mixer small --lengths 750 3000 12000
"""

import argparse
import csv
import datetime
import json
import math
import multiprocessing
import os
import platform
import shlex
import signal
import statistics
import sys
import time
from pathlib import Path

FRAMES_PER_SECOND = 25
DEFAULT_LENGTHS = (25, 250, 750, 3000, 12000, 45000, 90000)
QUICK_LENGTHS = (25, 250, 750)
MODES = ("forward", "forward_backward")
SCOPES = ("mixer", "small", "paper")
QUICK_SCOPES = ("mixer", "small")
# Mixer-alone measurements use the small scale's dimensions.
SCALES = {
    "mixer": {"d_model": 144, "layers": 1, "nhead": 4, "d_ffn": 576, "kernel": 15},
    "small": {"d_model": 144, "layers": 4, "nhead": 4, "d_ffn": 576, "kernel": 15},
    "paper": {"d_model": 576, "layers": 12, "nhead": 8, "d_ffn": 2048, "kernel": 31},
}
# Benchmark name -> (mixer built, options of that mixer). "pom_matched" gets
# its options from ``matched_pom_options``; "pom_linears" is PoM's three
# Linear layers alone (mixer scope only): the cost PoM cannot go below.
POM_OPTIONS = {"formulation": "A", "degree": 3, "expand": 2}
MIXER_SPECS = {
    "pom": ("pom", POM_OPTIONS),
    "pom_c": ("pom", {**POM_OPTIONS, "formulation": "C"}),
    "pom_matched": ("pom", None),
    "pom_naive": ("pom", {**POM_OPTIONS, "fused": False}),
    "pom_linears": ("pom_linears", POM_OPTIONS),
    "summarymixing": ("summarymixing", {}),
    "hypermixing": ("hypermixing", {}),
    "RelPosMHAXL": ("RelPosMHAXL", {}),
    "RoPEMHA": ("RoPEMHA", {}),
}
MIXER_ONLY = ("pom_linears",)
QUADRATIC_MIXERS = ("RelPosMHAXL", "RoPEMHA")
# Expansion factors tried when matching SummaryMixing's parameter count.
MATCHING_EXPANDS = (1, 4 / 3, 3 / 2, 5 / 3, 2)
MATCHING_TOLERANCE = 0.2
# glibc returns big freed blocks to the OS after every step unless told not
# to, which doubles the step time of long inputs (shared/reference/environment.md).
CHILD_ENVIRONMENT = {
    "MALLOC_MMAP_THRESHOLD_": str(32 * 2**30),
    "MALLOC_TRIM_THRESHOLD_": str(32 * 2**30),
}
# Imported once by the server that forks the children (``child_context``).
CHILD_PRELOAD = (
    "torch",
    "speechbrain.nnet.attention",
    "speechbrain.nnet.hypermixing",
    "speechbrain_pom.lobes.models.transformer.MixerTransformerASR",
)
# Warm-up runs at no more than this many frames: it pays the one-off costs
# (lazy initialisation, allocator growth) without doubling long measurements.
WARMUP_MAX_FRAMES = 1000
# Memory model: a fixed overhead plus activations; see ``analytic_peak_bytes``.
ANALYTIC_OVERHEAD_BYTES = 64 * 2**20
# Measurements below these are dominated by fixed costs and noise on a shared
# machine: no prediction is extrapolated from them.
FIT_FLOOR = {"memory": 32 * 2**20, "time": 1.0}
CSV_COLUMNS = (
    "mixer",
    "scope",
    "length_frames",
    "audio_seconds",
    "batch",
    "mode",
    "time_s_median",
    "time_s_all",
    "peak_mem_mib",
    "peak_mem_delta_mib",
    "memory_measure",
    "params",
    "mixer_options",
    "threads",
    "device",
    "autocast",
    "status",
)
TARGET_LENGTH = 3000
TARGET_BATCH = 8
TARGET_THREADS = 2


# --------------------------------------------------------------------------
# Models (child side)
# --------------------------------------------------------------------------


def build_model(spec):
    """Builds the module measured by one configuration, and its input.

    Arguments
    ---------
    spec : dict
        Child specification (mixer, scope, length, options, ...).

    Returns
    -------
    model : torch.nn.Module
        A module mapping an input tensor to a list of output tensors.
    make_input : callable
        ``make_input(length, device)``: a random input of ``length`` frames.
    """
    import torch
    from speechbrain.lobes.models.transformer.Transformer import RelPosEncXL
    from speechbrain.nnet.attention import RelPosMHAXL, RoPEMHA
    from speechbrain.nnet.hypermixing import HyperMixing

    from speechbrain_pom.lobes.models.transformer.MixerTransformerASR import (
        MixerTransformerASR,
        build_mixer,
    )

    scale = SCALES[spec["scope"]]
    d_model, nhead, d_ffn = scale["d_model"], scale["nhead"], scale["d_ffn"]
    kind = MIXER_SPECS[spec["mixer"]][0]
    options = spec["mixer_options"]

    class MixerAlone(torch.nn.Module):
        """A token mixer called as SpeechBrain's Conformer layer calls it."""

        def __init__(self, mixer, positional_encoding=None):
            super().__init__()
            self.mixer = mixer
            self.positional_encoding = positional_encoding

        def forward(self, x):
            pos_embs = (
                None
                if self.positional_encoding is None
                else self.positional_encoding(x)
            )
            result = self.mixer(x, x, x, pos_embs=pos_embs, return_attn_weights=False)
            outputs = result if isinstance(result, tuple) else (result,)
            return [output for output in outputs if output is not None]

    class PoMLinears(torch.nn.Module):
        """PoM's expand, gate and output projections, nothing else."""

        def __init__(self, pom):
            super().__init__()
            self.expand_proj = pom.expand_proj
            self.gate_proj = pom.gate_proj
            self.out_proj = pom.out_proj

        def forward(self, query, key, value, pos_embs=None, return_attn_weights=True):
            # Both projections feed the loss, so both are differentiated.
            return self.out_proj(self.expand_proj(query)), self.gate_proj(query)

    class Encoder(torch.nn.Module):
        """``MixerTransformerASR.encode`` on full-length inputs."""

        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            wav_lens = torch.ones(x.shape[0], device=x.device)
            return [self.net.encode(x, wav_lens)]

    def hypermixing():
        """SpeechBrain's HyperMixing, its position table sized for the input
        (SpeechBrain's Conformer builds it for 3000 frames at most)."""
        return HyperMixing(
            input_output_dim=d_model,
            hypernet_size=d_ffn,
            tied=False,
            num_heads=nhead,
            fix_tm_hidden_size=False,
            max_length=spec["length"],
        )

    if spec["scope"] != "mixer":
        mixer_options = {kind: options} if kind in ("pom", "summarymixing") else None
        net = MixerTransformerASR(
            tgt_vocab=1,
            input_size=d_model,
            d_model=d_model,
            nhead=nhead,
            d_ffn=d_ffn,
            mixer=kind,
            mixer_options=mixer_options,
            num_encoder_layers=scale["layers"],
            num_decoder_layers=0,
            encoder_module="conformer",
            normalize_before=True,
            kernel_size=scale["kernel"],
            positional_encoding=None,
            causal=False,
        )
        if kind == "hypermixing":
            for layer in net.encoder.layers:
                layer.mha_layer = hypermixing()
        model = Encoder(net)
    elif kind in ("pom", "summarymixing"):
        model = MixerAlone(build_mixer(kind, d_model, options))
    elif kind == "pom_linears":
        model = MixerAlone(PoMLinears(build_mixer("pom", d_model, options)))
    elif kind == "hypermixing":
        model = MixerAlone(hypermixing())
    elif kind == "RelPosMHAXL":
        model = MixerAlone(RelPosMHAXL(d_model, nhead), RelPosEncXL(d_model))
    else:
        model = MixerAlone(RoPEMHA(d_model, nhead))
    # A mixer alone is differentiated with respect to its input too, as it is
    # inside an encoder.
    input_grad = spec["mode"] == "forward_backward" and spec["scope"] == "mixer"

    def make_input(length, device):
        return torch.randn(
            spec["batch"], length, d_model, device=device, requires_grad=input_grad
        )

    return model, make_input


def memory_status_bytes(field):
    """A memory field of /proc/self/status (VmRSS, VmHWM), in bytes (Linux)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not found in /proc/self/status")


def measure(spec, build=build_model):
    """Measures one configuration and returns its result row fields.

    Arguments
    ---------
    spec : dict
        Child specification, see ``child_spec``.
    build : callable
        ``build(spec)`` -> (model, make_input), as ``build_model``.

    Returns
    -------
    dict
        time_s_all, time_s_median, peak_mem_mib, peak_mem_delta_mib,
        memory_measure, params.
    """
    import torch

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    device = torch.device(spec["device"])
    model, make_input = build(spec)
    model = model.to(device)
    backward = spec["mode"] == "forward_backward"
    model.train(backward)
    params = sum(p.numel() for p in model.parameters())

    def autocast():
        dtype = spec["autocast"]
        return torch.autocast(
            device.type,
            dtype=getattr(torch, dtype or "bfloat16"),
            enabled=dtype is not None,
        )

    def step(x):
        if backward:
            with autocast():
                outputs = model(x)
            loss = sum(output.float().sum() for output in outputs)
            loss.backward()
            model.zero_grad(set_to_none=True)
            x.grad = None
        else:
            with torch.no_grad(), autocast():
                model(x)
        if device.type == "cuda":
            torch.cuda.synchronize()

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
    else:
        baseline = memory_status_bytes("VmRSS")
    for _ in range(spec["warmup"]):
        step(make_input(min(spec["length"], WARMUP_MAX_FRAMES), device))
    x = make_input(spec["length"], device)
    times = []
    for _ in range(spec["repeats"]):
        start = time.perf_counter()
        step(x)
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated()
        memory_measure = "cuda max_memory_allocated; delta: minus that after build"
    else:
        peak = memory_status_bytes("VmHWM")
        memory_measure = "cpu VmHWM; delta: minus VmRSS after imports and build"
    return {
        "time_s_all": [round(t, 6) for t in times],
        "time_s_median": statistics.median(times),
        "peak_mem_mib": peak / 2**20,
        "peak_mem_delta_mib": (peak - baseline) / 2**20,
        "memory_measure": memory_measure,
        "params": params,
    }


def child_main(spec, connection, build=build_model):
    """Entry point of a child process: sends the measurement or the error."""
    try:
        connection.send(measure(spec, build))
    except Exception as error:  # reported as a failed row, not raised
        connection.send({"error": f"{type(error).__name__}: {error}"[:300]})
    finally:
        connection.close()


# --------------------------------------------------------------------------
# Predictions (parent side)
# --------------------------------------------------------------------------


def pom_state_width(d_model, options):
    """Width of PoM's state for the given options (formulation A or C)."""
    width = round(options["expand"] * d_model)
    return options["degree"] * width if options["formulation"] == "A" else width


def mixer_floats_per_frame(kind, options, scale):
    """Rough number of float32 activations a mixer keeps per frame.

    Arguments
    ---------
    kind : str
        Mixer built (``MIXER_SPECS``' first field: pom, pom_linears, ...).
    options : dict
        Options of the mixer (PoM's degree, expand, formulation).
    scale : dict
        d_model, nhead, d_ffn of the scope.

    Returns
    -------
    int
        Activations per frame, linear part only.
    """
    d_model = scale["d_model"]
    if kind in ("pom", "pom_linears"):
        state = pom_state_width(d_model, options)
        naive = 0 if options.get("fused", True) else options["degree"] * state
        return 3 * state + naive + 4 * d_model
    if kind == "hypermixing":
        return 2 * scale["d_ffn"] + 6 * d_model
    return 8 * d_model


def analytic_peak_bytes(kind, options, scale, length, batch, mode, encoder):
    """A priori peak memory of one configuration, before any calibration.

    A fixed overhead, plus float32 activations linear in the frames (one
    layer's working set without backward, every layer's with it), plus, for
    attention, score tensors quadratic in the frames. Shorter lengths measured
    in the run calibrate it (``skip_reason``).

    Arguments
    ---------
    kind : str
        Mixer built (pom, summarymixing, RelPosMHAXL, ...).
    options : dict
        Options of the mixer.
    scale : dict
        d_model, layers, nhead, d_ffn.
    length, batch : int
        Frames and utterances of the input.
    mode : str
        forward or forward_backward.
    encoder : bool
        Conformer layers around the mixer (False: the mixer alone).

    Returns
    -------
    float
        Predicted peak memory above the post-build baseline, in bytes.

    Example
    -------
    >>> scale = SCALES["small"]
    >>> pom = analytic_peak_bytes("pom", POM_OPTIONS, scale, 3000, 8, "forward", True)
    >>> mha = analytic_peak_bytes("RelPosMHAXL", {}, scale, 3000, 8, "forward", True)
    >>> pom < mha
    True
    """
    backward = mode == "forward_backward"
    layers_kept = scale["layers"] if backward else 1
    per_frame = mixer_floats_per_frame(kind, options, scale)
    if encoder:
        # Two macaron feed-forward modules, convolution module, norms.
        per_frame += 2 * scale["d_ffn"] + 16 * scale["d_model"]
    linear = 4 * batch * length * per_frame * layers_kept
    # Floats per (query, key) pair and head: RelPosMHAXL's scores, 2N-wide
    # positional scores, softmax and their gradients (measured on CPU: about 7
    # forward, 14 with backward); RoPEMHA's fused attention holds none unless
    # given a mask, which the encoder always passes (a (B, H, N, N) mask).
    per_pair = 0
    if kind == "RelPosMHAXL":
        per_pair = 14 if backward else 7
    elif kind == "RoPEMHA" and encoder:
        per_pair = 6 if backward else 3
    quadratic = 4 * batch * scale["nhead"] * length**2 * per_pair * layers_kept
    return ANALYTIC_OVERHEAD_BYTES + linear + quadratic


def spec_peak_bytes(spec, length):
    """``analytic_peak_bytes`` of a configuration of this script at ``length``."""
    return analytic_peak_bytes(
        MIXER_SPECS[spec["mixer"]][0],
        spec["mixer_options"],
        SCALES[spec["scope"]],
        length,
        spec["batch"],
        spec["mode"],
        encoder=spec["scope"] != "mixer",
    )


def extrapolate(points, length, nominal_growth, floor):
    """Predicts a value at ``length`` from measurements at shorter lengths.

    Measurements under ``floor`` are dominated by fixed costs and not used.
    With two usable measurements, the growth exponent is fitted on the two
    longest and clipped to [1, 2] (linear to quadratic); with one,
    ``nominal_growth(shorter, longer)`` gives the growth factor.

    Arguments
    ---------
    points : list of tuple
        (length, value) measured for the same mixer, scope and mode, sorted.
    length : int
        Length to predict at (longer than all points).
    nominal_growth : callable
        ``nominal_growth(n, m)``: expected value ratio between lengths m and n.
    floor : float
        Smallest value used for a prediction.

    Returns
    -------
    float or None
        The prediction, None without usable measurements.

    Example
    -------
    >>> extrapolate([(100, 1.0), (200, 4.0)], 400, lambda n, m: m / n, 0.1)
    16.0
    >>> extrapolate([(50, 0.01), (100, 1.0)], 400, lambda n, m: m / n, 0.1)
    4.0
    >>> extrapolate([(50, 0.01)], 400, lambda n, m: m / n, 0.1) is None
    True
    """
    usable = [(n, value) for n, value in points if value > floor]
    if not usable:
        return None
    last_length, last_value = usable[-1]
    if len(usable) >= 2:
        (n1, v1), (n2, v2) = usable[-2:]
        exponent = min(2.0, max(1.0, math.log(v2 / v1) / math.log(n2 / n1)))
        return last_value * (length / last_length) ** exponent
    return last_value * nominal_growth(last_length, length)


# --------------------------------------------------------------------------
# Orchestration (parent side)
# --------------------------------------------------------------------------


def matched_pom_options(d_model=144):
    """PoM options whose parameter count is closest to SummaryMixing's.

    The degree is fixed to that of ``pom``; formulation and expansion
    (``MATCHING_EXPANDS``) are searched. Expansion factors that ``PoM``
    rejects (older versions take integers only) are left out.

    Returns
    -------
    options : dict
        PoM options.
    params : int
        Their parameter count.
    target : int
        SummaryMixing's parameter count.
    """
    from speechbrain_pom.nnet.pom import PoM
    from speechbrain_pom.nnet.summary_mixing import SummaryMixing

    def count(module):
        return sum(p.numel() for p in module.parameters())

    target = count(SummaryMixing(d_model))
    candidates = []
    for formulation in ("A", "C"):
        for expand in MATCHING_EXPANDS:
            options = {
                "formulation": formulation,
                "degree": POM_OPTIONS["degree"],
                "expand": expand,
            }
            try:
                candidates.append((count(PoM(d_model, **options)), options))
            except (TypeError, ValueError):
                continue
    params, options = min(candidates, key=lambda item: abs(item[0] - target))
    return options, params, target


def child_spec(args, mixer, scope, length, mode, options, batch):
    """The JSON-serialisable description a child process measures."""
    return {
        "mixer": mixer,
        "scope": scope,
        "length": length,
        "mode": mode,
        "batch": batch,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "threads": args.threads,
        "device": args.device,
        "autocast": args.autocast,
        "mixer_options": options,
    }


def empty_row(spec, status):
    """A result row with no measurement, only the configuration and status."""
    return {
        "mixer": spec["mixer"],
        "scope": spec["scope"],
        "length_frames": spec["length"],
        "audio_seconds": spec["length"] / FRAMES_PER_SECOND,
        "batch": spec["batch"],
        "mode": spec["mode"],
        "time_s_median": None,
        "time_s_all": [],
        "peak_mem_mib": None,
        "peak_mem_delta_mib": None,
        "memory_measure": None,
        "params": None,
        "mixer_options": spec["mixer_options"],
        "threads": spec["threads"],
        "device": spec["device"],
        "autocast": spec["autocast"],
        "status": status,
    }


def child_context(preload=CHILD_PRELOAD):
    """The multiprocessing context that starts the children.

    A forkserver imports ``preload`` (torch, SpeechBrain) once; each
    configuration is a fresh fork of it (a few ms instead of seconds of
    imports). The children's malloc settings are in the environment the
    server starts with.
    """
    os.environ.update(CHILD_ENVIRONMENT)
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(preload))
    return context


def run_config(context, spec, timeout, build=build_model):
    """Runs one configuration in a child process and returns its row.

    A child that dies (e.g. killed by the kernel for memory) or runs past
    ``timeout`` seconds gives a "failed" row. ``build`` (a module-level
    function, pickled by name) builds the model, as ``build_model``.
    """
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=child_main, args=(spec, sender, build))
    child.start()
    sender.close()
    try:
        # poll is also True when the child exits without sending (EOF).
        result = receiver.recv() if receiver.poll(timeout) else None
    except EOFError:
        result = None
    finally:
        receiver.close()
    child.join(5)
    if child.is_alive():
        child.kill()
        child.join()
        if result is None:
            return empty_row(spec, f"failed: timeout after {timeout:.0f} s")
    if result is None:
        if child.exitcode < 0:
            name = signal.Signals(-child.exitcode).name
            return empty_row(spec, f"failed: killed ({name})")
        return empty_row(spec, f"failed: exit code {child.exitcode}")
    if "error" in result:
        return empty_row(spec, f"failed: {result['error']}")
    row = empty_row(spec, "ok")
    row.update(result)
    return row


def configuration_key(entry):
    """(mixer, scope, mode, batch, length) of a spec or a result row."""
    length = entry["length"] if "length" in entry else entry["length_frames"]
    return entry["mixer"], entry["scope"], entry["mode"], entry["batch"], length


def skip_reason(args, spec, history, peak_bytes=spec_peak_bytes):
    """Why a configuration should not be run, or None to run it.

    Arguments
    ---------
    args : argparse.Namespace
        Budgets (mem_budget_gib, max_seconds).
    spec : dict
        The configuration.
    history : list of dict
        Rows already recorded for the same mixer, scope, mode and batch,
        shorter lengths first.
    peak_bytes : callable
        ``peak_bytes(spec, length)``: the a priori memory model, as
        ``spec_peak_bytes``.

    Returns
    -------
    str or None
    """
    mixer, length = spec["mixer"], spec["length"]
    failed = [row for row in history if row["status"].startswith("failed")]
    if failed:
        return f"skipped: {failed[0]['status']} at {failed[0]['length_frames']} frames"
    over_time = [row for row in history if row["status"].startswith("skipped: time")]
    if over_time:
        return f"skipped: time, {over_time[0]['length_frames']} frames already over"
    measured = [row for row in history if row["status"] == "ok"]
    exponent = 2 if mixer in QUADRATIC_MIXERS else 1
    predicted_time = extrapolate(
        [(row["length_frames"], row["time_s_median"]) for row in measured],
        length,
        lambda n, m: (m / n) ** exponent,
        FIT_FLOOR["time"],
    )
    if predicted_time is not None and predicted_time > args.max_seconds:
        growth = "quadratically" if exponent == 2 else "linearly"
        return (
            f"skipped: time, predicted {predicted_time:.0f} s per step > "
            f"--max-seconds {args.max_seconds:g} (extrapolated from shorter "
            f"lengths, {growth} or as measured)"
        )

    def analytic(n):
        return peak_bytes(spec, n)

    predicted_bytes = extrapolate(
        [(row["length_frames"], row["peak_mem_delta_mib"] * 2**20) for row in measured],
        length,
        lambda n, m: analytic(m) / analytic(n),
        FIT_FLOOR["memory"],
    )
    source = "calibrated on shorter lengths"
    if predicted_bytes is None:
        predicted_bytes, source = analytic(length), "analytic model"
    if measured:
        # The budget bounds the whole process: add the post-build baseline.
        last = measured[-1]
        predicted_bytes += (last["peak_mem_mib"] - last["peak_mem_delta_mib"]) * 2**20
    if predicted_bytes > args.mem_budget_gib * 2**30:
        return (
            f"skipped: memory, predicted {predicted_bytes / 2**30:.2f} GiB > "
            f"--mem-budget-gib {args.mem_budget_gib:g} ({source})"
        )
    return None


def plan(args, matched_options):
    """All configurations in run order: for each scope, mixer and mode,
    lengths ascending (so that shorter lengths calibrate the predictions)."""
    specs = []
    for scope in args.scopes:
        for mixer in args.mixers:
            if scope != "mixer" and mixer in MIXER_ONLY:
                continue
            options = MIXER_SPECS[mixer][1]
            if options is None:
                options = matched_options
            batch = args.batch_mixer if scope == "mixer" else args.batch_encoder[scope]
            for mode in args.modes:
                for length in sorted(args.lengths):
                    specs.append(
                        child_spec(args, mixer, scope, length, mode, options, batch)
                    )
    return specs


def write_results(rows, out_dir):
    """Writes results.json and results.csv (lists as JSON strings in the CSV)."""
    (out_dir / "results.json").write_text(json.dumps(rows, indent=1) + "\n")
    with open(out_dir / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {
                    key: json.dumps(value) if isinstance(value, list | dict) else value
                    for key, value in row.items()
                }
            )


def machine_info(args, scales):
    """CPU, GPU, library versions, date and command line of this run, and
    the model sizes (``scales``) it measures."""
    import speechbrain
    import torch

    cpu_model = platform.processor()
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    gpu = None
    if args.device.startswith("cuda") and torch.cuda.is_available():
        gpu = torch.cuda.get_device_name(torch.device(args.device))
    return {
        "cpu_model": cpu_model,
        "logical_cpus": os.cpu_count(),
        "threads": args.threads,
        "device": args.device,
        "autocast": args.autocast,
        "gpu": gpu,
        "torch_version": torch.__version__,
        "speechbrain_version": speechbrain.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        # With --append, main adds the command lines of the earlier runs.
        "command_line": shlex.join([sys.executable, *sys.argv]),
        "child_environment": CHILD_ENVIRONMENT,
        "warmup_runs": args.warmup,
        "warmup_max_frames": WARMUP_MAX_FRAMES,
        "repeats": args.repeats,
        "mem_budget_gib": args.mem_budget_gib,
        "max_seconds": args.max_seconds,
        "frames_per_second": FRAMES_PER_SECOND,
        "scales": scales,
    }


def begin_run(args, scales):
    """Creates ``--out`` and writes machine.json; returns the earlier rows.

    Arguments
    ---------
    args : argparse.Namespace
        Options of ``add_run_options``.
    scales : dict
        Model sizes measured, recorded in machine.json.

    Returns
    -------
    list of dict
        With ``--append``, the rows already in ``--out`` (machine.json then
        lists every run's command line); otherwise none.
    """
    args.out.mkdir(parents=True, exist_ok=True)
    machine = machine_info(args, scales)
    previous_rows, command_lines = [], []
    if args.append and (args.out / "results.json").exists():
        previous_rows = json.loads((args.out / "results.json").read_text())
        previous_machine = json.loads((args.out / "machine.json").read_text())
        command_lines = previous_machine["command_lines"]
    machine["command_lines"] = [*command_lines, machine["command_line"]]
    (args.out / "machine.json").write_text(json.dumps(machine, indent=1) + "\n")
    return previous_rows


def run_plan(
    args,
    specs,
    previous_rows,
    build=build_model,
    peak_bytes=spec_peak_bytes,
    preload=CHILD_PRELOAD,
):
    """Measures every configuration in order, each in its own child process,
    or records why it was skipped; rewrites the results after each.

    Arguments
    ---------
    args : argparse.Namespace
        Options of ``add_run_options``.
    specs : list of dict
        Configurations, shorter lengths first within a mixer, scope and mode.
    previous_rows : list of dict
        Rows of earlier runs; those of configurations in ``specs`` are
        measured again.
    build : callable
        ``build(spec)`` -> (model, make_input), a module-level function.
    peak_bytes : callable
        ``peak_bytes(spec, length)``: the a priori memory model.
    preload : sequence of str
        Modules the children's server imports once.

    Returns
    -------
    list of dict
        All rows, earlier ones first.
    """
    started = time.perf_counter()
    planned = {configuration_key(spec) for spec in specs}
    rows = [row for row in previous_rows if configuration_key(row) not in planned]
    context = child_context(preload)
    # A child may run past --max-seconds (noise, a poor prediction) but not forever.
    timeout = max(300.0, 3 * (args.repeats + args.warmup) * args.max_seconds)
    for index, spec in enumerate(specs, start=1):
        history = sorted(
            (
                row
                for row in rows
                if configuration_key(row)[:-1] == configuration_key(spec)[:-1]
                and row["length_frames"] < spec["length"]
            ),
            key=lambda row: row["length_frames"],
        )
        elapsed = time.perf_counter() - started
        reason = (
            f"skipped: --deadline-minutes {args.deadline_minutes:g} reached"
            if elapsed > 60 * args.deadline_minutes
            else skip_reason(args, spec, history, peak_bytes)
        )
        row = (
            empty_row(spec, reason)
            if reason
            else run_config(context, spec, timeout, build)
        )
        rows.append(row)
        write_results(rows, args.out)
        measured = (
            f"{row['time_s_median']:.4f} s, {row['peak_mem_mib']:.0f} MiB peak "
            f"({row['peak_mem_delta_mib']:.0f} above baseline)"
            if row["status"] == "ok"
            else row["status"]
        )
        print(
            f"[{index}/{len(specs)} {time.perf_counter() - started:6.0f} s] "
            f"{spec['scope']:>5} {spec['mixer']:<13} {spec['mode']:<16} "
            f"{spec['length']:>6} fr x{spec['batch']}: {measured}",
            flush=True,
        )
    return rows


def plot_scope(rows, scope, out_dir):
    """Writes time_<scope>.png and memory_<scope>.png: log-log, one line per
    mixer, forward+backward (left) and forward (right) side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    measured = [row for row in rows if row["scope"] == scope and row["status"] == "ok"]
    mixers = list(dict.fromkeys(row["mixer"] for row in measured))
    colours = plt.get_cmap("tab10")
    for quantity, key, unit in (
        ("time", "time_s_median", "s per step"),
        ("memory", "peak_mem_delta_mib", "MiB above baseline"),
    ):
        figure, axes = plt.subplots(
            1, 2, figsize=(12, 4.5), sharey=True, layout="constrained"
        )
        titles = ("forward + backward", "forward (inference)")
        for axis, mode, title in zip(axes, MODES[::-1], titles, strict=True):
            for index, mixer in enumerate(mixers):
                points = sorted(
                    (row["length_frames"], row[key])
                    for row in measured
                    if row["mixer"] == mixer and row["mode"] == mode and row[key] > 0
                )
                if points:
                    axis.plot(
                        *zip(*points, strict=True),
                        "-" if mode == "forward_backward" else "--",
                        marker="o",
                        color=colours(index % 10),
                        label=mixer,
                    )
            axis.set_xscale("log")
            axis.set_yscale("log")
            axis.xaxis.set_minor_formatter(NullFormatter())
            axis.set_xlabel(f"frames ({FRAMES_PER_SECOND} per second of audio)")
            axis.set_title(f"{quantity}, {scope} scope, {title}")
            axis.grid(True, which="both", alpha=0.3)
        axes[0].set_ylabel(f"{quantity} ({unit})")
        handles = {}
        for axis in axes:
            for handle, label in zip(*axis.get_legend_handles_labels(), strict=True):
                handles.setdefault(label, handle)
        if handles:
            figure.legend(handles.values(), handles.keys(), loc="outside right")
        figure.savefig(out_dir / f"{quantity}_{scope}.png", dpi=72)
        plt.close(figure)


# --------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------


def find_row(rows, mixer, scope, length, mode, batch=None):
    """The measured row of a configuration, or None."""
    for row in rows:
        if (
            row["status"] == "ok"
            and (row["mixer"], row["scope"], row["length_frames"], row["mode"])
            == (mixer, scope, length, mode)
            and (batch is None or row["batch"] == batch)
        ):
            return row
    return None


def ratio_target(rows, name, numerator, denominator, key, comparison, threshold):
    """A target comparing one measured quantity of two configurations.

    Arguments
    ---------
    rows : list of dict
        All results.
    name : str
        Description printed in the table.
    numerator, denominator : tuple
        (mixer, scope, length, mode, batch) of each side.
    key : str
        Row field compared (time_s_median or peak_mem_delta_mib).
    comparison : str
        ">=" or "<=": how the ratio must compare with ``threshold``.
    threshold : float
        Target value of numerator / denominator.

    Returns
    -------
    dict
        name, value, target, status (PASS, MISS or "not measured") and the
        two measured values.
    """
    top, bottom = find_row(rows, *numerator), find_row(rows, *denominator)
    result = {"name": name, "target": f"{comparison} {threshold:g}", "value": None}
    if top is None or bottom is None or not bottom[key] or bottom[key] <= 0:
        missing = [side for side, row in (("a", top), ("b", bottom)) if row is None]
        result["status"] = f"not measured ({', '.join(missing) or 'zero'})"
        return result
    value = top[key] / bottom[key]
    passed = value >= threshold if comparison == ">=" else value <= threshold
    threads = {top["threads"], bottom["threads"]}
    if threads != {TARGET_THREADS}:
        result["note"] = f"measured with {sorted(threads)} threads; targets assume 2"
    result.update(
        value=value,
        status="PASS" if passed else "MISS",
        numerator=top[key],
        denominator=bottom[key],
    )
    return result


def compute_targets(rows):
    """The targets table, from this run's measurements only."""
    mixer_at = ("mixer", TARGET_LENGTH, "forward_backward", TARGET_BATCH)
    # The small-encoder ratio compares two lengths at one batch size: the
    # largest measured at both.
    batches = [
        row["batch"]
        for row in rows
        if find_row(rows, "pom", "small", 3000, "forward_backward", row["batch"])
        and find_row(rows, "pom", "small", 12000, "forward_backward", row["batch"])
    ]
    batch = max(batches, default=TARGET_BATCH)
    targets = [
        ratio_target(
            rows,
            "PoM speed-up vs RelPosMHAXL (mixer, 3000 fr, fwd+bwd): t_MHA / t_PoM",
            ("RelPosMHAXL", *mixer_at),
            ("pom", *mixer_at),
            "time_s_median",
            ">=",
            10,
        ),
        ratio_target(
            rows,
            "PoM memory saving vs RelPosMHAXL (mixer, 3000 fr, fwd+bwd): m_MHA / m_PoM",
            ("RelPosMHAXL", *mixer_at),
            ("pom", *mixer_at),
            "peak_mem_delta_mib",
            ">=",
            5,
        ),
        ratio_target(
            rows,
            "PoM (param-matched) / SummaryMixing time (mixer, 3000 fr, fwd+bwd)",
            ("pom_matched", *mixer_at),
            ("summarymixing", *mixer_at),
            "time_s_median",
            "<=",
            1.1,
        ),
        ratio_target(
            rows,
            "PoM / its own 3 Linear layers time (mixer, 3000 fr, fwd+bwd)",
            ("pom", *mixer_at),
            ("pom_linears", *mixer_at),
            "time_s_median",
            "<=",
            1.5,
        ),
        ratio_target(
            rows,
            f"PoM small encoder time 12000 fr / 3000 fr (fwd+bwd, batch {batch})",
            ("pom", "small", 12000, "forward_backward", batch),
            ("pom", "small", 3000, "forward_backward", batch),
            "time_s_median",
            "<=",
            4.4,
        ),
        ratio_target(
            rows,
            "fused / naive PoM peak memory, degree 3 (mixer, 3000 fr, fwd+bwd)",
            ("pom", *mixer_at),
            ("pom_naive", *mixer_at),
            "peak_mem_delta_mib",
            "<=",
            0.6,
        ),
    ]
    hour = find_row(rows, "pom", "paper", 90000, "forward", 1)
    one_hour = {
        "name": "paper-scale PoM encoder inference, 1 h (90000 fr), batch 1: "
        "raw peak GiB",
        "target": "<= 8",
        "value": None,
        "status": "not measured",
    }
    if hour is not None:
        value = hour["peak_mem_mib"] / 1024
        if hour["threads"] != TARGET_THREADS:
            one_hour["note"] = f"measured with {hour['threads']} threads"
        one_hour.update(
            value=value,
            status="PASS" if value <= 8 else "MISS",
            delta_gib=hour["peak_mem_delta_mib"] / 1024,
        )
    targets.insert(5, one_hour)
    matched = find_row(rows, "pom_matched", *mixer_at)
    summary = find_row(rows, "summarymixing", *mixer_at)
    for target in targets:
        if "param-matched" in target["name"] and matched and summary:
            target["params"] = {
                "pom_matched": matched["params"],
                "summarymixing": summary["params"],
                "pom_matched_options": matched["mixer_options"],
            }
    return targets


def format_targets(targets):
    """The targets table as printed."""
    lines = [f"{'target':<78} {'value':>9} {'goal':>7}  status"]
    for target in targets:
        value = "-" if target["value"] is None else f"{target['value']:.3g}"
        lines.append(
            f"{target['name']:<78} {value:>9} {target['target']:>7}  {target['status']}"
        )
        if "params" in target:
            lines.append(f"    params: {json.dumps(target['params'])}")
        if "note" in target:
            lines.append(f"    note: {target['note']}")
    return "\n".join(lines)


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def add_run_options(parser):
    """Adds the options of a run (output, modes, repeats, threads, device,
    budgets, --append) to ``parser``; ``apply_run_defaults`` completes them."""
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--repeats", type=int, help="timed runs (default 3, quick 1)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument(
        "--autocast",
        choices=("bfloat16", "float16"),
        help="run the model under torch.autocast in this dtype (default: none)",
    )
    parser.add_argument(
        "--mem-budget-gib",
        type=float,
        help="skip configurations predicted above this (default 12 on CPU, "
        "none on CUDA)",
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=60.0,
        help="skip lengths whose step is predicted longer than this",
    )
    parser.add_argument(
        "--deadline-minutes",
        type=float,
        default=math.inf,
        help="configurations not started within this many minutes are skipped",
    )
    parser.add_argument(
        "--append",
        action="store_true",
        help="keep the rows already in --out (re-measuring planned configurations);"
        " shorter lengths measured earlier calibrate the predictions",
    )


def apply_run_defaults(args):
    """The defaults of ``add_run_options`` that depend on --quick and --device."""
    args.repeats = args.repeats or (1 if args.quick else 3)
    if args.mem_budget_gib is None:
        args.mem_budget_gib = 12.0 if args.device == "cpu" else math.inf


def parse_args(argv=None):
    """Command-line options."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_run_options(parser)
    parser.add_argument("--mixers", nargs="+", choices=list(MIXER_SPECS))
    parser.add_argument("--lengths", nargs="+", type=int, help="frames (25 per s)")
    parser.add_argument("--scopes", nargs="+", choices=SCOPES)
    parser.add_argument("--batch-mixer", type=int, default=8)
    parser.add_argument(
        "--batch-small", type=int, default=8, help="batch of the small encoder"
    )
    parser.add_argument(
        "--batch-paper", type=int, default=1, help="batch of the paper encoder"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="lengths 25 250 750, scopes mixer and small, 1 repeat (< 5 min)",
    )
    args = parser.parse_args(argv)
    apply_run_defaults(args)
    args.mixers = args.mixers or list(MIXER_SPECS)
    default_lengths = QUICK_LENGTHS if args.quick else DEFAULT_LENGTHS
    args.lengths = args.lengths or list(default_lengths)
    args.scopes = args.scopes or list(QUICK_SCOPES if args.quick else SCOPES)
    args.batch_encoder = {"small": args.batch_small, "paper": args.batch_paper}
    return args


def main(argv=None):
    """Runs the benchmark."""
    args = parse_args(argv)
    started = time.perf_counter()
    previous_rows = begin_run(args, SCALES)
    matched_options, matched_params, summary_params = matched_pom_options()
    mismatch = matched_params / summary_params - 1
    print(
        f"pom_matched: {matched_options}, {matched_params} params vs "
        f"SummaryMixing {summary_params} ({mismatch:+.1%}"
        f"{'' if abs(mismatch) <= MATCHING_TOLERANCE else ', OUTSIDE 20%'})",
        flush=True,
    )
    rows = run_plan(args, plan(args, matched_options), previous_rows)
    for scope in dict.fromkeys(row["scope"] for row in rows):
        plot_scope(rows, scope, args.out)
    targets = compute_targets(rows)
    (args.out / "targets.json").write_text(json.dumps(targets, indent=1) + "\n")
    print("\nTargets (ratios from this run):")
    print(format_targets(targets))
    print(f"\nTotal wall time: {time.perf_counter() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
