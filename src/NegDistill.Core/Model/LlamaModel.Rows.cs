using NegDistill.Runtime;

namespace NegDistill.Model;

/// <summary>The inference path with a KV cache (llama2.c's <c>forward</c>, batched over rows).</summary>
public sealed partial class LlamaModel
{
    /// <summary>
    /// One forward over R rows, row r = token tokens[r] of cache slot slot[r] at absolute position
    /// pos[r]; rows of one slot at consecutive positions are a prefill chunk, a single row is a decode
    /// step, and any mix of slots can share a call. Slot ids from <see cref="KvCache.Slots"/> on are the
    /// prompt slots; a slot linked to one (<see cref="KvCache.Link"/>) reads its first positions there and
    /// writes only its own. Each row's K and V are written to the cache before attention, and row r
    /// attends to its sequence's positions 0..pos[r], so every position below pos[r] must already be in
    /// the cache or among this call's rows (a prompt's last chunk and its candidates' first rows may share
    /// a call). Per layer, as in
    /// <see cref="ForwardHidden"/>: RMSNorm → q, k, v (adapters included) → RoPE at the rows' positions →
    /// cache write → cached attention → o_proj + residual → RMSNorm → SwiGLU MLP + residual; then the
    /// final norm, the rows named in <paramref name="logitRows"/> gathered, and the LM head on those
    /// only. Dropout is off. Returns the logits (logitRows.Length, V) as a view of the cache's buffer,
    /// valid until the next call; with no logit rows (a prefill-only call) no LM head runs and the result is null.
    /// </summary>
    public Tensor? ForwardRowsDevice(ReadOnlySpan<int> tokens, ReadOnlySpan<int> slot, ReadOnlySpan<int> pos, KvCache cache, ReadOnlySpan<int> logitRows)
    {
        int r = tokens.Length, n2 = logitRows.Length;
        if (cache.Model != this) throw new ArgumentException("the KV cache belongs to another model");
        if (r < 1 || r > cache.MaxRows) throw new ArgumentException($"{r} rows; the KV cache takes 1 to {cache.MaxRows} per call");
        if (slot.Length != r || pos.Length != r) throw new ArgumentException($"{r} tokens but {slot.Length} slots and {pos.Length} positions");
        if (n2 > r) throw new ArgumentException($"{n2} logit rows out of {r}");
        var map = cache.MapScratch(r);
        for (int i = 0; i < r; i++)
        {
            if ((uint)tokens[i] >= (uint)V) throw new ArgumentException($"row {i}: token {tokens[i]} outside the vocabulary of {V}");
            if ((uint)slot[i] >= (uint)cache.SlotIds) throw new ArgumentException($"row {i}: slot {slot[i]} outside the cache's {cache.SlotIds}");
            if (pos[i] < 0) throw new ArgumentException($"row {i}: position {pos[i]} is negative");
            (map[3 * i], map[3 * i + 1], map[3 * i + 2]) = cache.Map(slot[i], pos[i], i);
        }
        foreach (int i in logitRows) if ((uint)i >= (uint)r) throw new ArgumentException($"logit row {i} outside the {r} rows");

        var o = Ops;
        Pass.Training = false;
        o.Upload(cache.Tokens, tokens); o.Upload(cache.RowMap, map.AsSpan(0, 3 * r)); o.Upload(cache.RowPos, pos);
        if (n2 > 0) o.Upload(cache.LogitRows, logitRows);
        var (x, xn, q, k, v, ao, tmp) = (o.View(cache.X, 0, r, C), o.View(cache.Xn, 0, r, C), o.View(cache.Q, 0, r, C),
            o.View(cache.Kr, 0, r, C), o.View(cache.Vr, 0, r, C), o.View(cache.Ao, 0, r, C), o.View(cache.Tmp, 0, r, C));
        var (g, u, hh, rstd) = (o.View(cache.G, 0, r, F), o.View(cache.U, 0, r, F), o.View(cache.Hh, 0, r, F), o.View(cache.Rstd, 0, r));
        int tmax = cache.MaxSeq;                                                        // bound on pos + 1
        o.EmbeddingForward(x, cache.Tokens, Embed.W, r, C);                             // x(R,C)
        for (int l = 0; l < Layers.Length; l++)
        {
            var w = Layers[l];
            o.RmsNormForward(xn, rstd, x, w.AttnNorm.W, r, C, Config.NormEps);
            Linear(l, Proj.q_proj, xn, q, r);
            Linear(l, Proj.k_proj, xn, k, r);
            Linear(l, Proj.v_proj, xn, v, r);
            o.Rope(q, cache.RowPos, r, H, Hd, Config.RopeTheta, false);
            o.Rope(k, cache.RowPos, r, H, Hd, Config.RopeTheta, false);
            o.CacheWrite(cache.K[l], cache.V[l], k, v, cache.RowMap, cache.RowPos, r, C);
            o.CachedAttention(ao, q, cache.K[l], cache.V[l], cache.RowMap, cache.RowPos, r, tmax, H, Hd);   // ao(R,C)
            Linear(l, Proj.o_proj, ao, tmp, r);
            o.Axpy(x, tmp, 1f, (long)r * C);                                             // x += o(ao)
            o.RmsNormForward(xn, rstd, x, w.MlpNorm.W, r, C, Config.NormEps);
            Linear(l, Proj.gate_proj, xn, g, r);
            Linear(l, Proj.up_proj, xn, u, r);
            o.SwiGluForward(hh, g, u, (long)r * F);
            Linear(l, Proj.down_proj, hh, tmp, r);
            o.Axpy(x, tmp, 1f, (long)r * C);                                             // x += down(h)
        }
        if (n2 == 0) return null;
        o.RmsNormForward(xn, rstd, x, FinalNorm.W, r, C, Config.NormEps);
        var sel = o.View(cache.Ao, 0, n2, C);
        o.GatherRows(sel, xn, cache.LogitRows, n2, C);                                   // sel(n2,C) = xf[logitRows]
        var logits = o.View(cache.Logits, 0, n2, V);
        o.MatMul(logits, sel, LmHead.W, n2, V, C, false, true);                          // logits(n2,V) = sel·Wheadᵀ
        return logits;
    }

    /// <summary><see cref="ForwardRowsDevice"/> with the logits (logitRows.Length × V, row-major) copied to the host.</summary>
    public float[] ForwardRows(int[] tokens, int[] slot, int[] pos, KvCache cache, int[] logitRows)
    {
        var t = ForwardRowsDevice(tokens, slot, pos, cache, logitRows);
        var r = new float[(long)logitRows.Length * V];
        if (t != null) Ops.Download(t, r);
        return r;
    }
}
