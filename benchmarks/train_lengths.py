"""Time and peak memory of a BEST-RQ training step at the lengths users train on.

The protocol of Whetten et al. 2024 ("Linear-complexity self-supervised
learning for speech processing", arXiv 2409.02596, ``memory_test_v2.py``):
filterbanks -> CNN front-end -> Conformer encoder -> linear head of the BEST-RQ
codebook size, batch 6, utterances of 10, 20, 40 and 80 s, inference
(``forward``, no grad) and training step (``forward_backward``). The modules
are the recipe's own: ``CNN``, ``wrapper`` (``MixerTransformerASR``'s encoder)
and ``linear`` of
``recipes/LibriSpeech/self-supervised-learning/BEST-RQ/hparams/bestrq_pom.yaml``,
loaded with HyperPyYAML and the mixer chosen by name, as a user runs them.

What differs from a training step of the recipe: the input is random normal
filterbanks (80 mels, 100 frames per second; the recipe's sentence-normalised
features have the same scale) rather than waveforms, so the Fbank and the
normalisation are not timed; there is no masking, no Dynamic Chunk Training
(full context, as Whetten et al.) and no optimiser; the loss is the sum of all
logits (the recipe's cross-entropy reads the same ``(batch, frames, codebook)``
logits at the masked frames).

Mixers: PoM formulation A at degree 3 and expansion 2 (the recipes' default,
``pom``), formulation C at expansion 2 (``pom_c``), formulation A at degree 2
and expansion 1 (``pom_k2e1``, attention's size), SummaryMixing, HyperMixing,
RelPosMHAXL and RoPEMHA.

The machinery is ``mixer_scaling.py``'s: one forkserver child per
configuration, peak memory as the child's VmHWM on CPU (the delta above the
resident set after model build, and raw) or ``torch.cuda.max_memory_allocated``
on CUDA, memory and time predicted before each child starts (configurations
over ``--mem-budget-gib`` or ``--max-seconds`` are recorded as skipped, with
the reason), median of ``--repeats`` timed steps after ``--warmup`` untimed
ones.

Outputs in ``--out``: ``results.csv`` and ``results.json`` (one row per mixer,
length and mode; ``length_frames`` counts encoder frames, 25 per second,
``params`` the whole model), ``ratios.csv`` and ``ratios.json`` (every row
against RelPosMHAXL and SummaryMixing at the same length and mode: time,
memory delta and raw memory, mixer / reference), ``machine.json``,
``time_<scope>.png`` and ``memory_<scope>.png``.

Usage
-----
    python benchmarks/train_lengths.py --quick --out /tmp/train-lengths
    bash benchmarks/train_lengths_cpu.sh  # the README's table, 2 CPU cores
    python benchmarks/train_lengths.py --device cuda --autocast bfloat16 \\
        --out benchmarks/results/<card>/train-lengths
"""

import argparse
import csv
import json
import os
import time

import mixer_scaling as scaling

RECIPE = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "recipes/LibriSpeech/self-supervised-learning/BEST-RQ/hparams/bestrq_pom.yaml",
)
DEFAULT_SECONDS = (10, 20, 40, 80)
QUICK_SECONDS = (1, 2)
DEFAULT_BATCH = 6
# Benchmark name -> (mixer built, options of that mixer).
TRAINING_MIXERS = {
    "pom": scaling.MIXER_SPECS["pom"],
    "pom_c": scaling.MIXER_SPECS["pom_c"],
    "pom_k2e1": ("pom", {"formulation": "A", "degree": 2, "expand": 1}),
    "summarymixing": scaling.MIXER_SPECS["summarymixing"],
    "hypermixing": scaling.MIXER_SPECS["hypermixing"],
    "RelPosMHAXL": scaling.MIXER_SPECS["RelPosMHAXL"],
    "RoPEMHA": scaling.MIXER_SPECS["RoPEMHA"],
}
REFERENCES = ("RelPosMHAXL", "summarymixing")
# Scope -> model sizes, given to the recipe as overrides. train-paper is the
# recipe's own values; train-tiny is --quick's (the tests').
SCALES = {
    "train-paper": {**scaling.SCALES["paper"], "cb_vocab": 8192},
    "train-tiny": {
        "d_model": 48,
        "layers": 2,
        "nhead": 4,
        "d_ffn": 96,
        "kernel": 15,
        "cb_vocab": 64,
    },
}
# The recipe's names of the sizes in SCALES.
RECIPE_KEYS = {
    "d_model": "d_model",
    "layers": "num_encoder_layers",
    "nhead": "nhead",
    "d_ffn": "d_ffn",
    "kernel": "kernel_size",
    "cb_vocab": "cb_vocab",
}
# Ratios written, mixer / reference: name -> row field.
RATIO_FIELDS = {
    "time": "time_s_median",
    "memory": "peak_mem_delta_mib",
    "memory_raw": "peak_mem_mib",
}
# Fields that a row and its reference share.
CONFIGURATION_FIELDS = ("scope", "length_frames", "audio_seconds", "batch", "mode")
RATIO_COLUMNS = (
    "mixer",
    "reference",
    *CONFIGURATION_FIELDS,
    *(f"{name}_ratio" for name in RATIO_FIELDS),
)
CHILD_PRELOAD = (
    *scaling.CHILD_PRELOAD,
    "hyperpyyaml",
    "speechbrain.lobes.models.convolution",
    "speechbrain.lobes.features",
    "speechbrain.nnet.quantisers",
)


