"""The GPU checks of the training and decoding issues, in one process (a lent GPU's time is short).

    # on the GPU machine, in a ~490 s device call: one attention arm, then HF, no decode
    PYTHONUNBUFFERED=1 python benchmarks/gpu_check.py --out $OUT --attention xla --skip decode --deadline-s 470
    python benchmarks/gpu_check.py --smoke --out /tmp/gpu_check         # the same code path on CPU, tiny sizes

Without ``--attention xla`` the default also compiles the ``cudnn`` arm (minutes
more on a cold machine); without ``--deadline-s`` nothing stops a section from
starting when the budget is nearly spent.

1. Train step, T5 v1.1 small, batch 128, inputs 512 / targets 114, bfloat16
   compute with float32 params, Adafactor: t5x_lite's ``Trainer`` for each
   attention implementation's first arm (the number still missing), then Hugging
   Face eager (autocast bf16), then the other attention arms. After the
   first arm's timed steps, a short profiler trace sums the GPU's time per
   kernel and per part of the model (``--profile-steps``). Tokens/s
   (batch x 626 tokens per step) and MFU from ``t5x_lite.training.flops``
   (the same analytic count for both).
2. Greedy decoding, batch 8, 512 input tokens, 64 new tokens, bfloat16:
   ``benchmarks/decode.py`` in this process, t5x_lite vs HF ``generate``.

Compiled programs go to a persistent cache (``--cache-dir``, inside the
repository copy, which the GPU machine keeps between calls), so a rerun after
a timeout starts where the compiling ended. Each section catches its own failure, so one broken variant still leaves the
others' numbers; everything lands in ``OUT/gpu_check.json`` as it is measured (written to a temporary file and
renamed over it, so a kill mid-write leaves the previous version whole).

``--deadline-s`` counts from the process's start: a section with less time left
than it needs (``SECTION_MIN_S``) is recorded as ``{"skipped": ...}`` instead of
run, and a t5x_lite arm that reaches the deadline in its warm-up or timed steps
stops there (``stopped_at_deadline``; timed steps so far still count). A
compiled step slower than ``--max-step-s`` ends the arm, the first step too
(timed after its compile has finished).

Peak GPU memory: JAX's ``peak_bytes_in_use`` is a process-lifetime peak that
nothing resets, so an arm's ``peak_mem_gib`` is given only when the arm raised
that peak (then it is the arm's own); otherwise it is ``null`` with
``peak_mem_note`` "not separable (<= earlier peak X GiB)". HF's is torch's own
allocator peak, reset at the start of its section.

Order risk: HF runs in this process after the first JAX arm. Memory JAX has
freed stays in JAX's allocator pool (``XLA_PYTHON_CLIENT_PREALLOCATE=false``
only makes the pool grow on demand; it never shrinks), so torch gets what the
first arm's peak left: HF needed 38.6 GiB on an 80 GB H100. Before HF the
script drops JAX's caches and garbage, and records torch's free memory and
JAX's pool; an out-of-memory there is that section's error (with those figures)
and the other sections go on. If it happens, time HF alone (``--skip
jax_train``). The platform allocator would return memory but slows JAX's steps,
so it is not used.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
import traceback

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # torch runs in this process too
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

T_START = time.monotonic()  # --deadline-s counts from here (the imports above take no time worth counting)
DEADLINE: float | None = None  # time.monotonic() value, set from --deadline-s
RESULTS: dict = {"sections": {}}

# About how long a section needs to be worth starting (seconds, on a warm machine with the compilation cache).
SECTION_MIN_S = {"jax_train_first": 0.0, "jax_train": 60.0, "hf_train": 40.0, "decode": 90.0}
GIB = 2**30


def time_left() -> float:
    return float("inf") if DEADLINE is None else DEADLINE - time.monotonic()


def save(out_dir: str) -> None:
    """Write ``gpu_check.json`` atomically: a temporary file in the same folder, then renamed over the old one."""
    path = os.path.join(out_dir, "gpu_check.json")
    tmp = path + ".tmp"
    try:
        with open(tmp, "w") as f:
            json.dump(RESULTS, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def section(name: str, out_dir: str, min_s: float = 0.0):
    """Run ``fn`` as section ``name``; record its result, its error, or that the deadline left it no time."""
    def wrap(fn):
        t = time.time()
        started_at_s = round(time.monotonic() - T_START, 1)
        left = time_left()
        if left <= 0 or left < min_s:
            RESULTS["sections"][name] = {
                "skipped": f"deadline: {max(left, 0):.0f} s left before --deadline-s {DEADLINE - T_START:.0f}, "
                           f"this section needs about {min_s:.0f} s",
                "started_at_s": started_at_s}
            print(f"[{name}] SKIPPED for time: {RESULTS['sections'][name]['skipped']}", flush=True)
            save(out_dir)
            return
        try:
            RESULTS["sections"][name] = fn()
        except Exception as e:  # keep going: the other sections' numbers still count
            RESULTS["sections"][name] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
            print(f"[{name}] FAILED: {type(e).__name__}: {e}", flush=True)
        RESULTS["sections"][name]["started_at_s"] = started_at_s
        RESULTS["sections"][name]["section_wall_s"] = round(time.time() - t, 1)
        print(f"[{name}] {json.dumps({k: v for k, v in RESULTS['sections'][name].items() if k != 'traceback'})}",
              flush=True)
        save(out_dir)
    return wrap


def shape_for(args) -> dict:
    if args.smoke:
        return dict(gin="models/t5_1_1/tiny.gin", batch=4, inputs=64, targets=16, steps=2, warmup=1)
    return dict(gin="models/t5_1_1/small.gin", batch=args.batch, inputs=512, targets=114, steps=args.steps,
                warmup=3)


def train_flops(model_cfg, shape) -> float:
    from t5x_lite.training import flops

    return float(flops.train_flops_per_example(model_cfg, {"inputs": shape["inputs"], "targets": shape["targets"]}))


def bench_hf_train(args, model_cfg, shape) -> dict:
    import torch

    device = "cpu" if args.smoke else "cuda"
    memory = {"jax_before_hf": release_jax_memory()}  # what JAX still holds: torch cannot have it
    if device == "cuda":
        free, total = torch.cuda.mem_get_info()
        memory.update(torch_free_at_start_gib=round(free / GIB, 2), device_total_gib=round(total / GIB, 2))
        torch.cuda.reset_peak_memory_stats()
    print(f"  [hf] memory at start: {json.dumps(memory)}", flush=True)
    try:
        return _hf_train_steps(args, model_cfg, shape, device, memory)
    except Exception as e:
        traceback.clear_frames(e.__traceback__)  # drop the model's tensors now, so empty_cache below frees them
        if isinstance(e, torch.cuda.OutOfMemoryError):  # say why: JAX's pool keeps what its arms freed
            raise RuntimeError(f"HF ran out of GPU memory ({memory}); JAX's allocator pool does not shrink, so "
                               f"time HF alone with --skip jax_train: {str(e)[:300]}") from e
        raise
    finally:
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()  # give torch's cache back to the device for the JAX arms after this one


def _hf_train_steps(args, model_cfg, shape, device: str, memory: dict) -> dict:
    import torch
    from transformers import T5Config
    from transformers.optimization import Adafactor

    import hf_reference

    from t5x_lite.convert import t5_config_to_hf

    config = T5Config(**{k: v for k, v in t5_config_to_hf(model_cfg).items() if k not in ("architectures",)})
    config.dropout_rate = 0.0
    torch.manual_seed(0)
    model = hf_reference.untied_t5(config)[0].to(device).train()
    opt = Adafactor(model.parameters(), lr=1e-3, scale_parameter=True, relative_step=False, warmup_init=False)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(2, config.vocab_size, (shape["batch"], shape["inputs"]), generator=g).to(device)
    labels = torch.randint(2, config.vocab_size, (shape["batch"], shape["targets"]), generator=g).to(device)

    def step():
        with torch.autocast(device_type=device, dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    t = time.perf_counter()
    step()
    sync()
    first = time.perf_counter() - t
    for _ in range(shape["warmup"]):
        step()
    sync()
    times = []
    for _ in range(shape["steps"]):
        t = time.perf_counter()
        loss = step()
        sync()
        times.append(time.perf_counter() - t)
    out = _throughput(times, shape, model_cfg)
    out.update(first_step_s=round(first, 2), last_loss=float(loss.detach()), framework="HF eager, autocast bf16",
               peak_mem_gib=round(torch.cuda.max_memory_allocated() / GIB, 2) if device == "cuda" else None,
               peak_mem_note="torch.cuda.max_memory_allocated, reset at this section's start (torch's own allocations)"
               if device == "cuda" else "no GPU", memory=memory)
    return out


def jax_memory_stats() -> dict:
    import jax

    try:
        return jax.devices()[0].memory_stats() or {}
    except Exception:  # some backends have none
        return {}


def arm_peak_memory(before: dict, after: dict) -> dict:
    """The arm's peak GPU memory, honestly: ``peak_bytes_in_use`` is the process's, never reset.

    Only when the arm raised that peak is it the arm's own (counted from zero, so
    including ``bytes_in_use_at_arm_start_gib``); otherwise the arm's peak is
    hidden under an earlier arm's and is reported as not separable.
    """
    if "peak_bytes_in_use" not in after:
        return {"peak_mem_gib": None, "peak_mem_note": "memory_stats() gives no peak_bytes_in_use on this device"}
    prev, now = before.get("peak_bytes_in_use", 0), after["peak_bytes_in_use"]
    out = {"process_peak_before_arm_gib": round(prev / GIB, 2),
           "bytes_in_use_at_arm_start_gib": round(before.get("bytes_in_use", 0) / GIB, 2)}
    if now > prev:
        out.update(peak_mem_gib=round(now / GIB, 2),
                   peak_mem_note="this arm's own peak (it raised the process-lifetime peak_bytes_in_use)")
    else:
        out.update(peak_mem_gib=None, peak_mem_note=f"not separable (<= earlier peak {prev / GIB:.2f} GiB)")
    return out


def release_jax_memory() -> dict:
    """Drop JAX's compiled-program caches and garbage; return what JAX still holds (GiB).

    The freed memory goes back to JAX's allocator pool, not to the device
    (``pool_gib``): this only keeps the pool from holding more than it must.
    """
    import jax

    gc.collect()
    jax.clear_caches()
    gc.collect()
    stats = jax_memory_stats()
    out = {"live_arrays_gib": round(sum(getattr(a, "nbytes", 0) for a in jax.live_arrays()) / GIB, 3)}
    for key, name in (("bytes_in_use", "in_use_gib"), ("pool_bytes", "pool_gib"), ("bytes_reserved", "reserved_gib"),
                      ("peak_bytes_in_use", "process_peak_gib")):
        if key in stats:
            out[name] = round(stats[key] / GIB, 2)
    return out


def _throughput(times, shape, model_cfg) -> dict:
    import jax

    from t5x_lite.training import flops

    step_s = statistics.median(times)
    tokens = shape["batch"] * (shape["inputs"] + shape["targets"])
    per_step_flops = train_flops(model_cfg, shape) * shape["batch"]
    device_kind = jax.devices()[0].device_kind
    peak = flops.peak_flops_for(device_kind, "bfloat16")
    return {
        "device": device_kind, "batch": shape["batch"], "steps_timed": len(times),
        "step_ms_median": round(step_s * 1e3, 2), "step_ms": [round(t * 1e3, 2) for t in times],
        "tokens_per_s": round(tokens / step_s), "model_tflops_per_s": round(per_step_flops / step_s / 1e12, 1),
        "mfu": round(per_step_flops / step_s / peak, 4) if peak else None,
    }


def profile_steps(trainer, state, global_batch, steps: int, top: int = 40):
    """Trace ``steps`` train steps; sum the device events per name (kernels and XLA ops) and per part of the model.

    Parts come from the model code's ``op_name`` (a kernel's ``tf_op`` argument,
    else the compiled HLO's metadata), grouped as in ``train_step_profile.py``.
    Returns (summary dict, state).
    """
    import collections

    import train_step_profile

    def run_steps():
        nonlocal state
        for _ in range(steps):
            state, m = trainer.step(state, global_batch)
        m["loss"].block_until_ready()

    events = train_step_profile.traced_events(run_steps)
    names = {}  # (pid, tid) -> name, so host and device lines can be told apart
    for e in events:
        if e.get("ph") == "M" and e.get("name") in ("process_name", "thread_name"):
            key = (e.get("pid"), e.get("tid") if e["name"] == "thread_name" else None)
            names[key] = e.get("args", {}).get("name", "")

    def line_of(e) -> str:
        return f"{names.get((e.get('pid'), None), e.get('pid'))} / {names.get((e.get('pid'), e.get('tid')), e.get('tid'))}"

    device = [e for e in events if e.get("ph") == "X" and "dur" in e
              and any(k in line_of(e).lower() for k in ("stream", "gpu"))]
    # XProf puts the model code's op_name in a kernel's "tf_op" argument; else map names through the compiled HLO.
    meta = {}
    if not any("tf_op" in (e.get("args") or {}) for e in device):
        meta = train_step_profile.op_metadata(train_step_profile.compiled_step_hlo(trainer, state, global_batch))
    per_line, per_name, per_part = collections.Counter(), collections.Counter(), collections.Counter()
    for e in events:
        if e.get("ph") == "X" and "dur" in e:
            per_line[line_of(e)] += e["dur"]
    hlo_of = {}
    for e in device:
        args = e.get("args") or {}
        hlo = str(args.get("hlo_op", ""))
        key = (line_of(e), e["name"])
        per_name[key] += e["dur"]
        hlo_of.setdefault(key, hlo)
        op_name = args.get("tf_op") or (meta.get(e["name"]) or meta.get(hlo) or ("", ""))[1]
        if "stream" in key[0].lower():
            per_part[train_step_profile.part_of(op_name) if op_name else "unmatched"] += e["dur"]
    sample_args = [{"line": line_of(e), "name": e["name"][:80], "args": {k: str(v)[:120] for k, v in
                                                                        (e.get("args") or {}).items()}}
                   for e in device[:3]]
    ms = lambda us: round(us / steps / 1e3, 3)  # noqa: E731
    return {
        "steps": steps,
        "ms_per_step_by_trace_line": {k: ms(v) for k, v in per_line.most_common(30)},
        "ms_per_step_by_part_gpu_streams": {k: ms(v) for k, v in per_part.most_common()},
        "sample_device_event_args": sample_args,
        "top_device_events": [{"line": k[0], "name": k[1][:160], "hlo_op": hlo_of[k][:160], "ms_per_step": ms(v)}
                              for k, v in per_name.most_common(top)],
    }, state


def bench_jax_train(args, shape, attention_impl: str, extra_bindings=(), profile: int = 0) -> dict:
    import jax

    import train_step

    # The output projection in bfloat16 like HF's under autocast (t5x_lite's default, as t5x's, is float32;
    # add --binding "models.T5Config.float32_logits = True" to time that).
    bindings = ["models.T5Config.dtype = 'bfloat16'", "models.T5Config.dropout_rate = 0.0",
                "models.T5Config.float32_logits = False",
                f"models.T5Config.attention_impl = '{attention_impl}'", *extra_bindings]
    mem_before = jax_memory_stats()
    model, trainer, batch, _ = train_step.t5x_lite_trainer(shape["gin"], shape, bindings)
    t = time.perf_counter()
    state = jax.block_until_ready(trainer.init(0, batch))
    init_s = time.perf_counter() - t
    print(f"  [{attention_impl}] init {init_s:.1f} s", flush=True)
    gb = trainer.global_batch(batch)
    # Wait for the step's background compile first, so the first step's own run can be held to --max-step-s too.
    precompiled = getattr(trainer, "_precompiled", None)
    t = time.perf_counter()
    if precompiled is not None:
        precompiled[1].result()
    compile_wait = time.perf_counter() - t
    print(f"  [{attention_impl}] step compile (rest after init) {compile_wait:.1f} s", flush=True)
    t = time.perf_counter()
    state, m = trainer.step(state, gb)
    m["loss"].block_until_ready()
    first = time.perf_counter() - t
    # Compiled beforehand unless the trainer fell back to compiling in step() (then first includes a compile).
    first_is_run_only = precompiled is not None and getattr(trainer, "_precompiled", None) is not None
    print(f"  [{attention_impl}] first step {first:.1f} s ({'run only' if first_is_run_only else 'incl. compile'})",
          flush=True)
    context = (f"first step {first:.1f} s after {compile_wait:.1f} s of compile wait, init {init_s:.1f} s, "
               f"{time.monotonic() - T_START:.0f} s into the run")

    def check(step_s: float, what: str) -> None:
        if step_s > args.max_step_s:  # a pathological program: say so and leave the time to the other sections
            raise RuntimeError(f"{what} took {step_s:.1f} s (> --max-step-s {args.max_step_s}); {context}")

    if first_is_run_only:
        check(first, "the first compiled step")
    warmup_done = 0
    for i in range(shape["warmup"]):
        if time_left() <= 0:  # past the deadline: time one step below rather than nothing
            break
        t = time.perf_counter()
        state, m = trainer.step(state, gb)
        m["loss"].block_until_ready()
        warm = time.perf_counter() - t
        print(f"  [{attention_impl}] warm-up step {i + 1}: {warm:.3f} s", flush=True)
        check(warm, f"warm-up step {i + 1}")
        warmup_done += 1
    times = []
    for _ in range(shape["steps"]):
        if time_left() <= 0 and times:  # keep what was timed; the deadline is for the sections after this one
            break
        t = time.perf_counter()
        state, m = trainer.step(state, gb)
        m["loss"].block_until_ready()
        times.append(time.perf_counter() - t)
    out = _throughput(times, shape, model.config)
    out.update(warmup_steps_done=warmup_done,
               stopped_at_deadline=warmup_done < shape["warmup"] or len(times) < shape["steps"])
    if profile and time_left() <= 0:
        out["profile"] = {"skipped": "deadline"}
    elif profile:
        try:
            out["profile"], state = profile_steps(trainer, state, gb, profile)
        except Exception as e:  # the timing above still counts
            out["profile"] = {"error": f"{type(e).__name__}: {e}"}
        print(f"  [{attention_impl}] profile: {json.dumps(out['profile'])[:3000]}", flush=True)
    out.update(framework=f"t5x_lite Trainer, attention_impl={attention_impl}", bindings=bindings,
               init_s=round(init_s, 2), step_compile_wait_s=round(compile_wait, 2), first_step_s=round(first, 2),
               first_step_is_run_only=first_is_run_only, first_step_incl_compile_s=round(compile_wait + first, 2),
               last_loss=float(m["loss"]), **arm_peak_memory(mem_before, jax_memory_stats()))
    del state, m, gb, trainer
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--smoke", action="store_true", help="tiny sizes on CPU: checks the script, measures nothing")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--attention", default="xla,cudnn")
    p.add_argument("--binding", action="append", default=[],
                   help="extra gin binding for the t5x_lite arms, e.g. \"models.T5Config.scan_layers = True\"")
    p.add_argument("--max-step-s", type=float, default=20.0,
                   help="give up on an arm whose compiled step (the first one too, after its compile) takes longer "
                        "than this (seconds)")
    p.add_argument("--deadline-s", type=float, default=0.0,
                   help="seconds from the start: skip a section that cannot start (and finish its minimum) before "
                        "then, and stop an arm's timed steps there; set it some 20 s under the device call's limit "
                        "(0: no deadline)")
    p.add_argument("--profile-steps", type=int, default=3,
                   help="after the first attention arm's timed steps, trace this many and sum device time per "
                        "kernel and per part of the model (0: off)")
    p.add_argument("--skip", default="", help="comma-separated sections to skip: hf_train, jax_train, decode")
    p.add_argument("--cache-dir", default=os.path.join(REPO, ".jax_cache", "gpu_check"),
                   help="JAX persistent compilation cache (and XLA's autotuning cache): a rerun on the same "
                        "machine skips the minutes of compiling; '' turns it off")
    args = p.parse_args()
    global DEADLINE
    DEADLINE = T_START + args.deadline_s if args.deadline_s > 0 else None
    os.makedirs(args.out, exist_ok=True)
    if args.smoke:
        os.environ["JAX_PLATFORMS"] = "cpu"
    os.environ["T5X_LITE_COMPILATION_CACHE"] = args.cache_dir or "0"
    from t5x_lite import startup

    startup.prepare_process()  # as the CLI: malloc settings, then the compilation cache (--cache-dir)
    import jax

    t0 = time.time()
    RESULTS["env"] = {"jax": jax.__version__, "devices": [str(d) for d in jax.devices()],
                      "device_kind": jax.devices()[0].device_kind, "argv": sys.argv[1:],
                      "deadline_s": args.deadline_s or None, "jax_ready_at_s": round(time.monotonic() - T_START, 1)}
    print(json.dumps(RESULTS["env"]), flush=True)
    shape = shape_for(args)
    skip = set(filter(None, args.skip.split(",")))
    from t5x_lite import config as t5x_config

    model_cfg = t5x_config.model_from_gin([shape["gin"]], ["models.T5Config.dropout_rate = 0.0"]).config
    RESULTS["flops_per_example"] = train_flops(model_cfg, shape)

    # The first attention arm, then HF, then the other arms: a run cut short still has a pair to compare.
    impls = [i for i in args.attention.split(",") if not (args.smoke and i == "cudnn")]

    def jax_arm(impl: str, min_s: float, profile: int = 0) -> None:
        section(f"jax_train_{impl}", args.out, min_s)(
            lambda: bench_jax_train(args, shape, impl, extra_bindings=args.binding, profile=profile))

    if "jax_train" not in skip and impls:
        jax_arm(impls[0], SECTION_MIN_S["jax_train_first"], profile=args.profile_steps)
    if "hf_train" not in skip:
        section("hf_train", args.out, SECTION_MIN_S["hf_train"])(lambda: bench_hf_train(args, model_cfg, shape))
    if "jax_train" not in skip:
        for impl in impls[1:]:
            jax_arm(impl, SECTION_MIN_S["jax_train"])
    if "decode" not in skip:
        import decode

        def run_decode():
            json_path = os.path.join(args.out, "decode.json")
            argv = ["--device", "cpu" if args.smoke else "cuda", "--dtype", "float32" if args.smoke else "bfloat16",
                    "--reps", "2" if args.smoke else "10", "--no-write", "--json-out", json_path]
            if args.smoke:
                argv += ["--size", "tiny", "--input-length", "32", "--new-tokens", "4", "--batch", "2"]
            old = sys.argv
            sys.argv = ["benchmarks/decode.py", *argv]
            try:
                decode.main()
            finally:
                sys.argv = old
            with open(json_path) as f:
                return json.load(f)

        section("decode", args.out, SECTION_MIN_S["decode"])(run_decode)

    RESULTS["wall_s"] = round(time.time() - t0, 1)
    save(args.out)
    print("\n== summary ==")
    for name, r in RESULTS["sections"].items():
        if "skipped" in r:
            print(f"{name:<22} SKIPPED {r['skipped']}")
        elif "error" in r:
            print(f"{name:<22} ERROR {r['error'][:200]}")
        elif name == "decode":
            print(f"{name:<22} t5x_lite {r['ms_per_step']['t5x_lite']:.2f} ms/step, HF {r['ms_per_step']['hf']:.2f} "
                  f"ms/step, ratio {r['median_ratio']:.2f}x, tokens agree {r['token_agreement']:.3f}")
        else:
            print(f"{name:<22} {r['tokens_per_s']:>10,} tok/s  step {r['step_ms_median']} ms  "
                  f"MFU {r['mfu']}  peak mem {r.get('peak_mem_gib')} GiB ({r.get('peak_mem_note')})"
                  + ("  [timed steps cut at the deadline]" if r.get("stopped_at_deadline") else ""))
    print(f"total {RESULTS['wall_s']} s")


if __name__ == "__main__":
    main()
