#!/usr/bin/env python3
"""Joins `negdistill gpu-check`'s report.json and tools/gpu/peer.py's peer.json from the same run into one
Markdown table: NegDistill vs PyTorch, with the ratio per row (NegDistill's speed over PyTorch's: above 1
means NegDistill is faster). Usage: python3 tools/gpu/combine.py REPORT.json PEER.json > combined.md"""
import json
import sys


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        print(f"- could not read {path}: {e}")
        return {}


def fmt(v, d=1):
    return "—" if v is None else f"{v:.{d}f}"


def main(nd_path, peer_path):
    nd, peer = load(nd_path), load(peer_path)
    print("# NegDistill vs PyTorch, same machine, same run")
    print()
    print(f"- NegDistill device: {nd.get('device', '—')}")
    print(f"- NegDistill matmul path: {nd.get('mat_mul_path', '—')}")
    env = peer.get("env", {})
    print(f"- PyTorch: torch {env.get('torch', '—')}, transformers {env.get('transformers', '—')}, peft {env.get('peft', '—')}, {env.get('device', 'no CUDA device')}")
    fails = [c for c in nd.get("checks", []) if not c.get("pass")]
    print(f"- NegDistill correctness: {len(nd.get('checks', [])) - len(fails)}/{len(nd.get('checks', []))} checks pass"
          + (": FAIL " + ", ".join(f"{c['family']} {c['op']} ({c['shape']})" for c in fails) if fails else ""))
    for s in peer.get("skipped", []):
        print(f"- peer skipped: {s}")
    print()
    print("| row | NegDistill | PyTorch | ratio (NegDistill / PyTorch speed) |")
    print("|---|---|---|---|")
    if nd.get("copy_gbps") or peer.get("copy_gbps"):
        print(f"| copy bandwidth, GB/s | {fmt(nd.get('copy_gbps'), 0)} | {fmt(peer.get('copy_gbps'), 0)} | — |")
    tg = {(t["shape"]): t for t in nd.get("timings", []) if t.get("family") == "MatMul"}
    for g in peer.get("gemm", []):
        t = tg.get(g["shape"])
        r = t["tflops"] / g["tflops"] if t and g["tflops"] else None
        print(f"| GEMM {g['op']} {g['shape']}, TFLOP/s | {fmt(t['tflops'] if t else None)} | {fmt(g['tflops'])} | {fmt(r, 2)} |")
    stages = nd.get("stages", [])

    def stage(prefix, recompute):
        for s in stages:
            if s["stage"].startswith(prefix) and f"recompute {'on' if recompute else 'off'}" in s["setting"]:
                return s
        return None

    for rc in (False, True):
        s = stage("LoRA step", rc)
        p = next((x for x in peer.get("train", []) if x["recompute"] == rc), None)
        r = p["ms"] / s["ms_per_step"] if s and p else None
        print(f"| LoRA step 16 × 256, recompute {'on' if rc else 'off'}, ms | {fmt(s['ms_per_step'] if s else None)} | {fmt(p['ms'] if p else None)} | {fmt(r, 2)} |")
        if s or p:
            print(f"| … peak memory, GiB (NegDistill plan {fmt(s['plan_gib'] if s else None)}) | {fmt(s['peak_gib'] if s else None)} | {fmt(p['peak_gib'] if p else None)} | — |")
        nat, nce = stage("NAT step", rc), stage("NCE step", rc)
        if nat and s:
            print(f"| NAT step / LoRA step time, recompute {'on' if rc else 'off'} (bar ≤ 1.25) | {fmt(nat['ms_per_step'] / s['ms_per_step'], 2)} | — | — |")
        if nce and s:
            print(f"| NCE step, ms (÷ LoRA step {fmt(nce['ms_per_step'] / s['ms_per_step'], 2)}) | {fmt(nce['ms_per_step'])} | — | — |")
    for s in stages:
        if not s["stage"].startswith("decode"):
            continue
        b = int(s["setting"].split(",")[0].split()[1])
        p = next((x for x in peer.get("generate", []) if x["batch"] == b), None)
        r = s["tokens_per_second"] / p["tokens_per_s"] if p and p["tokens_per_s"] else None
        cache = s["stage"].split("(")[1].split(" KV")[0] if "KV cache" in s["stage"] else "F32"
        if "prompts" in s["stage"]:
            cache += ", " + ("shared prompts" if "shared prompts" in s["stage"] else "own prompts") + ", T 1"
        print(f"| decode batch {b}, {cache} cache, tokens/s | {fmt(s['tokens_per_second'], 0)} | {fmt(p['tokens_per_s'] if p else None, 0)} | {fmt(r, 2)} |")
    for i in peer.get("interop", []):
        print(f"| interop: {i['check']} | ‖Δ‖/‖ref‖ {i['rel_err']:.1e} (tol {i['tolerance']:.0e}) | — | {'pass' if i['pass'] else 'FAIL'} |")
    for n in nd.get("not_reached", []) + peer.get("not_reached", []):
        print(f"| not reached | {n} | | |")
    for e in peer.get("errors", []):
        print(f"| peer error | {e} | | |")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
