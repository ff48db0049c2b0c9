using System.Text;
using NegDistill.Runtime;

namespace NegDistill.Model;

/// <summary>Which training run a plan is for.</summary>
public enum TrainingStage { Lora, Nat, Nce }

/// <summary>
/// What a LoRA (or full) training run allocates, computed from the configuration before anything is
/// allocated, line by line as <see cref="LlamaModel"/>, <see cref="Param"/> and <see cref="LoraAdapter"/>
/// allocate it (a test checks the total against the bytes the CPU backend actually allocates).
/// </summary>
public sealed record MemoryPlan(IReadOnlyList<(string Item, long Bytes)> Items)
{
    public long Total => Items.Sum(i => i.Bytes);

    /// <param name="lora">the trained LoRA (for <see cref="TrainingStage.Nat"/>: LoRA_pos, whose targets NAT wraps)</param>
    /// <param name="stage">plain LoRA / full training, NAT (step 1.2) or NCE (step 2: a NAT teacher on the same model)</param>
    /// <param name="nat">LoRA_neg's settings and the unit width, for the NAT and NCE stages</param>
    public static MemoryPlan ForTraining(LlamaConfig c, DType weights, LoraConfig? lora, int microBatch, int seqLen,
        bool recompute = false, bool trainBase = false, long logitsBudget = 1 << 22,
        TrainingStage stage = TrainingStage.Lora, NatPlan? nat = null)
    {
        long C = c.Dim, F = c.FfnDim, V = c.Vocab, L = c.Layers, H = c.Heads;
        long n = (long)microBatch * seqLen, att = (long)microBatch * H * seqLen * seqLen;
        var items = WeightItems(c, weights, paramCopies: trainBase ? 4 : 1);   // weight (+ grad, adam m, adam v)
        long chunkRows = Math.Max(1, Math.Min(n, logitsBudget / V));
        if (stage != TrainingStage.Lora)
        {
            if (nat == null) throw new ArgumentException($"a {stage} plan needs LoRA_neg's settings (nat)");
            var natTargets = stage == TrainingStage.Nat ? lora!.Targets : nat.Pos.Targets;
            var pos = stage == TrainingStage.Nat ? lora! : nat.Pos;
            bool teacher = stage == TrainingStage.Nce;            // forward only, dropout off
            long unitParams = 0, loraParams = 0, negParams = 0, unitRows = 0, loraRows = 0;
            long d = nat.UnitDim, rp = pos.Rank, rn = nat.Neg.Rank;
            foreach (var t in natTargets.Distinct())
            {
                var (i, o) = LlamaModel.ProjShape(c, t);
                unitParams += L * (d * i + 2 * d * o + o * d);                        // Q, K, U1, U2
                loraParams += L * (rp * i + o * rp);
                negParams += L * (rn * i + o * rn);
                unitRows += teacher
                    ? L * (2 * n * o + 6 * n * d + n)                                  // h (2N,out); q, k, u, mix; a_neg
                    : L * (4 * n * o + 12 * n * d + n);                                // + dh (2N,out); dmix, dq, dk, du
                loraRows += teacher
                    ? L * n * (rp + rn)                                                // xa of LoRA_pos and LoRA_neg
                    : L * n * ((pos.Dropout > 0 ? 2 : 1) * i + 2 * rp + i + 2 * rn); // LoRA_pos: drop(x)?, dxd, xa, dxa; LoRA_neg: dxd, xa, dxa
            }
            items.Add(teacher
                ? ("NAT teacher: units Q K U1 U2 + LoRA_pos (F32, frozen)", (unitParams + loraParams) * 4)
                : ("NAT units Q K U1 U2 + LoRA_pos, with grads + moments (F32)", (unitParams + loraParams) * 4 * 4));
            items.Add(("LoRA_neg weights (F32, frozen)", negParams * 4));
            items.Add(($"NAT row buffers ({(teacher ? "teacher forward" : "forward + backward")})", (unitRows + loraRows) * 4));
            if (teacher)
                items.Add(("NCE teacher hidden states (NAT, neg) + logits chunks + per-row terms", (2 * n * C + 2 * chunkRows * V + 4 * n) * 4));
        }
        if (lora != null && stage != TrainingStage.Nat)
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
        items.Add(("backward scratch", (7 * n * C + att + 3 * n * F + 2 * n * C + n + n + C) * 4));
        items.Add(($"logits chunk ({chunkRows} rows × V)", chunkRows * V * 4));
        items.Add(("token ids, positions, mask, targets", 4 * n * 4));
        return new MemoryPlan(items);
    }

    /// <summary>LoRA_neg's settings and NAT's unit width (plans of the NAT and NCE stages). For NCE,
    /// <see cref="Pos"/> is the NAT model's LoRA_pos; for NAT it is the plan's trained LoRA.</summary>
    public sealed record NatPlan(LoraConfig Neg, LoraConfig Pos, int UnitDim = Ops.Integration.UnitDim);

    /// <summary>
    /// What batched sampling allocates (<see cref="Infer.Sampler"/>: the model, frozen LoRA adapters, a
    /// <see cref="Infer.KvCache"/> of <paramref name="slots"/> × <paramref name="maxSeq"/> positions and its
    /// row buffers for <paramref name="maxRows"/> rows per forward), line by line as they allocate it.
    /// </summary>
    /// <param name="nat">for a NAT student (LoRA_neg + LoRA_pos + integration units, frozen): their
    /// settings; <paramref name="lora"/> is then ignored</param>
    public static MemoryPlan ForSampling(LlamaConfig c, DType weights, LoraConfig? lora, int slots, int maxSeq, int maxRows, NatPlan? nat = null)
    {
        long C = c.Dim, F = c.FfnDim, V = c.Vocab, L = c.Layers, R = maxRows;
        var items = WeightItems(c, weights, paramCopies: 1);
        if (nat != null)
        {
            long unitParams = 0, loraParams = 0, negParams = 0, rows = 0, d = nat.UnitDim;
            foreach (var t in nat.Pos.Targets.Distinct())
            {
                var (i, o) = LlamaModel.ProjShape(c, t);
                unitParams += L * (d * i + 2 * d * o + o * d);                            // Q, K, U1, U2
                loraParams += L * (nat.Pos.Rank * i + o * nat.Pos.Rank);
                negParams += L * (nat.Neg.Rank * i + o * nat.Neg.Rank);
                rows += L * (2 * R * o + 6 * R * d + R + R * (nat.Pos.Rank + nat.Neg.Rank));   // h; q, k, u, mix; a_neg; both LoRAs' xa
            }
            items.Add(("NAT units Q K U1 U2 + LoRA_pos + LoRA_neg (F32, frozen)", (unitParams + loraParams + negParams) * 4));
            items.Add(("NAT row buffers", rows * 4));
        }
        else if (lora != null)
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
        int w = Math.Max(52, Items.Max(i => i.Item.Length));
        foreach (var (item, b) in Items) sb.AppendLine($"  {item.PadRight(w)} {Size(b),11}");
        sb.AppendLine($"  {"total".PadRight(w)} {Size(Total),11}");
        if (deviceBytes > 0) sb.AppendLine($"  {"device memory".PadRight(w)} {Size(deviceBytes),11}  → {(Total <= deviceBytes ? "fits" : "does NOT fit")}");
        return sb.ToString();
    }

    public static string Gib(long b) => $"{b / (double)(1L << 30):F2} GiB";

    /// <summary>GiB from 1 GiB up, MiB below (tiny models' plans stay readable).</summary>
    public static string Size(long b) => b >= 1L << 30 ? Gib(b) : $"{b / (double)(1L << 20):F2} MiB";
}