def build_training_model(spec):
    """The recipe's CNN, encoder and codebook head, and a filterbank input.

    Arguments
    ---------
    spec : dict
        Child specification (mixer, scope, batch, ...).

    Returns
    -------
    model : torch.nn.Module
        Filterbanks (batch, frames, n_mels) -> [logits (batch, frames / 4,
        codebook size)].
    make_input : callable
        ``make_input(length, device)``: random filterbanks for ``length``
        encoder frames.
    """
    import tempfile

    import torch
    from hyperpyyaml import load_hyperpyyaml

    kind, options = TRAINING_MIXERS[spec["mixer"]]
    scale = SCALES[spec["scope"]]
    with tempfile.TemporaryDirectory() as folder, open(RECIPE) as stream:
        overrides = {
            # The checkpointer and loggers are built, never written to.
            "data_folder": folder,
            "output_folder": folder,
            "mixer": kind,
            "mixer_options": {kind: options},
            **{RECIPE_KEYS[name]: value for name, value in scale.items()},
        }
        hparams = load_hyperpyyaml(stream, overrides)

    class TrainingModel(torch.nn.Module):
        """The recipe's modules in the order of its ``compute_forward``."""

        def __init__(self, cnn, wrapper, linear):
            super().__init__()
            self.cnn = cnn
            self.wrapper = wrapper
            self.linear = linear

        def forward(self, feats):
            wav_lens = torch.ones(feats.shape[0], device=feats.device)
            return [self.linear(self.wrapper(self.cnn(feats), wav_lens))]

    model = TrainingModel(hparams["CNN"], hparams["wrapper"], hparams["linear"])
    # The recipe pads filterbanks to a multiple of the CNN's time reduction.
    frames_per_encoder_frame = hparams["pad_to_divisible_by"]

    def make_input(length, device):
        return torch.randn(
            spec["batch"],
            frames_per_encoder_frame * length,
            hparams["n_mels"],
            device=device,
        )

    return model, make_input


def training_peak_bytes(spec, length):
    """A priori peak memory of a configuration above the post-build baseline.

    ``mixer_scaling.analytic_peak_bytes`` for the encoder, plus the front-end
    and the head. Shorter lengths measured in the run calibrate it.

    Arguments
    ---------
    spec : dict
        The configuration.
    length : int
        Encoder frames.

    Returns
    -------
    float
        Bytes.

    Example
    -------
    >>> spec = {"mixer": "pom", "scope": "train-paper", "batch": 6,
    ...         "mode": "forward_backward", "mixer_options": TRAINING_MIXERS["pom"][1]}
    >>> training_peak_bytes(spec, 2000) < training_peak_bytes(
    ...     {**spec, "mixer": "RelPosMHAXL", "mixer_options": {}}, 2000)
    True
    """
    kind = TRAINING_MIXERS[spec["mixer"]][0]
    scale = SCALES[spec["scope"]]
    batch, mode = spec["batch"], spec["mode"]
    encoder = scaling.analytic_peak_bytes(
        kind, spec["mixer_options"], scale, length, batch, mode, encoder=True
    )
    # Per encoder frame: the first CNN block's output (2 filterbank frames x
    # 40 bins x 128 channels) after convolution, norm and activation; the
    # logits and their gradient.
    outside = 3 * 2 * 40 * 128 + 2 * scale["cb_vocab"]
    return encoder + 4 * batch * length * outside


def plan(args):
    """All configurations: for each mixer and mode, lengths ascending (so
    that shorter lengths calibrate the predictions of longer ones)."""
    return [
        scaling.child_spec(
            args,
            mixer,
            args.scope,
            round(seconds * scaling.FRAMES_PER_SECOND),
            mode,
            TRAINING_MIXERS[mixer][1],
            args.batch,
        )
        for mixer in args.mixers
        for mode in args.modes
        for seconds in sorted(args.seconds)
    ]


