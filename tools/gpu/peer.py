#!/usr/bin/env python3
"""PyTorch peer of `negdistill gpu-check`: the same work on the device's PyTorch, so every NegDistill
figure has its peer from the same run, plus the interop checks of NegDistill's checkpoint code against
transformers and peft.

Parts (each stops when --budget runs out; peer.json / peer.md are always written):
  env       torch / CUDA / transformers / peft versions, where the cuBLAS(Lt) libraries are
  gemm      torch.matmul in bf16 at gpu-check's LLaMA-7b GEMM shapes (median of CUDA-event timings)
  interop   (CPU is enough) a small random LLaMA saved by transformers' save_pretrained, sharded, in bf16
            and fp32, loads in NegDistill with logits equal to transformers' (fp32 compute on both
            sides: within 1e-4 relative); a peft LoRA loads in NegDistill with equal logits; an adapter
            written by NegDistill loads in peft with equal logits
  train     LlamaForCausalLM with the LLaMA-7b config, random init, bf16, peft LoRA r 8 / alpha 16 on
            q_proj, v_proj: one training step (forward, backward, AdamW) at 16 x 256, with and without
            gradient checkpointing; peak memory
  generate  `generate` tokens/s at batch 1, 16 and 64 (prompt 128, min_new_tokens = max_new_tokens = 256)
  full      a random LLaMA-7b saved by save_pretrained (bf16, sharded as Hugging Face ships it) loaded by
            `negdistill interop logits` as a user would point --base at it, timed, first logits compared

Without torch (as on the CI machine) every part that needs it prints "skipped: no torch" and the script
exits 0. Usage:
  python3 tools/gpu/peer.py [--negdistill PATH] [--budget SECONDS] [--out DIR] [--parts env,gemm,...] [--quick]
"""
import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time

ALL_PARTS = ["env", "gemm", "interop", "train", "generate", "full"]

# gpu-check's LLaMA-7b GEMMs (src/NegDistill.Cli/Gpu/OpCases.cs, MatMuls): name, M, N, K, transA, transB
GEMMS = [
    ("x·Wᵀ (q/k/v/o) NT", 4096, 4096, 4096, False, True),
    ("x·Wᵀ (gate/up) NT", 4096, 11008, 4096, False, True),
    ("x·Wᵀ (down) NT", 4096, 4096, 11008, False, True),
    ("dx = dy·W (gate/up), accumulate NN", 4096, 4096, 11008, False, False),
    ("dx = dy·W (down) NN", 4096, 11008, 4096, False, False),
    ("LM head x·Wᵀ NT", 4096, 32000, 4096, False, True),
    ("LoRA x·Aᵀ NT", 4096, 8, 4096, False, True),
    ("LoRA xa·Bᵀ, accumulate NT", 4096, 4096, 8, False, True),
    ("LoRA dA = dxaᵀ·x TN", 8, 4096, 4096, True, False),
    ("LoRA dB = dyᵀ·xa TN", 4096, 8, 4096, True, False),
    ("decode x·Wᵀ NT", 64, 4096, 4096, False, True),
    ("decode LM head NT", 64, 32000, 4096, False, True),
    ("square, BF16 B NT", 4096, 4096, 4096, False, True),
]


class Budget:
    def __init__(self, seconds):
        self.t0, self.seconds = time.time(), seconds

    def left(self):
        return self.seconds - (time.time() - self.t0)

    def has(self, need):
        return self.left() >= need


def say(*a):
    print(*a, flush=True)


def try_import():
    try:
        import torch  # noqa: F401
        return None
    except Exception as e:  # ImportError, or a broken install
        return f"{type(e).__name__}: {e}"


