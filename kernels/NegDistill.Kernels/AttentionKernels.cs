using ILGPU;
using ILGPU.Runtime;

namespace NegDistill.Kernels;

/// <summary>
/// Causal attention with a key padding mask. CPU twin and the math: src/NegDistill.Core/Ops/Attention.cs.
/// Forward: one group per (b, h, query t): scores over visible keys (threads stride over keys),
/// group max and sum by tree reduction, normalised probabilities written to att, then
/// out_t = Σ_s P_ts v_s with threads striding over the head dimension (coalesced v reads).
/// Backward: pass 1, one group per (b,h,t): dS row and dq_t; pass 2, one group per (b,h,s):
/// dk_s and dv_s by a loop over t ≥ s — no atomics, fixed summation order.
/// Memory: att and dS are (B,H,T,T); at the cut-off of 256 tokens that is what the paper's
/// settings need; a flash-style version that recomputes P is the next version of this family.
/// </summary>
public static class AttentionKernels
{
    public struct Dims { public int B, T, H, Hd; public float Scale; }

    public static void ForwardKernel(ArrayView<float> outp, ArrayView<float> att, ArrayView<float> q, ArrayView<float> k,
        ArrayView<float> v, ArrayView<float> keyMask, Dims d)
    {
        var sh = SharedMemory.Allocate<float>(GroupReduce.MaxGroup);
        int rowId = Grid.IdxX;                 // (b·H + h)·T + t
        int t = rowId % d.T, bh = rowId / d.T, h = bh % d.H, b = bh / d.H;
        int C = d.H * d.Hd;
        long arow = (long)rowId * d.T;
        long qo = ((long)b * d.T + t) * C + h * d.Hd;
        float max = float.NegativeInfinity;
        for (int s = Group.IdxX; s <= t; s += Group.DimX)
        {
            if (keyMask[b * d.T + s] == 0f) continue;
            long ko = ((long)b * d.T + s) * C + h * d.Hd;
            float dot = 0f;
            for (int i = 0; i < d.Hd; i++) dot += q[qo + i] * k[ko + i];
            dot *= d.Scale;
            att[arow + s] = dot;
            if (dot > max) max = dot;
        }
        max = GroupReduce.Max(max, sh);
        float sum = 0f;
        for (int s = Group.IdxX; s < d.T; s += Group.DimX)
        {
            bool visible = s <= t && keyMask[b * d.T + s] != 0f;
            float e = visible ? MathF.Exp(att[arow + s] - max) : 0f;
            att[arow + s] = e;
            sum += e;
        }
        sum = GroupReduce.Sum(sum, sh);
        float inv = sum > 0f ? 1f / sum : 0f;
        for (int s = Group.IdxX; s < d.T; s += Group.DimX) att[arow + s] *= inv;
        Group.Barrier();
        for (int i = Group.IdxX; i < d.Hd; i += Group.DimX)
        {
            float acc = 0f;
            for (int s = 0; s <= t; s++)
                acc += att[arow + s] * v[((long)b * d.T + s) * C + h * d.Hd + i];
            outp[qo + i] = acc;
        }
    }

    public static void BackwardQueryKernel(ArrayView<float> dq, ArrayView<float> datt, ArrayView<float> dout, ArrayView<float> att,
        ArrayView<float> k, ArrayView<float> v, Dims d)
    {
        var sh = SharedMemory.Allocate<float>(GroupReduce.MaxGroup);
        int rowId = Grid.IdxX;
        int t = rowId % d.T, bh = rowId / d.T, h = bh % d.H, b = bh / d.H;
        int C = d.H * d.Hd;
        long arow = (long)rowId * d.T;
        long to = ((long)b * d.T + t) * C + h * d.Hd;
        float acc = 0f;
        for (int s = Group.IdxX; s <= t; s += Group.DimX)
        {
            long vo = ((long)b * d.T + s) * C + h * d.Hd;
            float dp = 0f;
            for (int i = 0; i < d.Hd; i++) dp += dout[to + i] * v[vo + i];
            datt[arow + s] = dp;
            acc += att[arow + s] * dp;
        }
        acc = GroupReduce.Sum(acc, sh);
        for (int s = Group.IdxX; s < d.T; s += Group.DimX)
            datt[arow + s] = s <= t ? att[arow + s] * (datt[arow + s] - acc) : 0f;
        Group.Barrier();
        for (int i = Group.IdxX; i < d.Hd; i += Group.DimX)
        {
            float g = 0f;
            for (int s = 0; s <= t; s++) g += datt[arow + s] * k[((long)b * d.T + s) * C + h * d.Hd + i];
            dq[to + i] += g * d.Scale;
        }
    }