def compute_ratios(rows):
    """Every measured row against each reference at the same configuration.

    Arguments
    ---------
    rows : list of dict
        Result rows.

    Returns
    -------
    list of dict
        One per (row, reference) with both measured: ``RATIO_COLUMNS``, each
        ratio mixer / reference (None where the reference's value is not
        positive).

    Example
    -------
    >>> row = {"status": "ok", "scope": "s", "length_frames": 250, "mode": "m",
    ...        "batch": 6, "audio_seconds": 10.0, "time_s_median": 2.0,
    ...        "peak_mem_delta_mib": 100.0, "peak_mem_mib": 600.0}
    >>> rows = [{**row, "mixer": "pom"}, {**row, "mixer": "RelPosMHAXL",
    ...         "time_s_median": 4.0, "peak_mem_delta_mib": 300.0}]
    >>> ratio = compute_ratios(rows)[0]
    >>> ratio["reference"], ratio["time_ratio"], ratio["memory_ratio"]
    ('RelPosMHAXL', 0.5, 0.3333333333333333)
    """
    ratios = []
    for row in rows:
        if row["status"] != "ok":
            continue
        for reference in REFERENCES:
            base = scaling.find_row(
                rows,
                reference,
                row["scope"],
                row["length_frames"],
                row["mode"],
                row["batch"],
            )
            if base is None:
                continue
            ratio = {"mixer": row["mixer"], "reference": reference}
            ratio.update((field, row[field]) for field in CONFIGURATION_FIELDS)
            for name, field in RATIO_FIELDS.items():
                ratio[f"{name}_ratio"] = (
                    row[field] / base[field] if base[field] > 0 else None
                )
            ratios.append(ratio)
    return ratios


def format_ratio(value):
    """A ratio as printed ("-" when it could not be computed)."""
    return "-" if value is None else f"{value:.2f}"


def format_ratios(ratios, rows):
    """The ratios as printed: per reference and mode, a line per mixer with
    its parameters, then time and memory ratios at each length."""
    params = {row["mixer"]: row["params"] for row in rows if row["status"] == "ok"}
    lines = []
    for reference in REFERENCES:
        for mode in scaling.MODES[::-1]:
            chosen = {
                (ratio["mixer"], ratio["audio_seconds"]): ratio
                for ratio in ratios
                if ratio["reference"] == reference and ratio["mode"] == mode
            }
            if not chosen:
                continue
            seconds = sorted({length for _, length in chosen})
            lines.append(
                f"\nmixer / {reference}, {mode} (t: time, m: peak memory above "
                "baseline; below 1: faster, smaller)"
            )
            lines.append(
                f"{'mixer':<14}{'params':>8}"
                + "".join(f"{f'{length:g} s':>16}" for length in seconds)
            )
            for mixer in dict.fromkeys(mixer for mixer, _ in chosen):
                cells = [
                    f"t {format_ratio(ratio['time_ratio'])} "
                    f"m {format_ratio(ratio['memory_ratio'])}"
                    if (ratio := chosen.get((mixer, length)))
                    else "-"
                    for length in seconds
                ]
                lines.append(
                    f"{mixer:<14}{params[mixer] / 1e6:>7.1f}M"
                    + "".join(f"{cell:>16}" for cell in cells)
                )
    return "\n".join(lines)


def write_ratios(ratios, out_dir):
    """Writes ratios.json and ratios.csv."""
    (out_dir / "ratios.json").write_text(json.dumps(ratios, indent=1) + "\n")
    with open(out_dir / "ratios.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=RATIO_COLUMNS)
        writer.writeheader()
        writer.writerows(ratios)


def parse_args(argv=None):
    """Command-line options."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    scaling.add_run_options(parser)
    parser.add_argument("--mixers", nargs="+", choices=list(TRAINING_MIXERS))
    parser.add_argument("--seconds", nargs="+", type=float, help="utterance lengths")
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH)
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a tiny model at {QUICK_SECONDS} s, 1 repeat (the tests)",
    )
    args = parser.parse_args(argv)
    scaling.apply_run_defaults(args)
    args.mixers = args.mixers or list(TRAINING_MIXERS)
    default_seconds = QUICK_SECONDS if args.quick else DEFAULT_SECONDS
    args.seconds = args.seconds or list(default_seconds)
    args.scope = "train-tiny" if args.quick else "train-paper"
    return args


def main(argv=None):
    """Runs the benchmark."""
    args = parse_args(argv)
    started = time.perf_counter()
    previous_rows = scaling.begin_run(args, {args.scope: SCALES[args.scope]})
    rows = scaling.run_plan(
        args,
        plan(args),
        previous_rows,
        build=build_training_model,
        peak_bytes=training_peak_bytes,
        preload=CHILD_PRELOAD,
    )
    for scope in dict.fromkeys(row["scope"] for row in rows):
        scaling.plot_scope(rows, scope, args.out)
    ratios = compute_ratios(rows)
    write_ratios(ratios, args.out)
    print(format_ratios(ratios, rows))
    print(f"\nTotal wall time: {time.perf_counter() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