def env_part(rep):
    import torch
    rep["env"]["torch"] = torch.__version__
    rep["env"]["cuda_available"] = torch.cuda.is_available()
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        rep["env"]["device"] = f"{p.name}, {p.total_memory / 2**30:.1f} GiB, {p.multi_processor_count} SMs, cc {p.major}.{p.minor}"
        rep["env"]["cuda"] = torch.version.cuda
    for mod in ("transformers", "peft", "safetensors"):
        try:
            rep["env"][mod] = __import__(mod).__version__
        except Exception as e:
            rep["env"][mod] = f"missing ({type(e).__name__})"
    # where cuBLAS / cuBLASLt live (for issue #9's binding): Python's nvidia-* packages, CUDA_PATH, the toolkit
    found = set()
    roots = [os.environ.get("CUDA_PATH", ""), "/usr/local/cuda", "/usr/lib/x86_64-linux-gnu"] + sys.path
    for r in roots:
        if not r or not os.path.isdir(r):
            continue
        for pat in ("nvidia/cublas/lib/libcublas*.so*", "lib64/libcublas*.so*", "libcublas*.so*", "targets/x86_64-linux/lib/libcublas*.so*"):
            found.update(glob.glob(os.path.join(r, pat)))
    rep["env"]["cublas_libraries"] = sorted(found)
    say("env:", json.dumps(rep["env"], indent=1))


def cuda_time(fn, reps=10, warm=2):
    """Median milliseconds of `reps` CUDA-event-timed calls after `warm` warm-up calls."""
    import torch
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        ts.append(a.elapsed_time(b))
    ts.sort()
    return ts[len(ts) // 2]


def gemm_part(rep, budget):
    import torch
    dev = "cuda"
    # copy bandwidth, the same ceiling gpu-check measures (bytes read + written)
    n = 1 << 28
    x = torch.randn(n, device=dev)
    y = torch.empty_like(x)
    ms = cuda_time(lambda: y.copy_(x))
    rep["copy_gbps"] = 2 * 4 * n / (ms * 1e-3) / 1e9
    del x, y
    for name, m, nn, k, ta, tb in GEMMS:
        if not budget.has(5):
            rep["not_reached"].append(f"gemm {name} and after")
            break
        a = torch.randn(k, m, device=dev, dtype=torch.bfloat16).t() if ta else torch.randn(m, k, device=dev, dtype=torch.bfloat16)
        b = torch.randn(nn, k, device=dev, dtype=torch.bfloat16).t() if tb else torch.randn(k, nn, device=dev, dtype=torch.bfloat16)
        ms = cuda_time(lambda: torch.matmul(a, b), reps=20)
        row = {"op": name, "shape": f"{m}×{nn}×{k}", "m": m, "n": nn, "k": k, "ms": ms, "tflops": 2 * m * nn * k / (ms * 1e-3) / 1e12}
        rep["gemm"].append(row)
        say(f"  gemm {name:38s} {row['shape']:18s} {ms:8.3f} ms {row['tflops']:7.1f} TFLOP/s")


def llama7b_config(layers=32):
    from transformers import LlamaConfig
    return LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=layers,
                       num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=2048,
                       rms_norm_eps=1e-6, tie_word_embeddings=False, attn_implementation="sdpa")


def lora_config(random_b=False):
    from peft import LoraConfig
    return LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0 if random_b else 0.05, target_modules=["q_proj", "v_proj"],
                      task_type="CAUSAL_LM", init_lora_weights=not random_b)


def random_llama(cfg, device, dtype):
    import torch
    from transformers import LlamaForCausalLM
    torch.manual_seed(0)
    with torch.device(device):
        m = LlamaForCausalLM(cfg)
    return m.to(dtype)


