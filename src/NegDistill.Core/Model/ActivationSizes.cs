using NegDistill.Runtime;

namespace NegDistill.Model;

/// <summary>One buffer: its name (the allocation's label), element type and shape.</summary>
public readonly record struct BufferSpec(string Name, DType Type, params long[] Shape)
{
    public long Elements => Shape.Aggregate(1L, (a, d) => a * d);
    public long Bytes => Elements * (Type is DType.F16 or DType.BF16 ? 2 : 4);
    public int[] Dims => Shape.Select(d => checked((int)d)).ToArray();
}

/// <summary>
/// Every activation and row buffer of the decoder, the KV cache, the adapters and the NCE head, with
/// its shape, in one table (llm.c's <c>act_sizes</c>): the allocating code takes its buffers from
/// here by name and <see cref="MemoryPlan"/> adds the same entries up, so a plan cannot drift from
/// what is allocated (tests also check plans against the CPU backend's peak bytes). Shapes: N = B·T
/// rows, C = Dim, F = FfnDim, V = Vocab, H heads; R rows per KV-cache forward; D the NAT unit width.
/// </summary>
public static class ActivationSizes
{
    const DType F32 = DType.F32, I32 = DType.I32;

    /// <summary>One layer's forward activations, kept for the backward (L sets, or 1 when recomputing).</summary>
    public static BufferSpec[] Layer(LlamaConfig c, int b, int t)
    {
        long n = (long)b * t, C = c.Dim, F = c.FfnDim;
        return
        [
            new("xn1", F32, n, C), new("rstd1", F32, n), new("q", F32, n, C), new("k", F32, n, C), new("v", F32, n, C),
            new("lse", F32, b, c.Heads, t), new("ao", F32, n, C), new("x2", F32, n, C), new("xn2", F32, n, C), new("rstd2", F32, n),
            new("g", F32, n, F), new("u", F32, n, F), new("h", F32, n, F),
        ];
    }

    /// <summary>The residual stream at each layer's input and after the last: (L+1) × (N,C).</summary>
    public static BufferSpec[] Residual(LlamaConfig c, int b, int t) =>
        Enumerable.Range(0, c.Layers + 1).Select(i => new BufferSpec($"x{i}", F32, (long)b * t, c.Dim)).ToArray();

    /// <summary>Rows of logits held at once: the LM head runs over row chunks of this many rows.</summary>
    public static int ChunkRows(LlamaConfig c, int b, int t, long logitsBudget) => (int)Math.Max(1, Math.Min((long)b * t, logitsBudget / c.Vocab));

    /// <summary>Backward scratch, the final norm's output and one logits chunk.</summary>
    public static BufferSpec[] Scratch(LlamaConfig c, int b, int t, int chunkRows)
    {
        long n = (long)b * t, C = c.Dim, F = c.FfnDim;
        return
        [
            new("dres", F32, n, C), new("dx2", F32, n, C), new("dxn", F32, n, C), new("dq", F32, n, C), new("dk", F32, n, C), new("dv", F32, n, C),
            new("dao", F32, n, C), new("dh", F32, n, F), new("dg", F32, n, F), new("du", F32, n, F),
            new("xf", F32, n, C), new("rstdf", F32, n), new("dxf", F32, n, C), new("logits", F32, chunkRows, c.Vocab), new("losses", F32, n),
        ];
    }

    /// <summary>A batch on the device: token ids, positions, mask, targets.</summary>
    public static BufferSpec[] Inputs(int b, int t)
    {
        long n = (long)b * t;
        return [new("tokens", I32, n), new("pos", I32, n), new("mask", F32, n), new("targets", I32, n)];
    }

    /// <summary>K and V of every cached position, per layer a pool (P, C), in <paramref name="cache"/> (F32, BF16 or F16).</summary>
    public static BufferSpec[] KvCache(LlamaConfig c, long rows, DType cache = F32)
    {
        if (cache is not (F32 or DType.BF16 or DType.F16))
            throw new ArgumentOutOfRangeException(nameof(cache), cache, "a KV cache is F32, BF16 or F16");
        return Enumerable.Range(0, c.Layers).SelectMany(l => new BufferSpec[] { new($"kv.k{l}", cache, rows, c.Dim), new($"kv.v{l}", cache, rows, c.Dim) }).ToArray();
    }

