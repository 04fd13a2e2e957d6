"""Compare pretraining objectives at small scale: pretrain, fine-tune on sentiment, report.

    python experiments/objectives/run.py                 # the main sweep -> experiments/objectives/REPORT.md
    python experiments/objectives/run.py --sweep rates   # corruption rate (10/15/25/50%) and span length (2/3/5/10)
    python experiments/objectives/run.py --smoke --out /tmp/objectives_smoke   # a few steps, CI

Every cell is an ordinary ``t5x_lite`` command (printed as it starts, and kept
in the cell's ``cell.json``), run in this process through ``t5x_lite.cli.main``:

1. pretrain: ``t5x_lite train --gin_file=experiments/objectives/<objective>.gin``;
2. fine-tune, per seed: ``t5x_lite train --gin_file=experiments/objectives/finetune.gin``
   (``finetune_lm.gin`` for the decoder-only LM, causal as in pretraining) from
   that checkpoint, or from scratch for the no-pretraining controls (``none``;
   ``none_lm`` for the decoder-only model);
3. evaluate: ``t5x_lite eval`` on the sentiment test split (accuracy).

A cell whose ``cell.json`` exists is skipped, so an interrupted sweep picks up
where it stopped (an interrupted training cell resumes from its checkpoint).
The report (a table, the paper's numbers beside ours, a plot) is rewritten from
whatever cells have finished.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
FT_LENGTHS = "{'inputs': 64, 'targets': 4}"

# The T5 paper's numbers (Raffel et al. 2020, tables as named; T5-base size, 2^19 steps x 128 x 512 on C4): GLUE
# and SuperGLUE averages, as ../shared/REFERENCES.md lists them. The lm cell's figure is the exception: Table 2's
# decoder-only "Language model" row with the LM objective, 73.78 GLUE, is recalled from the paper and not in
# REFERENCES.md (which has that row with the denoising objective, 74.70), so the report marks it unchecked.
PAPER = {
    "none": ("No pretraining (Table 5)", 66.22, 53.04),
    "none_lm": ("No pretraining, decoder-only", None, None),
    "span_3_15_u_u": ("Span corruption, mean span 3 (Table 7)", None, 72.53),
    "iid_15_u_u": ("Replace corrupted spans (Table 5)", 83.28, 71.36),
    "iid_15_r10s90_f": ("BERT-style (Table 4)", 82.96, 69.85),
    "iid_15_m_f": ("MASS-style (Table 5)", 82.32, 69.28),
    "iid_15_d_d": ("Drop corrupted tokens (Table 5)", 84.44, 68.67),
    "prefix_lm": ("Prefix LM (Table 4)", 80.69, 65.27),
    "all_permute": ("Deshuffling (Table 4)", 73.17, 58.47),
    "lm": ("Decoder-only causal LM (Table 2)", "73.78 (recalled, unchecked)", None),
    "ul2": ("UL2 mixture of denoisers (not in the T5 paper)", None, None),
    "iid_10_u_u": ("Corruption rate 10% (Table 6)", 82.82, None),
    "iid_25_u_u": ("Corruption rate 25% (Table 6)", 83.00, None),
    "iid_50_u_u": ("Corruption rate 50% (Table 6)", 81.27, None),
    "span_2_15_u_u": ("Span length 2 (Table 7)", None, 72.20),
    "span_5_15_u_u": ("Span length 5 (Table 7)", None, 72.23),
    "span_10_15_u_u": ("Span length 10 (Table 7)", None, 70.44),
}
SWEEPS = {
    "main": ["none", "span_3_15_u_u", "iid_15_u_u", "iid_15_r10s90_f", "iid_15_m_f", "iid_15_d_d", "prefix_lm",
             "all_permute", "none_lm", "lm", "ul2"],
    "rates": ["none", "iid_10_u_u", "iid_15_u_u", "iid_25_u_u", "iid_50_u_u", "span_2_15_u_u", "span_3_15_u_u",
              "span_5_15_u_u", "span_10_15_u_u"],
    "smoke": ["none", "span_3_15_u_u"],
}
SMOKE_OVERRIDES = {
    "pretrain": ["--gin.TRAIN_STEPS=4", "--gin.BATCH_SIZE=8", "--gin.train.eval_every=2",
                 "--gin.train.eval_max_examples=16", "--gin.train.log_every=2", "--gin.train.checkpoint_every=4"],
    "finetune": ["--gin.TRAIN_STEPS=4", "--gin.BATCH_SIZE=8", "--gin.train.log_every=2",
                 "--gin.train.checkpoint_every=4"],
    "eval": ["--gin.evaluate_checkpoint.max_examples=32"],
}


CONTROLS = ("none", "none_lm")  # fine-tuned from scratch: no pretraining cell


def finetune_gin(objective: str) -> str:
    decoder_only = objective in ("lm", "none_lm")
    return f"experiments/objectives/{'finetune_lm' if decoder_only else 'finetune'}.gin"


def pretrain_gin(objective: str) -> str:
    # The rate sweep's objectives reuse the span-corruption cell with another objective file.
    own = ROOT / "gin_configs" / "experiments" / "objectives" / f"{objective}.gin"
    return f"experiments/objectives/{objective}.gin" if own.exists() else ""


def run_cli(argv: list[str]) -> None:
    from t5x_lite import cli

    print("  $ t5x_lite " + " ".join(_quote(a) for a in argv), flush=True)
    rc = cli.main(argv)
    if rc:
        raise SystemExit(f"cell failed (exit {rc}): t5x_lite {' '.join(argv)}")


def _quote(arg: str) -> str:
    return f'"{arg}"' if any(c in arg for c in " {}'") else arg


def _metrics(model_dir: Path) -> list[dict]:
    """Every line of the run's metrics.jsonl (training and eval lines share step numbers)."""
    path = model_dir / "train" / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def pretrain_cell(objective: str, out: Path, smoke: bool) -> dict:
    cell_dir = out / "pretrain" / objective
    done = cell_dir / "cell.json"
    if done.exists():
        return json.loads(done.read_text())
    gin_file = pretrain_gin(objective)
    if gin_file:
        argv = ["train", f"--gin_file={gin_file}"]
    else:  # rate / span-length sweep: the span-corruption cell with another objective file
        argv = ["train", "--gin_file=experiments/objectives/span_3_15_u_u.gin", f"--gin_file=objectives/{objective}.gin"]
    argv += [f"--gin.MODEL_DIR={cell_dir}", *(SMOKE_OVERRIDES["pretrain"] if smoke else [])]
    t = time.time()
    run_cli(argv)
    wall = time.time() - t
    rows = _metrics(cell_dir)
    train_rows = [r for r in rows if "train/loss" in r]
    eval_rows = [{"step": r["step"], "loss": r["eval/loss"]} for r in rows if "eval/loss" in r]
    # A window of only a run's first step (it waits for the compile) logs no rate.
    tps = [r["train/tokens_per_s"] for r in train_rows[1:] if r.get("train/tokens_per_s") is not None]
    result = {
        "objective": objective, "command": "t5x_lite " + " ".join(_quote(a) for a in argv), "wall_s": round(wall, 1),
        "final_train_loss": train_rows[-1]["train/loss"] if train_rows else None,
        "eval_loss": eval_rows, "tokens_per_s_median": statistics.median(tps) if tps else None,
        "steps": train_rows[-1]["step"] if train_rows else None,
    }
    done.write_text(json.dumps(result, indent=1) + "\n")
    return result