def train_part(rep, budget, quick):
    import torch
    from peft import get_peft_model
    b, t = (2, 64) if quick else (16, 256)
    cfg = llama7b_config(layers=2 if quick else 32)
    t0 = time.time()
    base = random_llama(cfg, "cuda", torch.bfloat16)
    say(f"  random LLaMA ({cfg.num_hidden_layers} layers) in bf16 on the GPU in {time.time() - t0:.1f} s")
    base.config.use_cache = False
    model = get_peft_model(base, lora_config())
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-4)
    ids = torch.randint(3, cfg.vocab_size, (b, t), device="cuda")
    for ckpt in (False, True):
        if not budget.has(60):
            rep["not_reached"].append(f"train step, gradient checkpointing {'on' if ckpt else 'off'}")
            continue
        if ckpt:
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        else:
            base.gradient_checkpointing_disable()
        model.train()

        def step():
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss

        step()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        ts = []
        for _ in range(3):
            s = time.time()
            loss = step()
            torch.cuda.synchronize()
            ts.append(time.time() - s)
        ts.sort()
        sec = ts[1]
        row = {"stage": "LoRA step (HF LlamaForCausalLM + peft, bf16, sdpa)", "recompute": ckpt, "batch": b, "seq": t,
               "ms": sec * 1e3, "tokens_per_s": b * t / sec, "peak_gib": torch.cuda.max_memory_allocated() / 2**30, "loss": float(loss)}
        rep["train"].append(row)
        say(f"  train gradient checkpointing {'on ' if ckpt else 'off'}: {row['ms']:.1f} ms/step, {row['tokens_per_s']:.0f} tok/s, peak {row['peak_gib']:.1f} GiB")
    del model, base, opt
    torch.cuda.empty_cache()


def generate_part(rep, budget, quick):
    import torch
    from peft import get_peft_model
    cfg = llama7b_config(layers=2 if quick else 32)
    prompt, new = (16, 16) if quick else (128, 256)
    model = get_peft_model(random_llama(cfg, "cuda", torch.bfloat16), lora_config()).eval()
    for b in (1, 16, 64):
        if not budget.has(30):
            rep["not_reached"].append(f"generate batch {b} and larger")
            break
        ids = torch.randint(3, cfg.vocab_size, (b, prompt), device="cuda")
        mask = torch.ones_like(ids)
        kw = dict(input_ids=ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=0)
        with torch.no_grad():
            model.generate(**{**kw, "max_new_tokens": 4, "min_new_tokens": 4})
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            s = time.time()
            out = model.generate(**kw)
            torch.cuda.synchronize()
            sec = time.time() - s
        gen = (out.shape[1] - prompt) * b
        row = {"batch": b, "prompt": prompt, "new_tokens": new, "seconds": sec, "tokens_per_s": gen / sec, "peak_gib": torch.cuda.max_memory_allocated() / 2**30}
        rep["generate"].append(row)
        say(f"  generate batch {b}: {row['tokens_per_s']:.0f} tok/s ({sec:.2f} s), peak {row['peak_gib']:.1f} GiB")
    del model
    torch.cuda.empty_cache()


def nd_logits(negdistill, base, tokens, adapter=None, last_only=False, device="cpu"):
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "logits.json")
        cmd = [negdistill, "interop", "logits", "--base", base, "--tokens", ";".join(",".join(map(str, r)) for r in tokens), "--out", out, "--device", device]
        if adapter:
            cmd += ["--adapter", adapter]
        if last_only:
            cmd.append("--last-only")
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {p.returncode}: {p.stderr.strip() or p.stdout.strip()}")
        with open(out) as f:
            return json.load(f)


def rel_err(a, b):
    import torch
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return float((a - b).norm() / b.norm())


