using System.Text;
using NegDistill.Runtime;

namespace NegDistill.Model;

/// <summary>
/// What a LoRA (or full) training run allocates, computed from the configuration before anything is
/// allocated, line by line as <see cref="LlamaModel"/>, <see cref="Param"/> and <see cref="LoraAdapter"/>
/// allocate it (a test checks the total against the bytes the CPU backend actually allocates).
/// </summary>
public sealed record MemoryPlan(IReadOnlyList<(string Item, long Bytes)> Items)
{
    public long Total => Items.Sum(i => i.Bytes);

    public static MemoryPlan ForTraining(LlamaConfig c, DType weights, LoraConfig? lora, int microBatch, int seqLen,
        bool recompute = false, bool trainBase = false, long logitsBudget = 1 << 22)
    {
        long C = c.Dim, F = c.FfnDim, V = c.Vocab, L = c.Layers, H = c.Heads;
        long n = (long)microBatch * seqLen, att = (long)microBatch * H * seqLen * seqLen;
        var items = WeightItems(c, weights, paramCopies: trainBase ? 4 : 1);   // weight (+ grad, adam m, adam v)
        if (lora != null)
        {
            long adapterParams = 0, adapterActs = 0;
            foreach (var t in lora.Targets)
            {
                var (i, o) = LlamaModel.ProjShape(c, t);
                adapterParams += L * (lora.Rank * i + o * lora.Rank);
                adapterActs += L * n * ((lora.Dropout > 0 ? 2 : 1) * i + 2 * lora.Rank);  // drop(x) if dropout, dx of the adapter, xa, dxa
            }
            items.Add(("LoRA weights + grads + AdamW moments (F32)", adapterParams * 4 * 4));
            items.Add(("LoRA activations", adapterActs * 4));
        }
        long perLayer = 7 * n * C + 2 * n + att + 3 * n * F;     // xn1 q k v ao x2 xn2, rstd×2, att, g u h
        items.Add(("residual stream (L+1 layers)", (L + 1) * n * C * 4));
        items.Add(($"layer activations ({(recompute ? "1 layer, recomputed" : $"{L} layers")})", (recompute ? 1 : L) * perLayer * 4));
        long chunkRows = Math.Max(1, Math.Min(n, logitsBudget / V));
        items.Add(("backward scratch", (7 * n * C + att + 3 * n * F + 2 * n * C + n + n + C) * 4));
        items.Add(($"logits chunk ({chunkRows} rows × V)", chunkRows * V * 4));
        items.Add(("token ids, positions, mask, targets", 4 * n * 4));
        return new MemoryPlan(items);
    }

    /// <summary>
    /// What batched sampling allocates (<see cref="Infer.Sampler"/>: the model, frozen LoRA adapters, a
    /// <see cref="Infer.KvCache"/> of <paramref name="slots"/> × <paramref name="maxSeq"/> positions and its
    /// row buffers for <paramref name="maxRows"/> rows per forward), line by line as they allocate it.
    /// </summary>
    public static MemoryPlan ForSampling(LlamaConfig c, DType weights, LoraConfig? lora, int slots, int maxSeq, int maxRows)
    {
        long C = c.Dim, F = c.FfnDim, V = c.Vocab, L = c.Layers, R = maxRows;
        var items = WeightItems(c, weights, paramCopies: 1);
        if (lora != null)
        {
            long adapterParams = 0, adapterRows = 0;
            foreach (var t in lora.Targets)
            {
                var (i, o) = LlamaModel.ProjShape(c, t);
                adapterParams += L * (lora.Rank * i + o * lora.Rank);
                adapterRows += L * R * lora.Rank;                 // xa; no drop(x) copy with dropout off
            }
            items.Add(("LoRA weights (F32, frozen)", adapterParams * 4));
            items.Add(("LoRA row buffers", adapterRows * 4));
        }
        items.Add(($"KV cache ({slots} slots × {maxSeq} positions, F32)", 2 * L * slots * maxSeq * C * 4));
        items.Add(($"row buffers ({maxRows} rows per forward)", R * (7 * C + 1 + 3 * F + V) * 4));
        items.Add(("row ids, positions, seeds, sampled tokens", 9 * R * 4));
        return new MemoryPlan(items);
    }

    static List<(string, long)> WeightItems(LlamaConfig c, DType weights, long paramCopies)
    {
        long C = c.Dim, F = c.FfnDim, V = c.Vocab, L = c.Layers;
        long wBytes = weights is DType.F16 or DType.BF16 ? 2 : 4;
        return
        [
            ("embedding (F32)", V * C * 4 * paramCopies),
            ("norm weights (F32)", (2 * L + 1) * C * 4 * paramCopies),
            ($"projections and LM head ({weights})", (L * (4 * C * C + 3 * C * F) + V * C) * wBytes * paramCopies),
        ];
    }

    public string Render(string title, long deviceBytes = 0)
    {
        var sb = new StringBuilder($"memory plan: {title}\n");
        foreach (var (item, b) in Items) sb.AppendLine($"  {item,-52} {Gib(b),9}");
        sb.AppendLine($"  {"total",-52} {Gib(Total),9}");
        if (deviceBytes > 0) sb.AppendLine($"  {"device memory",-52} {Gib(deviceBytes),9}  → {(Total <= deviceBytes ? "fits" : "does NOT fit")}");
        return sb.ToString();
    }

    public static string Gib(long b) => $"{b / (double)(1L << 30):F2} GiB";
}