    /// <summary>The KV-cache forward's row buffers and the sampler's I/O, for up to R rows per call.</summary>
    public static BufferSpec[] KvRows(LlamaConfig c, int rows)
    {
        long r = rows, C = c.Dim, F = c.FfnDim;
        return
        [
            new("kv.x", F32, r, C), new("kv.xn", F32, r, C), new("kv.q", F32, r, C), new("kv.kr", F32, r, C), new("kv.vr", F32, r, C),
            new("kv.ao", F32, r, C), new("kv.tmp", F32, r, C), new("kv.rstd", F32, r),
            new("kv.g", F32, r, F), new("kv.u", F32, r, F), new("kv.h", F32, r, F), new("kv.logits", F32, r, c.Vocab),
            new("kv.tokens", I32, r), new("kv.map", I32, r, 3), new("kv.pos", I32, r), new("kv.logitrows", I32, r),
            new("kv.sampled", I32, r), new("kv.sampled.lp", F32, r), new("kv.seed", I32, r, 2), new("kv.counter", I32, r),
        ];
    }

    /// <summary>A LoRA's forward rows: xa = drop(x)·Aᵀ, and drop(x) itself only while dropout is on.</summary>
    public static BufferSpec[] LoraForward(int n, int inFeatures, int rank, bool dropout) =>
        dropout ? [new("xa", F32, n, rank), new("xd", F32, n, inFeatures)] : [new("xa", F32, n, rank)];

    /// <summary>A LoRA's backward rows: dxa and dxd.</summary>
    public static BufferSpec[] LoraBackward(int n, int inFeatures, int rank) => [new("dxa", F32, n, rank), new("dxd", F32, n, inFeatures)];

    /// <summary>NAT's forward rows: h_pos | h_neg (2N,out), q (N,D), k and u (2N,D), mix (N,D), a_neg (N).</summary>
    public static BufferSpec[] NatForward(int n, int outFeatures, int d) =>
        [new("h", F32, 2L * n, outFeatures), new("q", F32, n, d), new("k", F32, 2L * n, d), new("u", F32, 2L * n, d), new("mix", F32, n, d), new("a_neg", F32, n)];

    /// <summary>NAT's backward rows: dmix, dq (N,D), dk and du (2N,D), dh (2N,out).</summary>
    public static BufferSpec[] NatBackward(int n, int outFeatures, int d) =>
        [new("dmix", F32, n, d), new("dq", F32, n, d), new("dk", F32, 2L * n, d), new("du", F32, 2L * n, d), new("dh", F32, 2L * n, outFeatures)];

    /// <summary>The NCE head's logits chunks of the two teachers and its four per-row terms.</summary>
    public static BufferSpec[] NceHead(int n, int chunkRows, int vocab) =>
        [new("nce.z_nat", F32, chunkRows, vocab), new("nce.z_neg", F32, chunkRows, vocab), new("nce.kl", F32, n), new("nce.row_weight", F32, n), new("nce.loss_ce", F32, n), new("nce.loss_kd", F32, n)];

    /// <summary>A teacher's hidden states, copied for the NCE head (N,C).</summary>
    public static BufferSpec TeacherHidden(int n, int dim) => new("teacher.hidden", F32, n, dim);

    public static long Bytes(IEnumerable<BufferSpec> buffers) => buffers.Sum(b => b.Bytes);

    public static Tensor Alloc(IBackend ops, string prefix, BufferSpec b) => ops.Alloc(prefix + b.Name, b.Type, b.Dims);

    /// <summary>Allocates <paramref name="buffers"/> on <paramref name="ops"/>, labelled prefix + name, by name.</summary>
    public static Dictionary<string, Tensor> Alloc(IBackend ops, string prefix, IEnumerable<BufferSpec> buffers) =>
        buffers.ToDictionary(b => b.Name, b => Alloc(ops, prefix, b));
}