def interop_part(rep, budget, negdistill):
    import torch
    from transformers import LlamaConfig
    from peft import PeftModel, get_peft_model
    cfg = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=4, max_position_embeddings=128, rms_norm_eps=1e-6, tie_word_embeddings=False)
    tokens = [[1, 17, 300, 42, 7, 99, 511, 3], [1, 5, 5, 250, 128, 64, 32, 16]]
    ids = torch.tensor(tokens)
    tol = 1e-4   # fp32 on both sides, different summation orders and exp/sin/cos
    work = tempfile.mkdtemp(prefix="nd-interop-")

    def check(name, got, want, note=""):
        e = rel_err(got, want)
        row = {"check": name, "rel_err": e, "tolerance": tol, "pass": e <= tol, "note": note}
        rep["interop"].append(row)
        say(f"  interop {name:62s} ‖Δ‖/‖ref‖ {e:.1e} (tol {tol:.0e}) {'pass' if row['pass'] else 'FAIL'} {note}")

    import copy
    ref = random_llama(cfg, "cpu", torch.float32).eval()
    sd = {k: v.clone() for k, v in ref.state_dict().items()}

    def base_with_weights():
        # weights go in before peft wraps q_proj/v_proj (after, their keys gain ".base_layer")
        m = random_llama(cfg, "cpu", torch.float32)
        m.load_state_dict(sd)
        return m.eval()

    for dtype, label in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
        d = os.path.join(work, f"base-{label}")
        m = copy.deepcopy(ref).to(dtype)
        m.save_pretrained(d, max_shard_size="100KB")
        shards = len(glob.glob(os.path.join(d, "*.safetensors")))
        with torch.no_grad():
            want = m.float()(ids).logits      # weights as stored (bf16 values are exact in fp32), fp32 compute
        got = nd_logits(negdistill, d, tokens)
        check(f"transformers save_pretrained ({label}, {shards} shards) → NegDistill logits", got["logits"], want, f"weights {got['weights']}")
    base_dir = os.path.join(work, "base-fp32")
    # peft → NegDistill: a LoRA with random non-zero B (init_lora_weights=False), saved by peft
    torch.manual_seed(1)
    pm = get_peft_model(base_with_weights(), lora_config(random_b=True)).eval()
    peft_dir = os.path.join(work, "peft-adapter")
    pm.save_pretrained(peft_dir)
    with torch.no_grad():
        want = pm(ids).logits
    check("peft save_pretrained adapter → NegDistill logits", nd_logits(negdistill, base_dir, tokens, adapter=peft_dir)["logits"], want)
    # NegDistill → peft
    nd_dir = os.path.join(work, "nd-adapter")
    p = subprocess.run([negdistill, "interop", "random-lora", "--base", base_dir, "--out", nd_dir], capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"negdistill interop random-lora exited {p.returncode}: {p.stderr.strip()}")
    loaded = PeftModel.from_pretrained(base_with_weights(), nd_dir).eval()
    with torch.no_grad():
        want = loaded(ids).logits
    check("NegDistill adapter → peft PeftModel.from_pretrained logits", nd_logits(negdistill, base_dir, tokens, adapter=nd_dir)["logits"], want)


def full_part(rep, budget, negdistill):
    """A random LLaMA-7b as Hugging Face ships it (bf16, ~10 GB shards), loaded by negdistill on the GPU."""
    import torch
    cfg = llama7b_config()
    work = tempfile.mkdtemp(prefix="nd-full-")
    t0 = time.time()
    m = random_llama(cfg, "cuda", torch.bfloat16).eval()
    tokens = [[1] + [3 + (i * 7919) % 31990 for i in range(31)]]
    with torch.no_grad():
        want = m(torch.tensor(tokens, device="cuda")).logits[:, -1:, :].float().cpu()
    m.save_pretrained(work, max_shard_size="10GB")
    del m
    torch.cuda.empty_cache()
    saved = time.time() - t0
    s = time.time()
    got = nd_logits(negdistill, work, tokens, last_only=True, device="cuda")
    wall = time.time() - s
    e = rel_err(got["logits"], want)
    tol = 3e-2   # transformers computes in bf16 here, NegDistill in fp32 over the same bf16 weights
    row = {"check": "random LLaMA-7b (bf16, 10 GB shards) → negdistill --base, last-position logits", "rel_err": e, "tolerance": tol, "pass": e <= tol,
           "note": f"saved in {saved:.0f} s; negdistill {wall:.1f} s wall (load {got['load_seconds']:.1f} s, forward {got['forward_seconds']:.2f} s)"}
    rep["interop"].append(row)
    say(f"  full-size: {row['check']}: ‖Δ‖/‖ref‖ {e:.1e} (tol {tol:.0e}) {'pass' if row['pass'] else 'FAIL'}; {row['note']}")