def finetune_cell(objective: str, seed: int, out: Path, smoke: bool) -> dict:
    cell_dir = out / "finetune" / objective / f"seed_{seed}"
    done = cell_dir / "cell.json"
    if done.exists():
        return json.loads(done.read_text())
    init = "None" if objective in CONTROLS else str(out / "pretrain" / objective)
    argv = ["train", f"--gin_file={finetune_gin(objective)}", f"--gin.MODEL_DIR={cell_dir}",
            f"--gin.INITIAL_CHECKPOINT={init}", f"--gin.train.seed={seed}",
            *(SMOKE_OVERRIDES["finetune"] if smoke else [])]
    t = time.time()
    run_cli(argv)
    wall = time.time() - t
    eval_argv = ["eval", "--gin_file=runs/eval.gin", f"--gin.CHECKPOINT={cell_dir}", "--gin.TASK=bundled_sentiment",
                 f"--gin.TASK_FEATURE_LENGTHS={FT_LENGTHS}", "--gin.evaluate_checkpoint.split=test",
                 "--gin.evaluation.DecodeOptions.max_decode_length=4", "--gin.evaluate_checkpoint.overwrite=True",
                 *(SMOKE_OVERRIDES["eval"] if smoke else [])]
    run_cli(eval_argv)
    newest = max((cell_dir / "eval").glob("metrics-bundled_sentiment-test-step*.json"), key=lambda p: p.stat().st_mtime)
    metrics = json.loads(newest.read_text())  # named after the step eval read
    result = {"objective": objective, "seed": seed, "wall_s": round(wall, 1), "test": metrics,
              "commands": ["t5x_lite " + " ".join(_quote(a) for a in a_) for a_ in (argv, eval_argv)]}
    done.write_text(json.dumps(result, indent=1) + "\n")
    return result


def collect(out: Path, objectives: list[str], seeds: list[int]) -> dict:
    table = {}
    for o in objectives:
        pre = out / "pretrain" / o / "cell.json"
        fts = [out / "finetune" / o / f"seed_{s}" / "cell.json" for s in seeds]
        table[o] = {
            "pretrain": json.loads(pre.read_text()) if pre.exists() else None,
            "finetune": [json.loads(p.read_text()) for p in fts if p.exists()],
        }
    return table