    public static void BackwardKeyKernel(ArrayView<float> dk, ArrayView<float> dv, ArrayView<float> datt, ArrayView<float> dout,
        ArrayView<float> att, ArrayView<float> q, Dims d)
    {
        int rowId = Grid.IdxX;                 // (b·H + h)·T + s
        int s = rowId % d.T, bh = rowId / d.T, h = bh % d.H, b = bh / d.H;
        int C = d.H * d.Hd;
        long so = ((long)b * d.T + s) * C + h * d.Hd;
        for (int i = Group.IdxX; i < d.Hd; i += Group.DimX)
        {
            float gk = 0f, gv = 0f;
            for (int t = s; t < d.T; t++)
            {
                long a = ((long)bh * d.T + t) * d.T + s;
                long to = ((long)b * d.T + t) * C + h * d.Hd + i;
                gk += datt[a] * q[to];
                gv += att[a] * dout[to];
            }
            dk[so + i] += gk * d.Scale;
            dv[so + i] += gv;
        }
    }


    // ------------------------------------------------------------------------------------------
    // Version 2: flash attention (online softmax over key blocks staged in shared memory; only the
    // per-row log-sum-exp is kept for the backward, which recomputes P; no (B,H,T,T) storage).
    // SIMT fp32; rows are split over a fixed number of threads (4 in the forward, 8 in the backward)
    // so the group size G sets the rows per group (G/4, G/8) and the kernels run on the CPU
    // accelerator's small groups too. Head dimension ≤ 128.
    // Napkin math, LLaMA-7b 16×256, 32 heads×128: forward 4·B·H·T²/2·hd ≈ 17 GFLOP, backward ≈ 2.5× that,
    // on FP32 FMA units (60 TFLOP/s on H100) — under a millisecond each; K/V are read once per 32 query
    // rows (forward) instead of once per row.
    // ------------------------------------------------------------------------------------------

    public const int FlashHdMax = 128, FlashBc = 16;
    const int FwdTpr = 4, BwdTpr = 8, FlashMaxRows = 32;

    static bool Visible(ArrayView<float> keyMask, Dims d, int b, int t, int s) => t < d.T && s <= t && keyMask[b * d.T + s] != 0f;

