using NegDistill.Runtime;

namespace NegDistill.GpuCheck;

/// <summary>A host-side input or output of an op case: shape, storage kind and (for inputs) data.</summary>
public sealed record HostTensor(DType DType, int[] Shape, float[]? F = null, int[]? I = null)
{
    public long Length => Shape.Aggregate(1L, (a, b) => a * b);
}

/// <summary>
/// One op of the <see cref="IBackend"/> contract at one shape, runnable on any backend: gpu-check runs it
/// on the device and on the CPU twin with the same inputs and compares <see cref="Outputs"/>, then times
/// it on the device. <see cref="Poisoned"/> outputs are filled with NaN before each checked run so an
/// element the op fails to write cannot pass; outputs an op accumulates into (+=, the backward ops)
/// start from random values instead.
/// </summary>
public sealed class OpCase
{
    public required string Family { get; init; }
    public required string Name { get; init; }
    public required string Shape { get; init; }
    public required Func<Dictionary<string, HostTensor>> Inputs { get; init; }
    public required Action<IBackend, Dictionary<string, Tensor>> Run { get; init; }
    public required string[] Outputs { get; init; }
    public string[] Poisoned { get; init; } = [];
    /// <summary>‖device − twin‖ / ‖twin‖ allowed per output (see <see cref="Tolerances"/>).</summary>
    public double Tolerance { get; init; } = Tolerances.Fp32;
    /// <summary>Floating-point operations and the fewest bytes of device memory one run must move.</summary>
    public double Flops { get; init; }
    public double Bytes { get; init; }
    /// <summary>Outputs compared exactly as integers (sampled tokens).</summary>
    public string[] ExactInts { get; init; } = [];
    /// <summary>Outputs where a non-finite value is a result, not a failure, when both sides agree on it
    /// (the −∞ log-sum-exp of a row that sees no key).</summary>
    public string[] FiniteOnly { get; init; } = [];
}

/// <summary>
/// The bounds gpu-check holds each comparison to, and why. Both sides compute in fp32 unless noted;
/// they differ in summation order (tiles and trees vs the twin's packed GEMM and sequential sums) and in
/// exp/log/sin/cos implementations (the GPU's approximate instructions vs .NET's).
/// </summary>
public static class Tolerances
{
    /// <summary>fp32 vs fp32: relative error grows like √K·eps ≈ 1e-5 for K ≤ 11008; 1e-4 leaves room for
    /// the transcendental functions of the GPU.</summary>
    public const double Fp32 = 1e-4;
    /// <summary>TF32 tensor cores (10-bit mantissa operands, fp32 accumulation): near 3e-4 typical.</summary>
    public const double Tf32 = 3e-3;
    /// <summary>BF16 operands, fp32 accumulation: between 1e-3 and 1e-2.</summary>
    public const double Bf16 = 2e-2;
    /// <summary>A whole model step (many ops chained, gradients through every layer): 2e-3 as the
    /// kernel-parity tests hold the whole-model gradients.</summary>
    public const double ModelFp32 = 2e-3;
    /// <summary>The same step with every GEMM's activations rounded to BF16 (tensor-core paths): each layer
    /// adds ~4e-3 relative; over two layers, the LM head and the backward, 5e-2.</summary>
    public const double ModelBf16 = 5e-2;
}

/// <summary>The matmul bounds of the device's matmul path: with BF16 B (frozen weights) and with F32 B.</summary>
public sealed record MatMulTolerance(double Bf16B, double F32B, string Path)
{
    public static MatMulTolerance Simt => new(Tolerances.Fp32, Tolerances.Fp32, "SIMT fp32 (MatMulKernels v1)");

    /// <summary>The bounds of the path a backend's MatMul takes now: tensor cores round A (and B where it
    /// is F32 on the library's TF32 path) to fewer mantissa bits.</summary>
    public static MatMulTolerance For(IBackend ops) => ops switch
    {
        NegDistill.Kernels.IlgpuBackend { IsCuda: true } b when b.HasLibrary && b.MatMulVersion is NegDistill.Kernels.MatMulKernels.Version.Auto or NegDistill.Kernels.MatMulKernels.Version.Library
            => new(Tolerances.Bf16, Tolerances.Tf32, b.MatMulPath),
        NegDistill.Kernels.IlgpuBackend { IsCuda: true } b when b.MatMulVersion is NegDistill.Kernels.MatMulKernels.Version.Auto or NegDistill.Kernels.MatMulKernels.Version.V2Mma
            => new(Tolerances.Bf16, Tolerances.Fp32, b.MatMulPath),
        NegDistill.Kernels.IlgpuBackend b => new(Tolerances.Fp32, Tolerances.Fp32, b.MatMulPath),
        _ => new(Tolerances.Fp32, Tolerances.Fp32, "CPU twin packed GEMM"),
    };
}

/// <summary>The op cases of every kernel family at the shapes gpu-check uses: tiny (the CPU accelerator,
/// CI) and LLaMA-7b's (d 4096, FFN 11008, 32 heads × 128, vocab 32000, 16 × 256 rows; decode batch 64).</summary>
public static class OpCases
{
    public sealed record Shapes(string Label, int Rows, int Batch, int Seq, int Dim, int Ffn, int Heads, int Vocab, int DecodeRows, int CacheLen, int LoraRank)
    {
        public int HeadDim => Dim / Heads;
        public static Shapes Tiny => new("tiny", 24, 2, 12, 32, 48, 4, 70, 4, 16, 4);
        public static Shapes Llama7B => new("7B", 4096, 16, 256, 4096, 11008, 32, 32000, 64, 384, 8);
    }

    static ulong _seed = 1000;

