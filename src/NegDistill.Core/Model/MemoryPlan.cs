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
        long wBytes = weights is DType.F16 or DType.BF16 ? 2 : 4;
        long paramCopies = trainBase ? 4 : 1;                 // weight (+ grad, adam m, adam v)
        var items = new List<(string, long)>
        {
            ("embedding (F32)", V * C * 4 * paramCopies),
            ("norm weights (F32)", (2 * L + 1) * C * 4 * paramCopies),
            ($"projections and LM head ({weights})", (L * (4 * C * C + 3 * C * F) + V * C) * wBytes * paramCopies),
        };
        if (lora != null)
        {
            long adapterParams = 0, adapterActs = 0;
            foreach (var t in lora.Targets)
            {
                var (i, o) = LlamaModel.ProjShape(c, t);
                adapterParams += L * (lora.Rank * i + o * lora.Rank);
                adapterActs += L * n * (2 * i + 2 * lora.Rank);  // drop(x), dx of the adapter, xa, dxa
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