    /// <summary>Grid: (ceil(T / (G/4)), B·H) groups of G threads. out (B,T,H·hd), lse (B,H,T) = log Σ_s exp(score):
    /// −∞ for a row that sees no key (its out is 0).</summary>
    public static void FlashForwardKernel(ArrayView<float> outp, ArrayView<float> lse, ArrayView<float> q, ArrayView<float> k,
        ArrayView<float> v, ArrayView<float> keyMask, Dims d)
    {
        var qs = SharedMemory.Allocate<float>(FlashMaxRows * FlashHdMax);         // [row][dim]
        var ks = SharedMemory.Allocate<float>(FlashBc * (FlashHdMax + 1));        // [key][dim], padded a word
        var vs = SharedMemory.Allocate<float>(FlashBc * FlashHdMax);              // [key][dim]
        var ps = SharedMemory.Allocate<float>(FlashMaxRows * FlashBc);            // [row][key]
        int g = Group.DimX, tid = Group.IdxX, rows = g / FwdTpr, r = tid / FwdTpr, part = tid % FwdTpr;
        int bh = Grid.IdxY, b = bh / d.H, h = bh % d.H, hd = d.Hd, C = d.H * hd;
        int q0 = Grid.IdxX * rows, t = q0 + r;
        int dims = (hd + FwdTpr - 1) / FwdTpr, d0 = part * dims;
        for (int e = tid; e < rows * hd; e += g)
        {
            int rr = e / hd, dd = e % hd, tt = q0 + rr;
            qs[rr * FlashHdMax + dd] = tt < d.T ? q[((long)b * d.T + tt) * C + h * hd + dd] : 0f;
        }
        float m = float.NegativeInfinity, l = 0f;
        Acc32 o = default;
        int kEnd = Math.Min(d.T, q0 + rows);
        for (int k0 = 0; k0 < kEnd; k0 += FlashBc)
        {
            Group.Barrier();                   // the last block's K, V and P are read (and Q is staged)
            for (int e = tid; e < FlashBc * hd; e += g)
            {
                int j = e / hd, dd = e % hd, sk = k0 + j;
                long gi = ((long)b * d.T + sk) * C + h * hd + dd;
                ks[j * (FlashHdMax + 1) + dd] = sk < d.T ? k[gi] : 0f;
                vs[j * FlashHdMax + dd] = sk < d.T ? v[gi] : 0f;
            }
            Group.Barrier();
            // this thread's 4 of the row's 16 scores: keys k0 + 4·part … + 3
            float s0 = Score(qs, ks, r, 4 * part, hd, d, keyMask, b, t, k0);
            float s1 = Score(qs, ks, r, 4 * part + 1, hd, d, keyMask, b, t, k0);
            float s2 = Score(qs, ks, r, 4 * part + 2, hd, d, keyMask, b, t, k0);
            float s3 = Score(qs, ks, r, 4 * part + 3, hd, d, keyMask, b, t, k0);
            float bm = Math.Max(Math.Max(s0, s1), Math.Max(s2, s3));
            bm = Math.Max(bm, Warp.ShuffleXor(bm, 1)); bm = Math.Max(bm, Warp.ShuffleXor(bm, 2));
            float mNew = Math.Max(m, bm);
            float alpha = float.IsNegativeInfinity(mNew) ? 1f : MathF.Exp(m - mNew);
            float p0 = P(s0, mNew), p1 = P(s1, mNew), p2 = P(s2, mNew), p3 = P(s3, mNew);
            float rs = (p0 + p1) + (p2 + p3);
            rs += Warp.ShuffleXor(rs, 1); rs += Warp.ShuffleXor(rs, 2);
            l = l * alpha + rs; m = mNew;
            int pr = r * FlashBc + 4 * part;
            ps[pr] = p0; ps[pr + 1] = p1; ps[pr + 2] = p2; ps[pr + 3] = p3;
            Group.Barrier();
            o = Acc32.Scale(o, alpha);
            for (int j = 0; j < FlashBc; j++)
            {
                float pj = ps[r * FlashBc + j];
                if (pj != 0f) o = Acc32.AddScaled(o, pj, vs, j * FlashHdMax + d0, Math.Min(dims, hd - d0));
            }
        }
        if (t < d.T)
        {
            Acc32.Store(o, outp, ((long)b * d.T + t) * C + h * hd + d0, Math.Min(dims, hd - d0), l > 0f ? 1f / l : 0f, accumulate: false);
            if (part == 0) lse[(long)bh * d.T + t] = l > 0f ? m + MathF.Log(l) : float.NegativeInfinity;
        }
    }

    static float Score(ArrayView<float> qs, ArrayView<float> ks, int r, int j, int hd, Dims d, ArrayView<float> keyMask, int b, int t, int k0)
    {
        int sk = k0 + j;
        if (sk >= d.T || !Visible(keyMask, d, b, t, sk)) return float.NegativeInfinity;
        float acc = 0f;
        for (int dd = 0; dd < hd; dd++) acc += qs[r * FlashHdMax + dd] * ks[j * (FlashHdMax + 1) + dd];
        return acc * d.Scale;
    }

    static float P(float s, float m) => float.IsNegativeInfinity(s) ? 0f : MathF.Exp(s - m);

    /// <summary>One thread per (b, h, t): dsum(B,H,T) = Σ_d dout·out, the Σ_s P·dP of the softmax backward.</summary>
    public static void FlashBackwardPrepKernel(Index1D i, ArrayView<float> dsum, ArrayView<float> dout, ArrayView<float> outp, Dims d)
    {
        int t = i % d.T, bh = i / d.T, h = bh % d.H, b = bh / d.H, C = d.H * d.Hd;
        long o = ((long)b * d.T + t) * C + h * d.Hd;
        float acc = 0f;
        for (int dd = 0; dd < d.Hd; dd++) acc += dout[o + dd] * outp[o + dd];
        dsum[i] = acc;
    }