    /// <summary>Uniform in [−scale, scale), drawn in parallel from a counter-based stream (a fresh stream
    /// per call, so every case gets its own inputs, never zeros).</summary>
    public static float[] Rand(long n, float scale = 1f)
    {
        ulong seed = Interlocked.Increment(ref _seed);
        var r = new float[n];
        const int chunk = 1 << 16;
        Parallel.For(0, (int)((n + chunk - 1) / chunk), c =>
        {
            long i0 = (long)c * chunk, i1 = Math.Min(n, i0 + chunk);
            for (long i = i0; i < i1; i++) r[i] = (2f * CounterRng.Uniform(seed, (ulong)i) - 1f) * scale;
        });
        return r;
    }

    static HostTensor R(float scale, params int[] shape) => new(DType.F32, shape, Rand(shape.Aggregate(1L, (a, b) => a * b), scale));
    static HostTensor W16(float scale, params int[] shape) => new(DType.BF16, shape, Rand(shape.Aggregate(1L, (a, b) => a * b), scale));
    static HostTensor Out(params int[] shape) => new(DType.F32, shape);
    static HostTensor Ints(int[] v) => new(DType.I32, [v.Length], I: v);

    public static IEnumerable<OpCase> All(Shapes s, MatMulTolerance mm)
    {
        foreach (var c in MatMuls(s, mm)) yield return c;
        int n = s.Rows, C = s.Dim, F = s.Ffn, V = s.Vocab, H = s.Heads, hd = s.HeadDim, B = s.Batch, T = s.Seq;
        long nc = (long)n * C, nf = (long)n * F, nv = (long)n * V;
        string rows = $"{n}×{C}";

        yield return new OpCase
        {
            Family = "Embedding", Name = "forward", Shape = $"{n} tokens, {V}×{C}",
            Inputs = () => new() { ["wte"] = R(1, V, C), ["tok"] = Ints(Tokens(n, V)), ["out"] = Out(n, C) },
            Run = (o, t) => o.EmbeddingForward(t["out"], t["tok"], t["wte"], n, C), Outputs = ["out"], Poisoned = ["out"], Bytes = 8.0 * nc,
        };
        // version 2 (rows grouped by token) on spread tokens and on a skewed stream (a quarter of the rows one
        // token, the rest from 64 ids: long runs), version 1 (one thread per channel) beside it
        foreach (var (tokens, label) in new[] { (Tokens(n, V), ""), (SkewedTokens(n, V), ", skewed tokens") })
        {
            yield return new OpCase
            {
                Family = "Embedding", Name = $"backward (v2: rows grouped by token{label})", Shape = $"{n} tokens, {V}×{C}",
                Inputs = () => new() { ["dwte"] = R(1, V, C), ["tok"] = Ints(tokens), ["dout"] = R(1, n, C) },
                Run = (o, t) => o.EmbeddingBackward(t["dwte"], t["tok"], t["dout"], n, C), Outputs = ["dwte"], Bytes = 12.0 * nc,
            };
            yield return new OpCase
            {
                Family = "Embedding", Name = $"backward (v1: one thread per channel{label})", Shape = $"{n} tokens, {V}×{C}",
                Inputs = () => new() { ["dwte"] = R(1, V, C), ["tok"] = Ints(tokens), ["dout"] = R(1, n, C) },
                Run = (o, t) =>
                {
                    if (o is NegDistill.Kernels.IlgpuBackend ib) ib.EmbeddingBackwardV1(t["dwte"], t["tok"], t["dout"], n, C);
                    else o.EmbeddingBackward(t["dwte"], t["tok"], t["dout"], n, C);
                },
                Outputs = ["dwte"], Bytes = 12.0 * nc,
            };
        }
        yield return new OpCase
        {
            Family = "RmsNorm", Name = "forward (v3: warp shuffles, float4)", Shape = rows,
            Inputs = () => new() { ["x"] = R(2, n, C), ["w"] = R(1, C), ["y"] = Out(n, C), ["rstd"] = Out(n) },
            Run = (o, t) => o.RmsNormForward(t["y"], t["rstd"], t["x"], t["w"], n, C, 1e-6f), Outputs = ["y", "rstd"], Poisoned = ["y", "rstd"],
            Flops = 4.0 * nc, Bytes = 8.0 * nc,
        };
        yield return new OpCase
        {
            Family = "RmsNorm", Name = "forward (v2: warp shuffles)", Shape = rows,
            Inputs = () => new() { ["x"] = R(2, n, C), ["w"] = R(1, C), ["y"] = Out(n, C), ["rstd"] = Out(n) },
            Run = (o, t) => StreamV1(o, true, () => o.RmsNormForward(t["y"], t["rstd"], t["x"], t["w"], n, C, 1e-6f)), Outputs = ["y", "rstd"], Poisoned = ["y", "rstd"],
            Flops = 4.0 * nc, Bytes = 8.0 * nc,
        };
        yield return new OpCase
        {
            Family = "RmsNorm", Name = "forward (v1: shared-memory tree)", Shape = rows,
            Inputs = () => new() { ["x"] = R(2, n, C), ["w"] = R(1, C), ["y"] = Out(n, C), ["rstd"] = Out(n) },
            Run = (o, t) => RowReduceV1(o, () => o.RmsNormForward(t["y"], t["rstd"], t["x"], t["w"], n, C, 1e-6f)), Outputs = ["y", "rstd"], Poisoned = ["y", "rstd"],
            Flops = 4.0 * nc, Bytes = 8.0 * nc,
        };
        yield return new OpCase
        {
            Family = "RmsNorm", Name = "backward (dw v2: blocks of 32 rows)", Shape = rows,
            Inputs = () => new() { ["x"] = R(2, n, C), ["w"] = R(1, C), ["rstd"] = Pos(n, 0.5f, 1.5f), ["dy"] = R(1, n, C), ["dx"] = R(1, n, C), ["dw"] = R(1, C) },
            Run = (o, t) => o.RmsNormBackward(t["dx"], t["dw"], t["dy"], t["x"], t["w"], t["rstd"], n, C), Outputs = ["dx", "dw"],
            Flops = 8.0 * nc, Bytes = 16.0 * nc,
        };
        yield return new OpCase
        {
            Family = "RmsNorm", Name = "backward (dw v1: one thread per column)", Shape = rows,
            Inputs = () => new() { ["x"] = R(2, n, C), ["w"] = R(1, C), ["rstd"] = Pos(n, 0.5f, 1.5f), ["dy"] = R(1, n, C), ["dx"] = R(1, n, C), ["dw"] = R(1, C) },
            Run = (o, t) =>
            {
                if (o is NegDistill.Kernels.IlgpuBackend ib) ib.RmsNormBackwardV1(t["dx"], t["dw"], t["dy"], t["x"], t["w"], t["rstd"], n, C);
                else o.RmsNormBackward(t["dx"], t["dw"], t["dy"], t["x"], t["w"], t["rstd"], n, C);
            },
            Outputs = ["dx", "dw"], Flops = 8.0 * nc, Bytes = 16.0 * nc,
        };
        yield return new OpCase
        {
            Family = "RmsNorm", Name = "backward, frozen weight (no dw; dx v3: warp shuffles, float4)", Shape = rows,
            Inputs = () => new() { ["x"] = R(2, n, C), ["w"] = R(1, C), ["rstd"] = Pos(n, 0.5f, 1.5f), ["dy"] = R(1, n, C), ["dx"] = R(1, n, C) },
            Run = (o, t) => o.RmsNormBackward(t["dx"], null, t["dy"], t["x"], t["w"], t["rstd"], n, C), Outputs = ["dx"],
            Flops = 6.0 * nc, Bytes = 12.0 * nc,
        };
        yield return new OpCase
        {
            Family = "RmsNorm", Name = "backward, frozen weight (dx v2: warp shuffles)", Shape = rows,
            Inputs = () => new() { ["x"] = R(2, n, C), ["w"] = R(1, C), ["rstd"] = Pos(n, 0.5f, 1.5f), ["dy"] = R(1, n, C), ["dx"] = R(1, n, C) },
            Run = (o, t) => StreamV1(o, true, () => o.RmsNormBackward(t["dx"], null, t["dy"], t["x"], t["w"], t["rstd"], n, C)), Outputs = ["dx"],
            Flops = 6.0 * nc, Bytes = 12.0 * nc,
        };
        yield return new OpCase
        {
            Family = "RmsNorm", Name = "backward, frozen weight (dx v1: shared-memory tree)", Shape = rows,
            Inputs = () => new() { ["x"] = R(2, n, C), ["w"] = R(1, C), ["rstd"] = Pos(n, 0.5f, 1.5f), ["dy"] = R(1, n, C), ["dx"] = R(1, n, C) },
            Run = (o, t) => RowReduceV1(o, () => o.RmsNormBackward(t["dx"], null, t["dy"], t["x"], t["w"], t["rstd"], n, C)), Outputs = ["dx"],
            Flops = 6.0 * nc, Bytes = 12.0 * nc,
        };
        foreach (bool inverse in new[] { false, true })
            yield return new OpCase
            {
                Family = "Rope", Name = inverse ? "backward (inverse rotation)" : "forward", Shape = $"{n}×{H}×{hd}",
                Inputs = () => new() { ["x"] = R(1, n, C), ["pos"] = Ints(Positions(n, T)) },
                Run = (o, t) => o.Rope(t["x"], t["pos"], n, H, hd, 10000f, inverse), Outputs = ["x"], Flops = 6.0 * nc, Bytes = 8.0 * nc,
            };
        var mask = KeyMask(B, T);
        double attFlops = 4.0 * B * H * T * (T + 1) / 2 * hd;    // QKᵀ and PV over the causal half
        yield return new OpCase
        {
            Family = "Attention", Name = "forward (flash)", Shape = $"{B}×{T}, {H}×{hd}",
            Inputs = () => new() { ["q"] = R(1, B, T, C), ["k"] = R(1, B, T, C), ["v"] = R(1, B, T, C), ["mask"] = new(DType.F32, [B, T], mask), ["out"] = Out(B, T, C), ["lse"] = Out(B, H, T) },
            Run = (o, t) => o.AttentionForward(t["out"], t["lse"], t["q"], t["k"], t["v"], t["mask"], B, T, H, hd),
            Outputs = ["out", "lse"], Poisoned = ["out", "lse"], Flops = attFlops, Bytes = 16.0 * nc,
            FiniteOnly = ["lse"],
        };
        yield return new OpCase
        {
            Family = "Attention", Name = "forward + backward (flash)", Shape = $"{B}×{T}, {H}×{hd}",
            Inputs = () => new()
            {
                ["q"] = R(1, B, T, C), ["k"] = R(1, B, T, C), ["v"] = R(1, B, T, C), ["mask"] = new(DType.F32, [B, T], mask), ["out"] = Out(B, T, C), ["lse"] = Out(B, H, T),
                ["dout"] = R(1, B, T, C), ["dq"] = R(1, B, T, C), ["dk"] = R(1, B, T, C), ["dv"] = R(1, B, T, C),
            },
            // the forward runs inside so that out and lse are this backend's own; the timing includes it
            // (forward + backward, as a training step runs them)
            Run = (o, t) =>
            {
                o.AttentionForward(t["out"], t["lse"], t["q"], t["k"], t["v"], t["mask"], B, T, H, hd);
                o.AttentionBackward(t["dq"], t["dk"], t["dv"], t["dout"], t["out"], t["lse"], t["q"], t["k"], t["v"], t["mask"], B, T, H, hd);
            },
            Outputs = ["dq", "dk", "dv"], Poisoned = ["out", "lse"], Flops = 3.5 * attFlops, Bytes = 48.0 * nc,
        };
        // version 1 beside it (per-row kernels keeping (B,H,T,T)), checked against the twin's out and gradients
        yield return new OpCase
        {
            Family = "Attention", Name = "forward + backward (v1, keeps P)", Shape = $"{B}×{T}, {H}×{hd}",
            Inputs = () => new()
            {
                ["q"] = R(1, B, T, C), ["k"] = R(1, B, T, C), ["v"] = R(1, B, T, C), ["mask"] = new(DType.F32, [B, T], mask), ["out"] = Out(B, T, C), ["lse"] = Out(B, H, T),
                ["att"] = Out(B, H, T, T), ["datt"] = Out(B, H, T, T), ["dout"] = R(1, B, T, C), ["dq"] = R(1, B, T, C), ["dk"] = R(1, B, T, C), ["dv"] = R(1, B, T, C),
            },
            Run = (o, t) =>
            {
                if (o is NegDistill.Kernels.IlgpuBackend ib)
                {
                    ib.AttentionForwardV1(t["out"], t["att"], t["q"], t["k"], t["v"], t["mask"], B, T, H, hd);
                    ib.AttentionBackwardV1(t["dq"], t["dk"], t["dv"], t["datt"], t["dout"], t["att"], t["q"], t["k"], t["v"], B, T, H, hd);
                }
                else   // the twin's one form is the reference
                {
                    o.AttentionForward(t["out"], t["lse"], t["q"], t["k"], t["v"], t["mask"], B, T, H, hd);
                    o.AttentionBackward(t["dq"], t["dk"], t["dv"], t["dout"], t["out"], t["lse"], t["q"], t["k"], t["v"], t["mask"], B, T, H, hd);
                }
            },
            Outputs = ["out", "dq", "dk", "dv"], Poisoned = ["out"], Flops = 3.5 * attFlops, Bytes = 48.0 * nc + 16.0 * B * H * T * T,
        };

        int r = s.DecodeRows, tmax = s.CacheLen;
        var map = Enumerable.Range(0, r).SelectMany(i => new[] { 0, 0, i * tmax }).ToArray();        // plain slots of tmax positions
        var pos = Enumerable.Range(0, r).Select(i => tmax / 2 + i % (tmax / 2)).ToArray();   // mid-generation, ragged
        // every row's first tmax/4 positions in one shared prompt after the rows' own slots
        int plen = tmax / 4;
        var sharedMap = Enumerable.Range(0, r).SelectMany(i => new[] { r * tmax, plen, i * tmax }).ToArray();
        foreach (var (dt, bytes) in new[] { (DType.F32, 4.0), (DType.BF16, 2.0) })
        {
            HostTensor Cache() => new(dt, [r * tmax + plen, C], Rand((long)(r * tmax + plen) * C, 1f));
            string kind = dt == DType.F32 ? "F32 cache, v1" : "BF16 cache, v2 flash decoding";
            yield return new OpCase
            {
                Family = "KvCache", Name = $"write ({kind})", Shape = $"{r} rows into {r}×{tmax}×{C}",
                Inputs = () => new() { ["kc"] = Cache(), ["vc"] = Cache(), ["k"] = R(1, r, C), ["v"] = R(1, r, C), ["map"] = Ints(map), ["pos"] = Ints(pos) },
                Run = (o, t) => o.CacheWrite(t["kc"], t["vc"], t["k"], t["v"], t["map"], t["pos"], r, C), Outputs = ["kc", "vc"], Bytes = (8.0 + 2 * bytes) * r * C,
            };
            foreach (var (m, label) in new[] { (map, ""), (sharedMap, ", shared prompt") })
                yield return new OpCase
                {
                    Family = "KvCache", Name = $"attention (decode, {kind}{label})", Shape = $"{r} rows over {r}×{tmax}×{C}",
                    Inputs = () => new() { ["kc"] = Cache(), ["vc"] = Cache(), ["q"] = R(1, r, C), ["out"] = Out(r, C), ["map"] = Ints(m), ["pos"] = Ints(pos) },
                    Run = (o, t) => o.CachedAttention(t["out"], t["q"], t["kc"], t["vc"], t["map"], t["pos"], r, tmax, H, hd), Outputs = ["out"], Poisoned = ["out"],
                    Flops = 4.0 * pos.Sum(p => (double)p + 1) * C, Bytes = 2 * bytes * pos.Sum(p => (double)p + 1) * C,
                };
        }
        yield return new OpCase
        {
            Family = "KvCache", Name = "gather rows", Shape = $"{r} of {n}×{C}",
            Inputs = () => new() { ["src"] = R(1, n, C), ["rows"] = Ints(Enumerable.Range(0, r).Select(i => (i * 7919) % n).ToArray()), ["dst"] = Out(r, C) },
            Run = (o, t) => o.GatherRows(t["dst"], t["src"], t["rows"], r, C), Outputs = ["dst"], Poisoned = ["dst"], Bytes = 8.0 * r * C,
        };
        // version 2 (lanes, radix select) is what SampleRows runs; version 1 (blocks, bisection) beside it
        // against its own twin (CpuBackend.SampleRowsV1), both bit-checkable on tokens
        foreach (bool v1 in new[] { false, true })
            foreach (var (temp, topK, topP, label) in new[] { (0f, 0, 1f, "greedy"), (0.7f, 0, 0.95f, "T 0.7, top-p 0.95"), (0.7f, 40, 0.95f, "T 0.7, top-k 40, top-p 0.95") })
                yield return new OpCase
                {
                    Family = "Sampling", Name = v1 ? $"{label} (v1, blocks + bisection)" : $"{label} (v2, lanes + radix)", Shape = $"{r}×{V}",
                    Inputs = () => new()
                    {
                        ["z"] = R(4, r, V), ["tok"] = new(DType.I32, [r], I: new int[r]), ["lp"] = Out(r),
                        ["seed"] = Ints(Enumerable.Range(0, 2 * r).Select(i => i * 2654435 + 17).ToArray()), ["ctr"] = Ints(Enumerable.Range(0, r).ToArray()),
                    },
                    Run = (o, t) =>
                    {
                        if (!v1) o.SampleRows(t["z"], t["tok"], t["lp"], t["seed"], t["ctr"], r, V, temp, topK, topP);
                        else if (o is NegDistill.Kernels.IlgpuBackend ib) ib.SampleRowsV1(t["z"], t["tok"], t["lp"], t["seed"], t["ctr"], r, V, temp, topK, topP);
                        else ((CpuBackend<float>)o).SampleRowsV1(t["z"], t["tok"], t["lp"], t["seed"], t["ctr"], r, V, temp, topK, topP);
                    },
                    Outputs = ["lp"], Poisoned = ["lp"], ExactInts = ["tok"], Bytes = 4.0 * r * V,
                };
        // greedy at decode batch 1 and at the full batch, the row on one group against split over 16
        foreach (var (gr, split) in new[] { (1, 1), (1, 16), (r, 1), (r, 16) })
            yield return new OpCase
            {
                Family = "Sampling", Name = $"greedy (v2, {(split == 1 ? "one group per row" : $"a row split over {split} groups")})", Shape = $"{gr}×{V}",
                Inputs = () => new()
                {
                    ["z"] = R(4, gr, V), ["tok"] = new(DType.I32, [gr], I: new int[gr]), ["lp"] = Out(gr),
                    ["seed"] = Ints(new int[2 * gr]), ["ctr"] = Ints(new int[gr]),
                },
                Run = (o, t) =>
                {
                    if (o is NegDistill.Kernels.IlgpuBackend ib) ib.SampleRowsV2(t["z"], t["tok"], t["lp"], t["seed"], t["ctr"], gr, V, 0f, 0, 1f, 0, 0, split);
                    else o.SampleRows(t["z"], t["tok"], t["lp"], t["seed"], t["ctr"], gr, V, 0f, 0, 1f);
                },
                Outputs = ["lp"], Poisoned = ["lp"], ExactInts = ["tok"], Bytes = 4.0 * gr * V,
            };
        // version 2 (four floats per thread, 128-bit loads) and version 1 (one float per thread) of each streaming kernel
        foreach (var (v1, label) in new[] { (false, "v2: float4"), (true, "v1: one float per thread") })
        {
            yield return new OpCase
            {
                Family = "SwiGlu", Name = $"forward ({label})", Shape = $"{n}×{F}",
                Inputs = () => new() { ["g"] = R(4, n, F), ["u"] = R(1, n, F), ["h"] = Out(n, F) },
                Run = (o, t) => StreamV1(o, v1, () => o.SwiGluForward(t["h"], t["g"], t["u"], nf)), Outputs = ["h"], Poisoned = ["h"], Flops = 5.0 * nf, Bytes = 12.0 * nf,
            };
            yield return new OpCase
            {
                Family = "SwiGlu", Name = $"backward ({label})", Shape = $"{n}×{F}",
                Inputs = () => new() { ["g"] = R(4, n, F), ["u"] = R(1, n, F), ["dh"] = R(1, n, F), ["dg"] = R(1, n, F), ["du"] = R(1, n, F) },
                Run = (o, t) => StreamV1(o, v1, () => o.SwiGluBackward(t["dg"], t["du"], t["dh"], t["g"], t["u"], nf)), Outputs = ["dg", "du"], Flops = 10.0 * nf, Bytes = 28.0 * nf,
            };
        }
        foreach (var (v1, label) in new[] { (false, "v2: float4"), (true, "v1: one float per thread") })
        {
            yield return new OpCase
            {
                Family = "Dropout", Name = $"forward ({label})", Shape = rows,
                Inputs = () => new() { ["x"] = R(1, n, C), ["y"] = Out(n, C) },
                Run = (o, t) => StreamV1(o, v1, () => o.DropoutForward(t["y"], t["x"], 0.05f, 1234, nc)), Outputs = ["y"], Poisoned = ["y"], Bytes = 8.0 * nc,
            };
            yield return new OpCase
            {
                Family = "Dropout", Name = $"backward ({label})", Shape = rows,
                Inputs = () => new() { ["dy"] = R(1, n, C), ["dx"] = R(1, n, C) },
                Run = (o, t) => StreamV1(o, v1, () => o.DropoutBackward(t["dx"], t["dy"], 0.05f, 1234, nc)), Outputs = ["dx"], Bytes = 12.0 * nc,
            };
        }
        var targets = Targets(n, V);
        // version 3 needs V a multiple of 4: 32,000 is; the tiny vocabulary (70) is not and runs version 2 there
        yield return new OpCase
        {
            Family = "CrossEntropy", Name = "fused loss + gradient (v3: warp shuffles, float4)", Shape = $"{n}×{V}",
            Inputs = () => new() { ["z"] = R(4, n, V), ["loss"] = Out(n), ["y"] = Ints(targets) },
            Run = (o, t) => o.CrossEntropyFused(t["z"], t["loss"], t["y"], n, V, 1.0 / n, true), Outputs = ["z", "loss"], Poisoned = ["loss"],
            Flops = 5.0 * nv, Bytes = 8.0 * nv,
        };
        yield return new OpCase
        {
            Family = "CrossEntropy", Name = "fused loss + gradient (v2: warp shuffles)", Shape = $"{n}×{V}",
            Inputs = () => new() { ["z"] = R(4, n, V), ["loss"] = Out(n), ["y"] = Ints(targets) },
            Run = (o, t) => StreamV1(o, true, () => o.CrossEntropyFused(t["z"], t["loss"], t["y"], n, V, 1.0 / n, true)), Outputs = ["z", "loss"], Poisoned = ["loss"],
            Flops = 5.0 * nv, Bytes = 8.0 * nv,
        };
        yield return new OpCase
        {
            Family = "CrossEntropy", Name = "fused loss + gradient (v1: shared-memory trees)", Shape = $"{n}×{V}",
            Inputs = () => new() { ["z"] = R(4, n, V), ["loss"] = Out(n), ["y"] = Ints(targets) },
            Run = (o, t) => RowReduceV1(o, () => o.CrossEntropyFused(t["z"], t["loss"], t["y"], n, V, 1.0 / n, true)), Outputs = ["z", "loss"], Poisoned = ["loss"],
            Flops = 5.0 * nv, Bytes = 8.0 * nv,
        };
        yield return new OpCase
        {
            Family = "Nce", Name = "KL(p_neg ‖ p_nat) per row (v3: warp shuffles, float4)", Shape = $"{n}×{V}",
            Inputs = () => new() { ["zn"] = R(4, n, V), ["zg"] = R(4, n, V), ["kl"] = Out(n) },
            Run = (o, t) => o.NceKl(t["zn"], t["zg"], t["kl"], n, V, 1f), Outputs = ["kl"], Poisoned = ["kl"], Flops = 10.0 * nv, Bytes = 8.0 * nv,
        };
        yield return new OpCase
        {
            Family = "Nce", Name = "KL(p_neg ‖ p_nat) per row (v2: warp shuffles)", Shape = $"{n}×{V}",
            Inputs = () => new() { ["zn"] = R(4, n, V), ["zg"] = R(4, n, V), ["kl"] = Out(n) },
            Run = (o, t) => StreamV1(o, true, () => o.NceKl(t["zn"], t["zg"], t["kl"], n, V, 1f)), Outputs = ["kl"], Poisoned = ["kl"], Flops = 10.0 * nv, Bytes = 8.0 * nv,
        };
        yield return new OpCase
        {
            Family = "Nce", Name = "KL(p_neg ‖ p_nat) per row (v1: shared-memory trees)", Shape = $"{n}×{V}",
            Inputs = () => new() { ["zn"] = R(4, n, V), ["zg"] = R(4, n, V), ["kl"] = Out(n) },
            Run = (o, t) => RowReduceV1(o, () => o.NceKl(t["zn"], t["zg"], t["kl"], n, V, 1f)), Outputs = ["kl"], Poisoned = ["kl"], Flops = 10.0 * nv, Bytes = 8.0 * nv,
        };
        yield return new OpCase
        {
            Family = "Nce", Name = "fused distillation + gradient (v3: warp shuffles, float4)", Shape = $"{n}×{V}",
            Inputs = () => new() { ["zs"] = R(4, n, V), ["zn"] = R(4, n, V), ["y"] = Ints(targets), ["w"] = Pos(n, 0.5f, 1.5f), ["ce"] = Out(n), ["kd"] = Out(n) },
            Run = (o, t) => o.NceDistillFused(t["zs"], t["zn"], t["y"], t["w"], t["ce"], t["kd"], n, V, 1f, 0.5f, 1.0 / n, 1.0 / n, true),
            Outputs = ["zs", "ce", "kd"], Poisoned = ["ce", "kd"], Flops = 12.0 * nv, Bytes = 12.0 * nv,
        };
        yield return new OpCase
        {
            Family = "Nce", Name = "fused distillation + gradient (v2: warp shuffles)", Shape = $"{n}×{V}",
            Inputs = () => new() { ["zs"] = R(4, n, V), ["zn"] = R(4, n, V), ["y"] = Ints(targets), ["w"] = Pos(n, 0.5f, 1.5f), ["ce"] = Out(n), ["kd"] = Out(n) },
            Run = (o, t) => StreamV1(o, true, () => o.NceDistillFused(t["zs"], t["zn"], t["y"], t["w"], t["ce"], t["kd"], n, V, 1f, 0.5f, 1.0 / n, 1.0 / n, true)),
            Outputs = ["zs", "ce", "kd"], Poisoned = ["ce", "kd"], Flops = 12.0 * nv, Bytes = 12.0 * nv,
        };
        yield return new OpCase
        {
            Family = "Nce", Name = "fused distillation + gradient (v1: shared-memory trees)", Shape = $"{n}×{V}",
            Inputs = () => new() { ["zs"] = R(4, n, V), ["zn"] = R(4, n, V), ["y"] = Ints(targets), ["w"] = Pos(n, 0.5f, 1.5f), ["ce"] = Out(n), ["kd"] = Out(n) },
            Run = (o, t) => RowReduceV1(o, () => o.NceDistillFused(t["zs"], t["zn"], t["y"], t["w"], t["ce"], t["kd"], n, V, 1f, 0.5f, 1.0 / n, 1.0 / n, true)),
            Outputs = ["zs", "ce", "kd"], Poisoned = ["ce", "kd"], Flops = 12.0 * nv, Bytes = 12.0 * nv,
        };
        long lp = 2L * 32 * (s.LoraRank * (long)C * 2);   // LoRA q/v of every layer, as many values as 7B's
        if (s.Label == "tiny") lp = 1000;
        foreach (var (v1, label) in new[] { (false, "v2: float4"), (true, "v1: one float per thread") })
            yield return new OpCase
            {
                Family = "AdamW", Name = $"step ({label})", Shape = $"{lp} values",
                Inputs = () => new() { ["p"] = R(1, (int)lp), ["g"] = R(1, (int)lp), ["m"] = R(0.1f, (int)lp), ["v"] = Pos((int)lp, 0f, 0.01f) },
                Run = (o, t) => StreamV1(o, v1, () => o.AdamW(t["p"], t["g"], t["m"], t["v"], lp, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, 3)), Outputs = ["p", "m", "v"],
                Flops = 12.0 * lp, Bytes = 28.0 * lp,
            };
        int d = s.Label == "tiny" ? 8 : 128;
        long nd = (long)n * d;
        foreach (var (v1, label) in new[] { (false, "v2: warp shuffles"), (true, "v1: shared-memory trees") })
        {
            yield return new OpCase
            {
                Family = "Integration", Name = $"forward ({label})", Shape = $"{n}×{d}",
                Inputs = () => new() { ["q"] = R(1, n, d), ["kp"] = R(1, n, d), ["kn"] = R(1, n, d), ["up"] = R(2, n, d), ["un"] = R(2, n, d), ["mix"] = Out(n, d), ["a"] = Out(n) },
                Run = (o, t) => RowReduce(o, v1, () => o.IntegrationForward(t["mix"], t["a"], t["q"], t["kp"], t["kn"], t["up"], t["un"], n, d, 0.5f, 1f)), Outputs = ["mix", "a"], Poisoned = ["mix", "a"],
                Flops = 20.0 * nd, Bytes = 24.0 * nd,
            };
            yield return new OpCase
            {
                Family = "Integration", Name = $"backward ({label})", Shape = $"{n}×{d}",
                Inputs = () => new()
                {
                    ["q"] = R(1, n, d), ["kp"] = R(1, n, d), ["kn"] = R(1, n, d), ["up"] = R(2, n, d), ["un"] = R(2, n, d), ["a"] = Pos(n, 0.1f, 0.9f), ["dmix"] = R(1, n, d),
                    ["dq"] = R(1, n, d), ["dkp"] = R(1, n, d), ["dkn"] = R(1, n, d), ["dup"] = R(1, n, d), ["dun"] = R(1, n, d),
                },
                Run = (o, t) => RowReduce(o, v1, () => o.IntegrationBackward(t["dq"], t["dkp"], t["dkn"], t["dup"], t["dun"], t["dmix"], t["q"], t["kp"], t["kn"], t["up"], t["un"], t["a"], n, d, 0.5f, 1f)),
                Outputs = ["dq", "dkp", "dkn", "dup", "dun"], Flops = 40.0 * nd, Bytes = 68.0 * nd,
            };
        }
        long ne = s.Label == "tiny" ? 1000 : 1L << 24;
        // the scale runs over ne − 1 values: version 2 falls back to version 1 there (odd length)
        foreach (var (v1, label) in new[] { (false, "v2: float4"), (true, "v1: one float per thread") })
            yield return new OpCase
            {
                Family = "Elementwise", Name = $"axpy + scale + fill ({label})", Shape = $"{ne} values",
                Inputs = () => new() { ["y"] = R(1, (int)ne), ["x"] = R(1, (int)ne), ["f"] = Out((int)ne) },
                Run = (o, t) => StreamV1(o, v1, () => { o.Axpy(t["y"], t["x"], 0.5f, ne); o.Scale(t["y"], 2f, ne - 1); o.Fill(t["f"], 3f); }), Outputs = ["y", "f"], Poisoned = ["f"],
                Flops = 3.0 * ne, Bytes = 24.0 * ne,
            };
        foreach (var (v1, label) in new[] { (false, "v2: warp shuffles"), (true, "v1: shared-memory trees") })
            yield return new OpCase
            {
                Family = "Elementwise", Name = $"Σx, Σx², non-finite scan ({label})", Shape = $"{ne} values",
                Inputs = () => new() { ["x"] = R(1, (int)ne), ["sums"] = Out(3) },
                // the three reductions return doubles; they are written into a tensor so that the
                // comparison machinery sees them like any output
                Run = (o, t) => RowReduce(o, v1, () =>
                {
                    double a = o.Sum(t["x"], ne), b = o.SumSquares(t["x"], ne), c = o.HasNonFinite(t["x"], ne) ? 1 : 0;
                    o.Upload(t["sums"], new[] { (float)a, (float)b, (float)c });
                }),
                Outputs = ["sums"], Poisoned = ["sums"], Flops = 3.0 * ne, Bytes = 12.0 * ne,
            };
        long nw = s.Label == "tiny" ? 1000 : (long)F * C;
        yield return new OpCase
        {
            Family = "Elementwise", Name = "FillNormal (random BF16 weights)", Shape = $"{nw} values",
            Inputs = () => new() { ["w"] = new(DType.BF16, [(int)nw]) },
            Run = (o, t) => o.FillNormal(t["w"], 0.02f, 99), Outputs = ["w"], Tolerance = 1e-3, Bytes = 2.0 * nw,
        };
    }