def write(rep, out):
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "peer.json"), "w") as f:
        json.dump(rep, f, indent=1)
    lines = ["# tools/gpu/peer.py", "", f"- env: {json.dumps(rep['env'])}", ""]
    for s in rep["skipped"]:
        lines.append(f"- skipped: {s}")
    if rep["gemm"]:
        lines += ["", "| GEMM (torch.matmul, bf16) | shape | ms | TFLOP/s |", "|---|---|---|---|"]
        lines += [f"| {g['op']} | {g['shape']} | {g['ms']:.3f} | {g['tflops']:.1f} |" for g in rep["gemm"]]
    if rep["train"]:
        lines += ["", "| step | recompute | ms | tokens/s | peak GiB |", "|---|---|---|---|---|"]
        lines += [f"| {r['stage']} | {r['recompute']} | {r['ms']:.1f} | {r['tokens_per_s']:.0f} | {r['peak_gib']:.1f} |" for r in rep["train"]]
    if rep["generate"]:
        lines += ["", "| generate batch | tokens/s | peak GiB |", "|---|---|---|"]
        lines += [f"| {r['batch']} | {r['tokens_per_s']:.0f} | {r['peak_gib']:.1f} |" for r in rep["generate"]]
    if rep["interop"]:
        lines += ["", "| interop check | ‖Δ‖/‖ref‖ | tolerance | result | note |", "|---|---|---|---|---|"]
        lines += [f"| {r['check']} | {r['rel_err']:.1e} | {r['tolerance']:.0e} | {'pass' if r['pass'] else 'FAIL'} | {r['note']} |" for r in rep["interop"]]
    for n in rep["not_reached"]:
        lines.append(f"- not reached: {n}")
    for e in rep["errors"]:
        lines.append(f"- error: {e}")
    with open(os.path.join(out, "peer.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--negdistill", help="the negdistill executable (from tools/gpu/pack.sh); interop parts are skipped without it")
    ap.add_argument("--budget", type=float, default=240, help="seconds for the whole run")
    ap.add_argument("--out", default="runs/peer")
    ap.add_argument("--parts", default=",".join(ALL_PARTS))
    ap.add_argument("--quick", action="store_true", help="2-layer models and short runs")
    a = ap.parse_args()
    parts = [p.strip() for p in a.parts.split(",") if p.strip()]
    for p in parts:
        if p not in ALL_PARTS:
            ap.error(f"--parts: '{p}' is not one of {', '.join(ALL_PARTS)}")
    budget = Budget(a.budget)
    rep = {"env": {"python": sys.version.split()[0]}, "gemm": [], "train": [], "generate": [], "interop": [], "skipped": [], "not_reached": [], "errors": []}
    missing = try_import()
    if missing:
        for p in parts:
            msg = f"{p}: no torch ({missing})"
            rep["skipped"].append(msg)
            say(f"skipped: {msg}")
        write(rep, a.out)
        return 0
    import torch
    has_cuda = torch.cuda.is_available()
    nd = a.negdistill if a.negdistill and os.access(a.negdistill, os.X_OK) else None
    plan = [("env", lambda: env_part(rep), True, None),
            ("gemm", lambda: gemm_part(rep, budget), has_cuda, "no CUDA device"),
            ("interop", lambda: interop_part(rep, budget, nd), nd is not None, "no negdistill executable (--negdistill)"),
            ("train", lambda: train_part(rep, budget, a.quick), has_cuda, "no CUDA device"),
            ("generate", lambda: generate_part(rep, budget, a.quick), has_cuda, "no CUDA device"),
            ("full", lambda: full_part(rep, budget, nd), has_cuda and nd is not None and not a.quick, "needs CUDA, --negdistill and no --quick")]
    for name, fn, ok, why in plan:
        if name not in parts:
            continue
        if not ok:
            rep["skipped"].append(f"{name}: {why}")
            say(f"skipped: {name}: {why}")
            continue
        if not budget.has(10):
            rep["not_reached"].append(name)
            continue
        say(f"[{name}] {budget.left():.0f} s left")
        try:
            fn()
        except Exception as e:   # one part's failure must not lose the others' figures
            rep["errors"].append(f"{name}: {type(e).__name__}: {e}")
            say(f"error in {name}: {type(e).__name__}: {e}")
        finally:
            write(rep, a.out)
    write(rep, a.out)
    failed = [r for r in rep["interop"] if not r["pass"]]
    return 1 if failed or rep["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