    /// <summary>Grid: (ceil(T / (G/8)), B·H). Per group G/8 key rows s, 8 threads each; loops over the query
    /// blocks that can see them: P = exp(score − lse_t), dP = dout_t·v_s, dS = P (dP − dsum_t);
    /// dv_s += Σ_t P dout_t, dk_s += scale Σ_t dS q_t (accumulated into dk, dv).</summary>
    public static void FlashBackwardKeyKernel(ArrayView<float> dk, ArrayView<float> dv, ArrayView<float> dout, ArrayView<float> lse,
        ArrayView<float> dsum, ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<float> keyMask, Dims d)
    {
        var ks = SharedMemory.Allocate<float>(FlashBc * (FlashHdMax + 1));        // this group's keys [s][dim]
        var vs = SharedMemory.Allocate<float>(FlashBc * (FlashHdMax + 1));
        var qs = SharedMemory.Allocate<float>(FlashBc * FlashHdMax);              // a query block [t][dim]
        var dos = SharedMemory.Allocate<float>(FlashBc * FlashHdMax);
        var pp = SharedMemory.Allocate<float>(FlashBc * FlashBc);                 // [s][t]
        var dss = SharedMemory.Allocate<float>(FlashBc * FlashBc);
        int g = Group.DimX, tid = Group.IdxX, rows = g / BwdTpr, r = tid / BwdTpr, part = tid % BwdTpr;
        int bh = Grid.IdxY, b = bh / d.H, h = bh % d.H, hd = d.Hd, C = d.H * hd;
        int s0 = Grid.IdxX * rows, sk = s0 + r;
        int dims = (hd + BwdTpr - 1) / BwdTpr, d0 = part * dims, mine = Math.Min(dims, hd - d0);
        for (int e = tid; e < rows * hd; e += g)
        {
            int rr = e / hd, dd = e % hd, ss = s0 + rr;
            long gi = ((long)b * d.T + ss) * C + h * hd + dd;
            ks[rr * (FlashHdMax + 1) + dd] = ss < d.T ? k[gi] : 0f;
            vs[rr * (FlashHdMax + 1) + dd] = ss < d.T ? v[gi] : 0f;
        }
        Acc16 gk = default, gv = default;
        // queries t ≥ s0 only (causal); blocks of FlashBc
        for (int t0 = s0 - s0 % FlashBc; t0 < d.T; t0 += FlashBc)
        {
            Group.Barrier();
            for (int e = tid; e < FlashBc * hd; e += g)
            {
                int i = e / hd, dd = e % hd, tt = t0 + i;
                long gi = ((long)b * d.T + tt) * C + h * hd + dd;
                qs[i * FlashHdMax + dd] = tt < d.T ? q[gi] : 0f;
                dos[i * FlashHdMax + dd] = tt < d.T ? dout[gi] : 0f;
            }
            Group.Barrier();
            // this thread's 2 of the key row's 16 (s, t) pairs
            for (int c = 0; c < FlashBc / BwdTpr; c++)
            {
                int i = part * (FlashBc / BwdTpr) + c, tt = t0 + i;
                float p = 0f, ds = 0f;
                if (sk < d.T && tt < d.T && Visible(keyMask, d, b, tt, sk))
                {
                    float sc = 0f, dp = 0f;
                    for (int dd = 0; dd < hd; dd++)
                    {
                        sc += qs[i * FlashHdMax + dd] * ks[r * (FlashHdMax + 1) + dd];
                        dp += dos[i * FlashHdMax + dd] * vs[r * (FlashHdMax + 1) + dd];
                    }
                    float lt = lse[(long)bh * d.T + tt];
                    p = float.IsNegativeInfinity(lt) ? 0f : MathF.Exp(sc * d.Scale - lt);
                    ds = p * (dp - dsum[(long)bh * d.T + tt]);
                }
                pp[r * FlashBc + i] = p;
                dss[r * FlashBc + i] = ds;
            }
            Group.Barrier();
            for (int i = 0; i < FlashBc; i++)
            {
                float p = pp[r * FlashBc + i], ds = dss[r * FlashBc + i];
                if (p != 0f) gv = Acc16.AddScaled(gv, p, dos, i * FlashHdMax + d0, mine);
                if (ds != 0f) gk = Acc16.AddScaled(gk, ds, qs, i * FlashHdMax + d0, mine);
            }
        }
        if (sk < d.T)
        {
            long o = ((long)b * d.T + sk) * C + h * hd + d0;
            Acc16.Store(gv, dv, o, mine, 1f, accumulate: true);
            Acc16.Store(gk, dk, o, mine, d.Scale, accumulate: true);
        }
    }

