using NegDistill.Runtime;

namespace NegDistill.Model;

/// <summary>
/// The state of batched decoding on one backend: per layer, K and V of every slot's tokens, (S, Tmax, C)
/// each in F32 or, at half the bytes, BF16/F16 (<see cref="CacheType"/>) (slot s holds one sequence; position t of it at row s·Tmax + t), and the row buffers of
/// <see cref="LlamaModel.ForwardRows"/>, sized to <see cref="MaxRows"/> rows and separate from the
/// model's training activations, so that inference never reallocates or disturbs them.
/// Memory: 2·L·S·Tmax·C·e bytes of cache, e = 4 (F32) or 2 (LLaMA-7b, 16 slots of 512 positions: 8.6 GB in
/// F32, 4.3 GB in BF16) plus
/// MaxRows·(7C + 1 + 3F + V + 9)·4 bytes of rows; <see cref="MemoryPlan.ForSampling"/> adds it up.
/// </summary>
public sealed class KvCache : IDisposable
{
    public KvCache(LlamaModel model, int slots, int maxSeq, int maxRows, DType cache = DType.F32)
    {
        var cfg = model.Config;
        if (slots < 1) throw new ArgumentOutOfRangeException(nameof(slots), slots, "a KV cache needs at least one slot");
        if (maxSeq < 1 || maxSeq > cfg.MaxSeq)
            throw new ArgumentOutOfRangeException(nameof(maxSeq), maxSeq, $"cache length must be in [1, {cfg.MaxSeq}] (the model's max_position_embeddings)");
        if (maxRows < 1) throw new ArgumentOutOfRangeException(nameof(maxRows), maxRows, "at least one row per forward");
        (Model, Slots, MaxSeq, MaxRows, CacheType) = (model, slots, maxSeq, maxRows, cache);
        var o = model.Ops;
        var kv = ActivationSizes.Alloc(o, "", ActivationSizes.KvCache(cfg, slots, maxSeq, cache));
        K = Enumerable.Range(0, cfg.Layers).Select(l => kv[$"kv.k{l}"]).ToArray();
        V = Enumerable.Range(0, cfg.Layers).Select(l => kv[$"kv.v{l}"]).ToArray();
        var r = ActivationSizes.Alloc(o, "", ActivationSizes.KvRows(cfg, maxRows));
        (X, Xn, Q, Kr, Vr, Ao, Tmp, Rstd) = (r["kv.x"], r["kv.xn"], r["kv.q"], r["kv.kr"], r["kv.vr"], r["kv.ao"], r["kv.tmp"], r["kv.rstd"]);
        (G, U, Hh, Logits) = (r["kv.g"], r["kv.u"], r["kv.h"], r["kv.logits"]);
        (Tokens, RowSlot, RowPos, LogitRows) = (r["kv.tokens"], r["kv.slot"], r["kv.pos"], r["kv.logitrows"]);
        (Sampled, SampledLogProb, RowSeed, RowCounter) = (r["kv.sampled"], r["kv.sampled.lp"], r["kv.seed"], r["kv.counter"]);
        foreach (var a in model.Adapters.Values) a.Reserve(maxRows, training: false);   // adapters' row buffers, once
    }

    public LlamaModel Model { get; }
    public int Slots { get; }
    /// <summary>Tmax: positions per slot.</summary>
    public int MaxSeq { get; }
    /// <summary>Most rows one <see cref="LlamaModel.ForwardRows"/> call takes.</summary>
    public int MaxRows { get; }
    /// <summary>F32, BF16 or F16: the element type K and V are kept in.</summary>
    public DType CacheType { get; }
    /// <summary>Per layer (S, Tmax, C).</summary>
    public Tensor[] K { get; }
    public Tensor[] V { get; }

    // row buffers (MaxRows, ·)
    internal Tensor X, Xn, Q, Kr, Vr, Ao, Tmp, Rstd, G, U, Hh, Logits;
    internal Tensor Tokens, RowSlot, RowPos, LogitRows;
    /// <summary>Sampling I/O of <see cref="IBackend.SampleRows"/>: tokens and log-probabilities out, seeds
    /// (MaxRows, 2) and counters in.</summary>
    public Tensor Sampled { get; }
    public Tensor SampledLogProb { get; }
    public Tensor RowSeed { get; }
    public Tensor RowCounter { get; }

    public long Bytes => K.Sum(t => t.Bytes) + V.Sum(t => t.Bytes);

    public void Dispose()
    {
        foreach (var t in K.Concat(V)) t.Dispose();
        foreach (var t in new[] { X, Xn, Q, Kr, Vr, Ao, Tmp, Rstd, G, U, Hh, Logits, Tokens, RowSlot, RowPos, LogitRows, Sampled, SampledLogProb, RowSeed, RowCounter })
            t.Dispose();
    }
}