def _acc(cell: dict) -> float:
    return cell["test"]["accuracy"]  # t5x_lite's metrics are on T5's 0..100 scale


def write_report(out: Path, report: Path, objectives: list[str], seeds: list[int], args, wall_s: float) -> None:
    table = collect(out, objectives, seeds)
    majority = _majority_rate()
    plot_path = report.with_suffix(".png")
    _plot(table, plot_path, majority)
    cmd = "python experiments/objectives/run.py " + " ".join(sys.argv[1:])
    lines = [
        f"# Pretraining objectives at small scale ({args.sweep} sweep)", "",
        f"Generated by `{cmd.strip()}` on {time.strftime('%Y-%m-%d')}; machine: {_machine()}. "
        f"The cells' training time adds up to {_cells_minutes(table):.0f} min (pretraining and fine-tuning, compile "
        f"included; evaluation and start-up not counted); this invocation ran for {wall_s / 60:.1f} min (cells "
        "finished earlier are not re-run).", "",
        "Setup: " + _setup_text(args), "",
        f"Test accuracy on the bundled Rotten Tomatoes test split ({_num_test(table)} snippets evaluated; always "
        f"answering the majority class scores {majority:.2f}%), mean and sample std over fine-tuning seeds {seeds}. Pretraining cost is "
        "this machine's wall time for the pretraining cell (compile included) and its median training tokens/s "
        "(non-padding input + target tokens). The paper's columns are T5-base at 2^19 steps on C4, GLUE and "
        "SuperGLUE averages, for orientation only.", "",
        "| objective | test accuracy (%) | seeds | per seed | pretrain wall (min) | pretrain tokens/s | "
        "final pretrain loss | paper GLUE | paper SuperGLUE |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for o in objectives:
        cell = table[o]
        accs = [_acc(c) for c in cell["finetune"]]
        mean = f"{statistics.mean(accs):.2f} ± {statistics.stdev(accs):.2f}" if len(accs) > 1 else (
            f"{accs[0]:.2f}" if accs else "not run")
        pre = cell["pretrain"] or {}
        label, glue, sglue = PAPER.get(o, (o, None, None))
        cost = (f"{pre['wall_s'] / 60:.1f} | {pre['tokens_per_s_median'] or 0:,.0f} | {pre['final_train_loss']:.3f}"
                if pre else "- | - | -")
        lines.append(f"| {label} (`{o}`) | {mean} | {len(accs)} | {', '.join(f'{a:.1f}' for a in accs)} | {cost} | ")
        lines[-1] += f"{glue if glue is not None else '-'} | {sglue if sglue is not None else '-'} |"
    lines += ["", f"![pretraining validation loss and test accuracy]({plot_path.name})", "",
              "Commands of every cell are in `<out>/pretrain/<objective>/cell.json` and "
              "`<out>/finetune/<objective>/seed_<n>/cell.json`; for example:", ""]
    example = next((c for o in objectives for c in table[o]["finetune"]), None)
    first_pre = next((table[o]["pretrain"] for o in objectives if table[o]["pretrain"]), None)
    if first_pre:
        lines.append(f"    {first_pre['command']}")
    if example:
        lines += [f"    {c}" for c in example["commands"]]
    text = "\n".join(lines) + "\n"
    marker = "<!-- findings -->"
    old = report.read_text() if report.exists() else ""
    if marker in old:  # keep the hand-written analysis below the marker
        text += "\n" + old[old.index(marker):]
    report.write_text(text)
    (out / "summary.json").write_text(json.dumps(table, indent=1) + "\n")
    print(f"wrote {report} and {plot_path}", flush=True)


def _setup_text(args) -> str:
    if args.smoke:
        return "smoke mode: 4 pretraining and 4 fine-tuning steps at batch 8 (checks the plumbing, measures nothing)."
    return ("the tiny T5 1.1 (d_model 128, 2 + 2 layers, 4 heads, gated GELU, 8k vocabulary; the decoder-only "
            "cells have 4 layers, causal in pretraining and fine-tuning, reading \"sentiment: ...\" ++ the label "
            "with the loss on the label) pretrained on the bundled corpus for the same steps and batch in every cell "
            "(`gin_configs/experiments/objectives/pretrain.gin`), then fine-tuned on sentiment with the same "
            "recipe for every cell (`finetune.gin`, `finetune_lm.gin`).")


def _cells_minutes(table: dict) -> float:
    seconds = sum((cell["pretrain"] or {}).get("wall_s", 0.0) + sum(c["wall_s"] for c in cell["finetune"])
                  for cell in table.values())
    return seconds / 60.0


def _num_test(table: dict) -> str:
    counts = {int(c["test"]["num_examples"]) for cell in table.values() for c in cell["finetune"]}
    return ", ".join(f"{n:,}" for n in sorted(counts)) or "no"


def _majority_rate() -> float:
    from t5x_lite.data.sources import bundled_sentiment

    labels = [ex["label"] for ex in bundled_sentiment("test")]
    return 100.0 * max(labels.count("positive"), labels.count("negative")) / len(labels)


def _machine() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or "unknown CPU"
    return f"{cpu}, {os.cpu_count()} cores, no GPU, Python {platform.python_version()}"


def _plot(table: dict, path: Path, majority: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8))
    for o, cell in table.items():
        pre = cell["pretrain"]
        if pre and pre["eval_loss"]:
            ax1.plot([r["step"] for r in pre["eval_loss"]], [r["loss"] for r in pre["eval_loss"]], marker="o", label=o)
    ax1.set_xlabel("pretraining step")
    ax1.set_ylabel("validation loss (own objective)")
    ax1.set_title("Pretraining (losses of different objectives are not comparable)")
    ax1.legend(fontsize=7)
    names = [o for o, c in table.items() if c["finetune"]]
    means = [statistics.mean(_acc(c) for c in table[o]["finetune"]) for o in names]
    stds = [statistics.stdev([_acc(c) for c in table[o]["finetune"]]) if len(table[o]["finetune"]) > 1 else 0.0
            for o in names]
    ax2.bar(range(len(names)), means, yerr=stds, capsize=3, color="tab:blue")
    for i, o in enumerate(names):
        ax2.scatter([i] * len(table[o]["finetune"]), [_acc(c) for c in table[o]["finetune"]], color="black", s=8,
                    zorder=3)
    ax2.axhline(majority, color="tab:red", linestyle="--", label=f"majority class {majority:.1f}%")
    ax2.set_xticks(range(len(names)))
    ax2.set_xticklabels(names, rotation=40, ha="right", fontsize=8)
    lo = min([majority] + [m - s for m, s in zip(means, stds)]) - 3
    hi = max([majority] + [m + s for m, s in zip(means, stds)]) + 3
    ax2.set_ylim(lo, hi)
    ax2.set_ylabel("sentiment test accuracy (%)")
    ax2.set_title("Fine-tuned (mean ± std over seeds, dots: seeds)")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sweep", choices=sorted(SWEEPS), default=None, help="default: main (smoke with --smoke)")
    p.add_argument("--objectives", default="", help="comma-separated subset of the sweep's objectives")
    p.add_argument("--seeds", type=int, default=None, help="fine-tuning seeds per objective (default: 3; 1 with "
                                                           "--smoke)")
    p.add_argument("--out", default=str(HERE / "runs"), help="cell directories (checkpoints, logs, cell.json)")
    p.add_argument("--report", default="", help="report path (default: REPORT.md in --out for --smoke, "
                                                 "else experiments/objectives/REPORT[_<sweep>].md)")
    p.add_argument("--smoke", action="store_true", help="a few steps per cell; by default one seed and two "
                                                        "objectives (CI)")
    args = p.parse_args(argv)
    if args.smoke and args.out == str(HERE / "runs"):
        raise SystemExit("--smoke needs --out (a temporary folder): it never writes into the committed results")
    if args.sweep is None:
        args.sweep = "smoke" if args.smoke else "main"
    if args.seeds is None:
        args.seeds = 1 if args.smoke else 3
    objectives = [o for o in args.objectives.split(",") if o] or SWEEPS[args.sweep]
    seeds = list(range(args.seeds))
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.report:
        report = Path(args.report)
    elif args.smoke:
        report = out / "REPORT.md"
    else:
        report = HERE / ("REPORT.md" if args.sweep == "main" else f"REPORT_{args.sweep}.md")
    os.chdir(ROOT)  # gin files are found relative to the checkout as well as the package
    cells = [("pretrain", o, None) for o in objectives if o not in CONTROLS]
    cells += [("finetune", o, s) for s in seeds for o in objectives]
    t0 = time.time()
    for i, (kind, o, s) in enumerate(cells, 1):
        print(f"[{i}/{len(cells)}] {kind} {o}" + (f" seed {s}" if s is not None else "")
              + f"  ({(time.time() - t0) / 60:.1f} min elapsed)", flush=True)
        if kind == "pretrain":
            r = pretrain_cell(o, out, args.smoke)
            print(f"  done: final loss {r['final_train_loss']}, {r['wall_s']:.0f} s", flush=True)
        else:
            r = finetune_cell(o, s, out, args.smoke)
            print(f"  done: test accuracy {_acc(r):.2f}%", flush=True)
            write_report(out, report, objectives, seeds, args, time.time() - t0)
    write_report(out, report, objectives, seeds, args, time.time() - t0)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