    /// <summary>Grid: (ceil(T / (G/8)), B·H). Per group G/8 query rows t, 8 threads each; loops over the key
    /// blocks they see: dq_t += scale Σ_s dS_ts k_s (accumulated into dq).</summary>
    public static void FlashBackwardQueryKernel(ArrayView<float> dq, ArrayView<float> dout, ArrayView<float> lse, ArrayView<float> dsum,
        ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<float> keyMask, Dims d)
    {
        var qs = SharedMemory.Allocate<float>(FlashBc * (FlashHdMax + 1));        // this group's queries [t][dim]
        var dos = SharedMemory.Allocate<float>(FlashBc * (FlashHdMax + 1));
        var ks = SharedMemory.Allocate<float>(FlashBc * FlashHdMax);              // a key block [s][dim]
        var vs = SharedMemory.Allocate<float>(FlashBc * FlashHdMax);
        var dss = SharedMemory.Allocate<float>(FlashBc * FlashBc);                // [t][s]
        int g = Group.DimX, tid = Group.IdxX, rows = g / BwdTpr, r = tid / BwdTpr, part = tid % BwdTpr;
        int bh = Grid.IdxY, b = bh / d.H, h = bh % d.H, hd = d.Hd, C = d.H * hd;
        int t0 = Grid.IdxX * rows, t = t0 + r;
        int dims = (hd + BwdTpr - 1) / BwdTpr, d0 = part * dims, mine = Math.Min(dims, hd - d0);
        for (int e = tid; e < rows * hd; e += g)
        {
            int rr = e / hd, dd = e % hd, tt = t0 + rr;
            long gi = ((long)b * d.T + tt) * C + h * hd + dd;
            qs[rr * (FlashHdMax + 1) + dd] = tt < d.T ? q[gi] : 0f;
            dos[rr * (FlashHdMax + 1) + dd] = tt < d.T ? dout[gi] : 0f;
        }
        float lt = t < d.T ? lse[(long)bh * d.T + t] : float.NegativeInfinity;
        float dt = t < d.T ? dsum[(long)bh * d.T + t] : 0f;
        Acc16 gq = default;
        int kEnd = Math.Min(d.T, t0 + rows);
        for (int k0 = 0; k0 < kEnd; k0 += FlashBc)
        {
            Group.Barrier();
            for (int e = tid; e < FlashBc * hd; e += g)
            {
                int j = e / hd, dd = e % hd, ss = k0 + j;
                long gi = ((long)b * d.T + ss) * C + h * hd + dd;
                ks[j * FlashHdMax + dd] = ss < d.T ? k[gi] : 0f;
                vs[j * FlashHdMax + dd] = ss < d.T ? v[gi] : 0f;
            }
            Group.Barrier();
            for (int c = 0; c < FlashBc / BwdTpr; c++)
            {
                int j = part * (FlashBc / BwdTpr) + c, ss = k0 + j;
                float ds = 0f;
                if (ss < d.T && !float.IsNegativeInfinity(lt) && Visible(keyMask, d, b, t, ss))
                {
                    float sc = 0f, dp = 0f;
                    for (int dd = 0; dd < hd; dd++)
                    {
                        sc += qs[r * (FlashHdMax + 1) + dd] * ks[j * FlashHdMax + dd];
                        dp += dos[r * (FlashHdMax + 1) + dd] * vs[j * FlashHdMax + dd];
                    }
                    float p = MathF.Exp(sc * d.Scale - lt);
                    ds = p * (dp - dt);
                }
                dss[r * FlashBc + j] = ds;
            }
            Group.Barrier();
            for (int j = 0; j < FlashBc; j++)
            {
                float ds = dss[r * FlashBc + j];
                if (ds != 0f) gq = Acc16.AddScaled(gq, ds, ks, j * FlashHdMax + d0, mine);
            }
        }
        if (t < d.T) Acc16.Store(gq, dq, ((long)b * d.T + t) * C + h * hd + d0, mine, d.Scale, accumulate: true);
    }