    /// <summary>The GEMMs of a LoRA step and of decoding at these shapes (y = x·Wᵀ with frozen BF16 W; the
    /// backward's dx = dy·W; LoRA's skinny F32 products; the LM head), plus a square one.</summary>
    static IEnumerable<OpCase> MatMuls(Shapes s, MatMulTolerance tol)
    {
        int n = s.Rows, C = s.Dim, F = s.Ffn, V = s.Vocab, r = s.LoraRank, dr = s.DecodeRows;
        var list = new List<(string name, int m, int nn, int k, bool ta, bool tb, bool bf16, float beta)>
        {
            ("x·Wᵀ (q/k/v/o)", n, C, C, false, true, true, 0f),
            ("x·Wᵀ (gate/up)", n, F, C, false, true, true, 0f),
            ("x·Wᵀ (down)", n, C, F, false, true, true, 0f),
            ("dx = dy·W (gate/up), accumulate", n, C, F, false, false, true, 1f),
            ("dx = dy·W (down)", n, F, C, false, false, true, 0f),
            ("LM head x·Wᵀ", n, V, C, false, true, true, 0f),
            ("LoRA x·Aᵀ", n, r, C, false, true, false, 0f),
            ("LoRA xa·Bᵀ, accumulate", n, C, r, false, true, false, 1f),
            ("LoRA dA = dxaᵀ·x", r, C, n, true, false, false, 1f),
            ("LoRA dB = dyᵀ·xa", C, r, n, true, false, false, 1f),
            ("decode x·Wᵀ", dr, C, C, false, true, true, 0f),
            ("decode LM head", dr, V, C, false, true, true, 0f),
            ("square, F32 B", C, C, C, false, true, false, 0f),
            ("square, BF16 B", C, C, C, false, true, true, 0f),
        };
        foreach (var (name, m, nn, k, ta, tb, bf16, beta) in list)
        {
            double bytes = 4.0 * m * k + (bf16 ? 2.0 : 4.0) * nn * k + (beta != 0 ? 8.0 : 4.0) * m * nn;
            yield return new OpCase
            {
                Family = "MatMul", Name = $"{name} {(ta ? "T" : "N")}{(tb ? "T" : "N")}", Shape = $"{m}×{nn}×{k}",
                Inputs = () => new()
                {
                    ["a"] = R(1, ta ? new[] { k, m } : new[] { m, k }),
                    ["b"] = bf16 ? W16(0.05f, tb ? new[] { nn, k } : new[] { k, nn }) : R(0.05f, tb ? new[] { nn, k } : new[] { k, nn }),
                    ["c"] = R(1, m, nn),
                },
                Run = (o, t) => o.MatMul(t["c"], t["a"], t["b"], m, nn, k, ta, tb, 1f, beta),
                Outputs = ["c"], Poisoned = beta == 0 ? ["c"] : [], Tolerance = bf16 ? tol.Bf16B : tol.F32B,
                Flops = 2.0 * m * nn * k, Bytes = bytes,
            };
        }
    }

