using System.Text;
using NegDistill.Runtime;

namespace NegDistill.Model;

/// <summary>Which training run a plan is for.</summary>
public enum TrainingStage { Lora, Nat, Nce }

/// <summary>
/// What a training run or a sampling run allocates, computed before anything is allocated: parameters
/// from the configuration, activations and row buffers from <see cref="ActivationSizes"/>, the table
/// the model, the KV cache and the adapters allocate from (tests check the totals against the bytes the
/// CPU backend actually allocated, and the 7B totals against hand computations).
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
        long L = c.Layers;
        int n = microBatch * seqLen;
        var items = WeightItems(c, weights, paramCopies: trainBase ? 4 : 1);   // weight (+ grad, adam m, adam v)
        int chunkRows = ActivationSizes.ChunkRows(c, microBatch, seqLen, logitsBudget);
        if (stage != TrainingStage.Lora)
        {
            if (nat == null) throw new ArgumentException($"a {stage} plan needs LoRA_neg's settings (nat)");
            var pos = stage == TrainingStage.Nat ? lora! : nat.Pos;
            bool teacher = stage == TrainingStage.Nce;            // forward only, dropout off
            long unitParams = 0, loraParams = 0, negParams = 0, rows = 0;
            int d = nat.UnitDim;
            foreach (var t in pos.Targets.Distinct())
            {
                var (i, o) = LlamaModel.ProjShape(c, t);
                unitParams += L * UnitParams(i, o, d);
                loraParams += L * LoraParams(i, o, pos.Rank);
                negParams += L * LoraParams(i, o, nat.Neg.Rank);
                var buffers = ActivationSizes.NatForward(n, o, d)
                    .Concat(ActivationSizes.LoraForward(n, i, pos.Rank, dropout: !teacher && pos.Dropout > 0))
                    .Concat(ActivationSizes.LoraForward(n, i, nat.Neg.Rank, dropout: false));    // LoRA_neg runs without dropout
                if (!teacher)
                    buffers = buffers.Concat(ActivationSizes.NatBackward(n, o, d))
                        .Concat(ActivationSizes.LoraBackward(n, i, pos.Rank)).Concat(ActivationSizes.LoraBackward(n, i, nat.Neg.Rank));
                rows += L * ActivationSizes.Bytes(buffers);
            }
            items.Add(teacher
                ? ("NAT teacher: units Q K U1 U2 + LoRA_pos (F32, frozen)", (unitParams + loraParams) * 4)
                : ("NAT units Q K U1 U2 + LoRA_pos, with grads + moments (F32)", (unitParams + loraParams) * 4 * 4));
            items.Add(("LoRA_neg weights (F32, frozen)", negParams * 4));
            items.Add(($"NAT row buffers ({(teacher ? "teacher forward" : "forward + backward")})", rows));
            if (teacher)
                items.Add(("NCE teacher hidden states (NAT, neg) + logits chunks + per-row terms",
                    2 * ActivationSizes.TeacherHidden(n, c.Dim).Bytes + ActivationSizes.Bytes(ActivationSizes.NceHead(n, chunkRows, c.Vocab))));
        }
        if (lora != null && stage != TrainingStage.Nat)
        {
            long adapterParams = 0, adapterActs = 0;
            foreach (var t in lora.Targets)
            {
                var (i, o) = LlamaModel.ProjShape(c, t);
                adapterParams += L * LoraParams(i, o, lora.Rank);
                adapterActs += L * ActivationSizes.Bytes(ActivationSizes.LoraForward(n, i, lora.Rank, lora.Dropout > 0).Concat(ActivationSizes.LoraBackward(n, i, lora.Rank)));
            }
            items.Add(("LoRA weights + grads + AdamW moments (F32)", adapterParams * 4 * 4));
            items.Add(("LoRA activations", adapterActs));
        }
        items.Add(("residual stream (L+1 layers)", ActivationSizes.Bytes(ActivationSizes.Residual(c, microBatch, seqLen))));
        items.Add(($"layer activations ({(recompute ? "1 layer, recomputed" : $"{L} layers")})", (recompute ? 1 : L) * ActivationSizes.Bytes(ActivationSizes.Layer(c, microBatch, seqLen))));
        var scratch = ActivationSizes.Scratch(c, microBatch, seqLen, chunkRows);
        items.Add(("backward scratch", ActivationSizes.Bytes(scratch.Where(b => b.Name != "logits"))));
        items.Add(($"logits chunk ({chunkRows} rows × V)", ActivationSizes.Bytes(scratch.Where(b => b.Name == "logits"))));
        items.Add(("token ids, positions, mask, targets", ActivationSizes.Bytes(ActivationSizes.Inputs(microBatch, seqLen))));
        return new MemoryPlan(items);
    }

    static long LoraParams(long i, long o, long r) => r * i + o * r;                   // A (r,in), B (out,r)
    static long UnitParams(long i, long o, long d) => d * i + 2 * d * o + o * d;       // Q (D,in), K and U1 (D,out), U2 (out,D)

    /// <summary>LoRA_neg's settings and NAT's unit width (plans of the NAT and NCE stages). For NCE,
    /// <see cref="Pos"/> is the NAT model's LoRA_pos; for NAT it is the plan's trained LoRA.</summary>
    public sealed record NatPlan(LoraConfig Neg, LoraConfig Pos, int UnitDim = Ops.Integration.UnitDim);

    /// <summary>
    /// What batched sampling allocates (<see cref="Infer.Sampler"/>: the model, frozen adapters, a
    /// <see cref="KvCache"/> of <paramref name="slots"/> × <paramref name="maxSeq"/> positions and its
    /// row buffers for <paramref name="maxRows"/> rows per forward), from the same table they allocate from.
    /// </summary>
    /// <param name="nat">for a NAT student (LoRA_neg + LoRA_pos + integration units, frozen): their
    /// settings; <paramref name="lora"/> is then ignored</param>
    /// <param name="cache">the KV cache's element type (F32, BF16 or F16)</param>
    /// <param name="layout">where the cache keeps sequences (shared prompts); null: <paramref name="slots"/> plain
    /// slots of <paramref name="maxSeq"/> positions</param>
    public static MemoryPlan ForSampling(LlamaConfig c, DType weights, LoraConfig? lora, int slots, int maxSeq, int maxRows, NatPlan? nat = null,
        DType cache = DType.F32, KvLayout? layout = null)
    {
        long L = c.Layers;
        int R = maxRows;
        var items = WeightItems(c, weights, paramCopies: 1);
        if (nat != null)
        {
            long parameters = 0, rows = 0;
            foreach (var t in nat.Pos.Targets.Distinct())
            {
                var (i, o) = LlamaModel.ProjShape(c, t);
                parameters += L * (UnitParams(i, o, nat.UnitDim) + LoraParams(i, o, nat.Pos.Rank) + LoraParams(i, o, nat.Neg.Rank));
                rows += L * ActivationSizes.Bytes(ActivationSizes.NatForward(R, o, nat.UnitDim)
                    .Concat(ActivationSizes.LoraForward(R, i, nat.Pos.Rank, dropout: false)).Concat(ActivationSizes.LoraForward(R, i, nat.Neg.Rank, dropout: false)));
            }
            items.Add(("NAT units Q K U1 U2 + LoRA_pos + LoRA_neg (F32, frozen)", parameters * 4));
            items.Add(("NAT row buffers", rows));
        }
        else if (lora != null)
        {
            long adapterParams = 0, adapterRows = 0;
            foreach (var t in lora.Targets)
            {
                var (i, o) = LlamaModel.ProjShape(c, t);
                adapterParams += L * LoraParams(i, o, lora.Rank);
                adapterRows += L * ActivationSizes.Bytes(ActivationSizes.LoraForward(R, i, lora.Rank, dropout: false));   // no drop(x) copy with dropout off
            }
            items.Add(("LoRA weights (F32, frozen)", adapterParams * 4));
            items.Add(("LoRA row buffers", adapterRows));
        }
        layout ??= KvLayout.Plain(slots, maxSeq);
        items.Add(($"KV cache ({layout}, {cache})", ActivationSizes.Bytes(ActivationSizes.KvCache(c, layout.Rows, cache))));
        var kvRows = ActivationSizes.KvRows(c, R);
        items.Add(($"row buffers ({maxRows} rows per forward)", ActivationSizes.Bytes(kvRows.Where(b => b.Type == DType.F32 && b.Name != "kv.sampled.lp"))));
        items.Add(("row ids, positions, seeds, sampled tokens", ActivationSizes.Bytes(kvRows.Where(b => b.Type != DType.F32 || b.Name == "kv.sampled.lp"))));
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