    public sealed class Launcher(Accelerator acc, int group)
    {
        readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, Dims> _fwd =
            acc.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, Dims>(ForwardKernel);
        readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, Dims> _bq =
            acc.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, Dims>(BackwardQueryKernel);
        readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, Dims> _bk =
            acc.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, Dims>(BackwardKeyKernel);

        static Dims D(int b, int t, int h, int hd) => new() { B = b, T = t, H = h, Hd = hd, Scale = 1f / MathF.Sqrt(hd) };

        public void Forward(ArrayView<float> outp, ArrayView<float> att, ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<float> mask, int b, int t, int h, int hd)
            => _fwd(new KernelConfig(b * h * t, group), outp, att, q, k, v, mask, D(b, t, h, hd));

        public void Backward(ArrayView<float> dq, ArrayView<float> dk, ArrayView<float> dv, ArrayView<float> datt, ArrayView<float> dout, ArrayView<float> att,
            ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, int b, int t, int h, int hd)
        {
            var d = D(b, t, h, hd);
            _bq(new KernelConfig(b * h * t, group), dq, datt, dout, att, k, v, d);
            _bk(new KernelConfig(b * h * t, group), dk, dv, datt, dout, att, q, d);
        }

        // version 2
        readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, Dims> _flashFwd =
            acc.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, Dims>(FlashForwardKernel);
        readonly Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, Dims> _flashPrep =
            acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, Dims>(FlashBackwardPrepKernel);
        readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, Dims> _flashKey =
            acc.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, Dims>(FlashBackwardKeyKernel);
        readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, Dims> _flashQuery =
            acc.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, Dims>(FlashBackwardQueryKernel);

        /// <summary>Groups of at most 128 threads: 32 query rows (forward) or 16 rows (backward) fill the
        /// shared tiles exactly.</summary>
        int FlashGroup => Math.Min(group, 128);

        static void CheckHd(int hd)
        {
            if (hd > FlashHdMax) throw new ArgumentException($"flash attention: head dimension {hd} is above {FlashHdMax}");
        }

        /// <summary>out (B,T,H·hd) and lse (B,H,T).</summary>
        public void FlashForward(ArrayView<float> outp, ArrayView<float> lse, ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<float> mask, int b, int t, int h, int hd)
        {
            CheckHd(hd);
            int g = FlashGroup, rows = g / FwdTpr;
            _flashFwd(new KernelConfig(new Index2D((t + rows - 1) / rows, b * h), new Index2D(g, 1)), outp, lse, q, k, v, mask, D(b, t, h, hd));
        }

        /// <summary>Accumulates into dq, dk, dv; <paramref name="dsum"/> (B,H,T) is scratch.</summary>
        public void FlashBackward(ArrayView<float> dq, ArrayView<float> dk, ArrayView<float> dv, ArrayView<float> dsum, ArrayView<float> dout, ArrayView<float> outp,
            ArrayView<float> lse, ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<float> mask, int b, int t, int h, int hd)
        {
            CheckHd(hd);
            var d = D(b, t, h, hd);
            int g = FlashGroup, rows = g / BwdTpr;
            _flashPrep(b * h * t, dsum, dout, outp, d);
            var cfg = new KernelConfig(new Index2D((t + rows - 1) / rows, b * h), new Index2D(g, 1));
            _flashKey(cfg, dk, dv, dout, lse, dsum, q, k, v, mask, d);
            _flashQuery(cfg, dq, dout, lse, dsum, q, k, v, mask, d);
        }
    }
}