    static int[] Tokens(int n, int v) => Enumerable.Range(0, n).Select(i => (int)(CounterRng.Hash(3, (ulong)i) % (ulong)v)).ToArray();
    /// <summary>Runs <paramref name="run"/> at group reduction version 1 when <paramref name="v1"/>, else as it is.</summary>
    static void RowReduce(IBackend o, bool v1, Action run)
    {
        if (v1) RowReduceV1(o, run); else run();
    }

    /// <summary>Runs <paramref name="run"/> with the per-row kernels' group reductions at version 1 (shared-memory
    /// tree) on the kernels backend; the twin has one form.</summary>
    static void RowReduceV1(IBackend o, Action run)
    {
        if (o is not NegDistill.Kernels.IlgpuBackend ib) { run(); return; }
        var old = ib.RowReduceVersion;
        ib.RowReduceVersion = NegDistill.Kernels.GroupReduce.Version.V1Tree;
        try { run(); } finally { ib.RowReduceVersion = old; }
    }

    /// <summary>Runs <paramref name="run"/> with the streaming kernels at version 1 (one float per thread) on the
    /// kernels backend when <paramref name="v1"/>; else as configured (version 2 by default).</summary>
    static void StreamV1(IBackend o, bool v1, Action run)
    {
        if (!v1 || o is not NegDistill.Kernels.IlgpuBackend ib) { run(); return; }
        var old = ib.StreamVersion;
        ib.StreamVersion = NegDistill.Kernels.Wide.Version.V1Scalar;
        try { run(); } finally { ib.StreamVersion = old; }
    }

    static int[] SkewedTokens(int n, int v) => Enumerable.Range(0, n)
        .Select(i => i % 4 == 1 ? 2 % v : (int)(CounterRng.Hash(5, (ulong)i) % (ulong)Math.Min(64, v))).ToArray();
    static int[] Positions(int n, int t) => Enumerable.Range(0, n).Select(i => i % t).ToArray();
    static int[] Targets(int n, int v) => Enumerable.Range(0, n).Select(i => i % 17 == 5 ? -1 : (int)(CounterRng.Hash(4, (ulong)i) % (ulong)v)).ToArray();
    static HostTensor Pos(int n, float lo, float hi) => new(DType.F32, [n], Rand(n, 1f).Select(x => lo + (hi - lo) * (x + 1f) / 2f).ToArray());

    /// <summary>Sequence b is left-padded by b mod 3 tokens: padding and fully visible rows both appear.</summary>
    static float[] KeyMask(int b, int t)
    {
        var m = new float[b * t];
        for (int i = 0; i < b; i++) for (int j = 0; j < t; j++) m[i * t + j] = j < i % 3 ? 0f : 1f;
        return m;
    }
}
