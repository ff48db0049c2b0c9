using System.Buffers;
using System.Numerics;
using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using NegDistill.Cpu;
namespace NegDistill.Ops;

/// <summary>
/// Causal multi-head self-attention with a key padding mask.
/// For batch b, head h, query t:  s_ts = q_t·k_s / √hd for s ≤ t with keyMask[b,s] = 1,
/// lse_t = log Σ_s exp(s_ts), P_ts = exp(s_ts − lse_t), out_t = Σ_s P_ts v_s. A query with no visible key
/// (a left padding position) gets lse = −∞, P = 0 and out = 0.
/// Backward: dP_ts = dout_t·v_s;  dS_ts = P_ts (dP_ts − Σ_s' P_ts' dP_ts');
///           dq_t = Σ_s dS_ts k_s /√hd;  dk_s = Σ_t dS_ts q_t /√hd;  dv_s = Σ_t P_ts dout_t.
/// Only out and lse (B,H,T) pass from the forward to the backward, which recomputes P from lse (the flash
/// form: no (B,H,T,T) tensor outlives a call, so memory grows with T, not T²).
///
/// This CPU twin computes one (batch, head) pair at a time as GEMMs on the pair's (T, hd) slices
/// Q, K, V of the (B,T,C) tensors (row stride C = H·hd), through the packed <see cref="Gemm"/>, with the
/// pair's (T,T) block in a scratch of its own:
///   forward   S = Q Kᵀ/√hd,  lse and P = masked row softmax of S,  out = P V;
///   backward  S again, P = exp(S − lse),  dP = dout Vᵀ,  dS = P ⊙ (dP − rowsum(P ⊙ dP)),
///             dQ += dS K/√hd,  dK += dSᵀ Q/√hd,  dV += Pᵀ dout.
/// Causality is used block-wise: query block [i0, i1) needs keys [0, i1) only, key block [j0, j1)
/// queries [j0, T) only; inside the diagonal blocks the masked entries are exact zeros of P and dS.
/// A pair's outputs are its own and computed in a fixed order (a block product big enough for the GEMM
/// to split over threads gives the same bits at any thread count), so the backend may run pairs in
/// parallel without changing a bit.
/// The kernels (kernels/NegDistill.Kernels/AttentionKernels.cs): version 2 is flash attention over key
/// blocks; version 1 worked per query row and, in the backward, per key row, keeping P.
/// <see cref="ForwardRows{T}"/> and <see cref="BackwardRows{T}"/> keep the per-row form as the reference
/// the GEMM form is tested against.
/// </summary>
public static class Attention
{
    /// <summary>Rows per query (and key) block; the last block takes the remainder (BlockRows to
    /// 2·BlockRows − 1 rows). Above 32 so that the QKᵀ block products never take the GEMM's dot-product
    /// path for few rows (slow at K = hd); 48 was the fastest of 36–128 for the small preset (hd = 48, T = 256):
    /// there the PV and dSᵀQ products stream their B operand in place. Smaller blocks skip more of the
    /// zero upper triangle (60 % of the full T² work at T = 256) but make more, smaller GEMM calls.</summary>
    const int BlockRows = 48;

    static int Blocks(int Tn) => Math.Max(1, Tn / BlockRows);
    static (int lo, int hi) Block(int i, int blocks, int Tn) => (i * BlockRows, i == blocks - 1 ? Tn : (i + 1) * BlockRows);

    /// <summary>All (batch, head) pairs in turn; the backend runs <see cref="ForwardHead{T}"/> in parallel instead.</summary>
    /// <param name="outp">(B,T,H·hd)</param><param name="lse">(B,H,T)</param>
    /// <param name="q">(B,T,H·hd)</param><param name="k">(B,T,H·hd)</param><param name="v">(B,T,H·hd)</param>
    /// <param name="keyMask">(B,T) 1 or 0</param>
    public static void Forward<T>(Span<T> outp, Span<T> lse, ReadOnlySpan<T> q, ReadOnlySpan<T> k, ReadOnlySpan<T> v,
        ReadOnlySpan<T> keyMask, int B, int Tn, int H, int hd)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        var scratch = new T[Tn * Tn];
        for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            ForwardHead(outp, lse, scratch, q, k, v, keyMask, b, h, Tn, H, hd);
    }

    /// <summary>All (batch, head) pairs in turn; the backend runs <see cref="BackwardHead{T}"/> in parallel instead.
    /// Accumulates into dq, dk, dv.</summary>
    public static void Backward<T>(Span<T> dq, Span<T> dk, Span<T> dv, ReadOnlySpan<T> dout, ReadOnlySpan<T> lse,
        ReadOnlySpan<T> q, ReadOnlySpan<T> k, ReadOnlySpan<T> v, ReadOnlySpan<T> keyMask, int B, int Tn, int H, int hd)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        var p = new T[Tn * Tn]; var ds = new T[Tn * Tn];
        for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            BackwardHead(dq, dk, dv, dout, lse, p, ds, q, k, v, keyMask, b, h, Tn, H, hd);
    }

    /// <summary>
    /// Pair (b, h) of the forward: writes out[b, :, h·hd:(h+1)·hd] and lse[b, h, :]; P lives in
    /// <paramref name="scratch"/> (T·T values, the caller's, one per thread).
    /// </summary>
    /// <param name="outp">(B,T,H·hd)</param><param name="lse">(B,H,T)</param><param name="scratch">(T,T)</param>
    /// <param name="q">(B,T,H·hd)</param><param name="k">(B,T,H·hd)</param><param name="v">(B,T,H·hd)</param>
    /// <param name="keyMask">(B,T) 1 or 0</param>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void ForwardHead<T>(Span<T> outp, Span<T> lse, Span<T> scratch, ReadOnlySpan<T> q, ReadOnlySpan<T> k, ReadOnlySpan<T> v,
        ReadOnlySpan<T> keyMask, int b, int h, int Tn, int H, int hd)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int C = H * hd, x0 = b * Tn * C + h * hd;
        T scale = T.One / T.Sqrt(T.CreateTruncating(hd));
        var P = scratch.Slice(0, Tn * Tn);                                    // (T,T)
        var L = lse.Slice((b * H + h) * Tn, Tn);                              // (T)
        ReadOnlySpan<T> Q = q.Slice(x0), K = k.Slice(x0), V = v.Slice(x0);   // (T,hd), row stride C
        var O = outp.Slice(x0);                                               // (T,hd), row stride C
        T[] biasArr = ArrayPool<T>.Shared.Rent(Tn);
        var bias = biasArr.AsSpan(0, Tn);                                     // (T): 0 for a visible key, −∞ for a padded one
        for (int s = 0; s < Tn; s++) bias[s] = keyMask[b * Tn + s] == T.Zero ? T.NegativeInfinity : T.Zero;
        int blocks = Blocks(Tn);
        for (int ib = 0; ib < blocks; ib++)
        {
            var (i0, i1) = Block(ib, blocks, Tn);
            int m = i1 - i0;
            // S[i0:i1, 0:i1] = Q[i0:i1] · K[0:i1]ᵀ / √hd, into att's rows
            Gemm.Compute(false, true, m, i1, hd, scale, Q.Slice(i0 * C), C, K, C, T.Zero, P.Slice(i0 * Tn), Tn);
            for (int t = i0; t < i1; t++)
            {
                L[t] = typeof(T) == typeof(float)
                    ? T.CreateTruncating(SoftmaxRowFloat(MemoryMarshal.Cast<T, float>(P.Slice(t * Tn, Tn)), MemoryMarshal.Cast<T, float>(bias), t))
                    : SoftmaxRow(P.Slice(t * Tn, Tn), bias, t);
            }
            // out[i0:i1] = P[i0:i1, 0:i1] · V[0:i1]
            Gemm.Compute(false, false, m, hd, i1, T.One, P.Slice(i0 * Tn), Tn, V, C, T.Zero, O.Slice(i0 * C), C);
        }
        ArrayPool<T>.Shared.Return(biasArr);
    }

    /// <summary>Row t of P in place: entries [0, t] hold the scores s_t·; masked keys get −∞ through
    /// <paramref name="bias"/>, then P_t = exp(s − max)/Σ; entries past t are cleared. Returns the row's
    /// log-sum-exp, max + log Σ (−∞ with P_t = 0 when no key is visible). The generic form (the fp64 oracle).</summary>
    /// <param name="row">(T)</param><param name="bias">(T)</param>
    static T SoftmaxRow<T>(Span<T> row, ReadOnlySpan<T> bias, int t)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        var r = row.Slice(0, t + 1);
        TensorPrimitives.Add(r, bias.Slice(0, t + 1), r);
        T max = TensorPrimitives.Max<T>(r);
        if (max == T.NegativeInfinity) { row.Clear(); return T.NegativeInfinity; }
        TensorPrimitives.Subtract(r, max, r);
        TensorPrimitives.Exp<T>(r, r);
        T sum = TensorPrimitives.Sum<T>(r);
        TensorPrimitives.Multiply(r, T.One / sum, r);
        row.Slice(t + 1).Clear();
        return max + T.Log(sum);
    }

    /// <summary>Row t of P recomputed in place from its scores and log-sum-exp: P_ts = exp(s_ts + bias_s −
    /// lse_t) for s ≤ t, entries past t cleared; a row with lse = −∞ is all zeros. The generic form.</summary>
    static void PFromLseRow<T>(Span<T> row, ReadOnlySpan<T> bias, T lse, int t)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        if (lse == T.NegativeInfinity) { row.Clear(); return; }
        var r = row.Slice(0, t + 1);
        TensorPrimitives.Add(r, bias.Slice(0, t + 1), r);
        TensorPrimitives.Subtract(r, lse, r);
        TensorPrimitives.Exp<T>(r, r);
        row.Slice(t + 1).Clear();
    }

    /// <summary>Row t of dS in place: entries [0, t] hold dP_t·; dS_ts = P_ts (dP_ts − Σ_s' P_ts' dP_ts'),
    /// entries past t are cleared. The generic form.</summary>
    /// <param name="row">(T)</param><param name="prow">(T) row t of P</param>
    static void SoftmaxGradRow<T>(Span<T> row, ReadOnlySpan<T> prow, int t)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        var r = row.Slice(0, t + 1);
        var p = prow.Slice(0, t + 1);
        T acc = TensorPrimitives.Dot<T>(p, r);
        TensorPrimitives.Subtract(r, acc, r);
        TensorPrimitives.Multiply(r, p, r);
        row.Slice(t + 1).Clear();
    }

    // The float rows, written out against IVecF (512, 256 or 128 bits, whichever the JIT accelerates) so that
    // they run at full speed from the first call (the library's generic span primitives start in the JIT's
    // unoptimised tier and stay there for the first few hundred calls). Same math as the generic forms; exp is
    // VecMath.ExpNeg (≤ 2 ulp). The AVX-512 bits are those of the AVX-512-only version these replaced.

    /// <summary><see cref="SoftmaxRow{T}"/> for float at the widest accelerated width.</summary>
    static float SoftmaxRowFloat(Span<float> row, ReadOnlySpan<float> bias, int t) =>
        Vector512.IsHardwareAccelerated ? SoftmaxRowF<Vector512<float>, V512>(row, bias, t)
        : Vector256.IsHardwareAccelerated ? SoftmaxRowF<Vector256<float>, V256>(row, bias, t)
        : SoftmaxRowF<Vector128<float>, V128>(row, bias, t);

    /// <summary><see cref="PFromLseRow{T}"/> for float at the widest accelerated width.</summary>
    static void PFromLseRowFloat(Span<float> row, ReadOnlySpan<float> bias, float lse, int t)
    {
        if (Vector512.IsHardwareAccelerated) PFromLseRowF<Vector512<float>, V512>(row, bias, lse, t);
        else if (Vector256.IsHardwareAccelerated) PFromLseRowF<Vector256<float>, V256>(row, bias, lse, t);
        else PFromLseRowF<Vector128<float>, V128>(row, bias, lse, t);
    }

    /// <summary><see cref="PFromLseRow{T}"/> for float, W = TS.Count lanes; s + bias − lse ≤ 0, so ExpNeg applies.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static unsafe void PFromLseRowF<TV, TS>(Span<float> row, ReadOnlySpan<float> bias, float lse, int t) where TV : unmanaged where TS : IVecF<TV>
    {
        if (lse == float.NegativeInfinity) { row.Clear(); return; }
        int w = TS.Count, n = t + 1, full = n / w * w;
        var vl = TS.Splat(lse);
        fixed (float* r = row) fixed (float* bs = bias)
        {
            for (int i = 0; i < full; i += w)
                TS.Store(r + i, VecMath.ExpNeg<TV, TS>(TS.Sub(TS.Add(TS.Load(r + i), TS.Load(bs + i)), vl)));
            for (int i = full; i < n; i++) r[i] = MathF.Exp(MathF.Min(0f, r[i] + bs[i] - lse));
        }
        row.Slice(n).Clear();
    }

    /// <summary><see cref="SoftmaxGradRow{T}"/> for float at the widest accelerated width.</summary>
    static void SoftmaxGradRowFloat(Span<float> row, ReadOnlySpan<float> prow, int t)
    {
        if (Vector512.IsHardwareAccelerated) SoftmaxGradRowF<Vector512<float>, V512>(row, prow, t);
        else if (Vector256.IsHardwareAccelerated) SoftmaxGradRowF<Vector256<float>, V256>(row, prow, t);
        else SoftmaxGradRowF<Vector128<float>, V128>(row, prow, t);
    }

    /// <summary><see cref="SoftmaxRow{T}"/> for float, W = TS.Count lanes.</summary>
    /// <param name="row">(T)</param><param name="bias">(T)</param>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static unsafe float SoftmaxRowF<TV, TS>(Span<float> row, ReadOnlySpan<float> bias, int t) where TV : unmanaged where TS : IVecF<TV>
    {
        float lse;
        int w = TS.Count, n = t + 1, full = n / w * w, rem = n - full;
        float* tail = stackalloc float[16];
        fixed (float* r = row) fixed (float* bs = bias)
        {
            // masked keys to −∞, and the running max
            var vmax = TS.Splat(float.NegativeInfinity);
            for (int i = 0; i < full; i += w)
            {
                var x = TS.Add(TS.Load(r + i), TS.Load(bs + i));
                TS.Store(r + i, x);
                vmax = TS.Max(vmax, x);
            }
            // the last n % W entries go through a W-wide buffer padded with −∞ (exp → 0)
            for (int j = 0; j < w; j++) tail[j] = j < rem ? r[full + j] + bs[full + j] : float.NegativeInfinity;
            var xt = TS.Load(tail);
            vmax = TS.Max(vmax, xt);
            float max = TS.MaxAcross(vmax);
            if (max == float.NegativeInfinity) { row.Clear(); return float.NegativeInfinity; }
            var vm = TS.Splat(max);
            var vsum = TS.Splat(0f);
            for (int i = 0; i < full; i += w)
            {
                var e = VecMath.ExpNeg<TV, TS>(TS.Sub(TS.Load(r + i), vm));
                TS.Store(r + i, e);
                vsum = TS.Add(vsum, e);
            }
            var et = VecMath.ExpNeg<TV, TS>(TS.Sub(xt, vm));
            vsum = TS.Add(vsum, et);
            float sum = TS.Sum(vsum);
            var vinv = TS.Splat(1f / sum);
            for (int i = 0; i < full; i += w) TS.Store(r + i, TS.Mul(TS.Load(r + i), vinv));
            TS.Store(tail, TS.Mul(et, vinv));
            for (int j = 0; j < rem; j++) r[full + j] = tail[j];
            lse = max + MathF.Log(sum);
        }
        row.Slice(n).Clear();
        return lse;
    }

    /// <summary><see cref="SoftmaxGradRow{T}"/> for float, W = TS.Count lanes.</summary>
    /// <param name="row">(T)</param><param name="prow">(T)</param>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static unsafe void SoftmaxGradRowF<TV, TS>(Span<float> row, ReadOnlySpan<float> prow, int t) where TV : unmanaged where TS : IVecF<TV>
    {
        int w = TS.Count, n = t + 1, full = n / w * w;
        bool fma = Fma.IsSupported || System.Runtime.Intrinsics.Arm.AdvSimd.IsSupported;
        fixed (float* r = row) fixed (float* p = prow)
        {
            var vacc = TS.Splat(0f);
            for (int i = 0; i < full; i += w) vacc = TS.Fma(TS.Load(p + i), TS.Load(r + i), vacc);
            float acc = TS.Sum(vacc);
            for (int i = full; i < n; i++) acc = fma ? MathF.FusedMultiplyAdd(p[i], r[i], acc) : p[i] * r[i] + acc;
            var va = TS.Splat(acc);
            for (int i = 0; i < full; i += w) TS.Store(r + i, TS.Mul(TS.Load(p + i), TS.Sub(TS.Load(r + i), va)));
            for (int i = full; i < n; i++) r[i] = p[i] * (r[i] - acc);
        }
        row.Slice(n).Clear();
    }

    /// <summary>
    /// Pair (b, h) of the backward: recomputes P from lse into <paramref name="pScratch"/>, dS into
    /// <paramref name="dsScratch"/> (T·T each, the caller's), and adds into dq, dk, dv[b, :, h·hd:(h+1)·hd].
    /// </summary>
    /// <param name="dq">(B,T,H·hd)</param><param name="dk">(B,T,H·hd)</param><param name="dv">(B,T,H·hd)</param>
    /// <param name="dout">(B,T,H·hd)</param><param name="lse">(B,H,T) of the forward</param>
    /// <param name="q">(B,T,H·hd)</param><param name="k">(B,T,H·hd)</param><param name="v">(B,T,H·hd)</param>
    /// <param name="keyMask">(B,T) 1 or 0</param>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void BackwardHead<T>(Span<T> dq, Span<T> dk, Span<T> dv, ReadOnlySpan<T> dout, ReadOnlySpan<T> lse, Span<T> pScratch, Span<T> dsScratch,
        ReadOnlySpan<T> q, ReadOnlySpan<T> k, ReadOnlySpan<T> v, ReadOnlySpan<T> keyMask, int b, int h, int Tn, int H, int hd)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int C = H * hd, x0 = b * Tn * C + h * hd;
        T scale = T.One / T.Sqrt(T.CreateTruncating(hd));
        var P = pScratch.Slice(0, Tn * Tn);                                   // (T,T)
        var dS = dsScratch.Slice(0, Tn * Tn);                                 // (T,T)
        var L = lse.Slice((b * H + h) * Tn, Tn);
        ReadOnlySpan<T> Q = q.Slice(x0), K = k.Slice(x0), V = v.Slice(x0), dO = dout.Slice(x0);   // (T,hd), row stride C
        Span<T> dQ = dq.Slice(x0), dK = dk.Slice(x0), dV = dv.Slice(x0);                         // (T,hd), row stride C
        T[] biasArr = ArrayPool<T>.Shared.Rent(Tn);
        var bias = biasArr.AsSpan(0, Tn);
        for (int s = 0; s < Tn; s++) bias[s] = keyMask[b * Tn + s] == T.Zero ? T.NegativeInfinity : T.Zero;
        int blocks = Blocks(Tn);
        for (int ib = 0; ib < blocks; ib++)
        {
            var (i0, i1) = Block(ib, blocks, Tn);
            int m = i1 - i0;
            // P[i0:i1, 0:i1] = exp(Q[i0:i1] · K[0:i1]ᵀ / √hd − lse);  dP[i0:i1, 0:i1] = dout[i0:i1] · V[0:i1]ᵀ
            Gemm.Compute(false, true, m, i1, hd, scale, Q.Slice(i0 * C), C, K, C, T.Zero, P.Slice(i0 * Tn), Tn);
            Gemm.Compute(false, true, m, i1, hd, T.One, dO.Slice(i0 * C), C, V, C, T.Zero, dS.Slice(i0 * Tn), Tn);
            for (int t = i0; t < i1; t++)
            {
                if (typeof(T) == typeof(float))
                {
                    PFromLseRowFloat(MemoryMarshal.Cast<T, float>(P.Slice(t * Tn, Tn)), MemoryMarshal.Cast<T, float>(bias), float.CreateTruncating(L[t]), t);
                    SoftmaxGradRowFloat(MemoryMarshal.Cast<T, float>(dS.Slice(t * Tn, Tn)), MemoryMarshal.Cast<T, float>(P.Slice(t * Tn, Tn)), t);
                }
                else
                {
                    PFromLseRow(P.Slice(t * Tn, Tn), bias, L[t], t);
                    SoftmaxGradRow(dS.Slice(t * Tn, Tn), P.Slice(t * Tn, Tn), t);
                }
            }
            // dQ[i0:i1] += dS[i0:i1, 0:i1] · K[0:i1] / √hd
            Gemm.Compute(false, false, m, hd, i1, scale, dS.Slice(i0 * Tn), Tn, K, C, T.One, dQ.Slice(i0 * C), C);
        }
        ArrayPool<T>.Shared.Return(biasArr);
        for (int jb = 0; jb < blocks; jb++)
        {
            var (j0, j1) = Block(jb, blocks, Tn);
            int n = j1 - j0, rows = Tn - j0;
            // dK[j0:j1] += dS[j0:T, j0:j1]ᵀ · Q[j0:T] / √hd;   dV[j0:j1] += P[j0:T, j0:j1]ᵀ · dout[j0:T]
            Gemm.Compute(true, false, n, hd, rows, scale, dS.Slice(j0 * Tn + j0), Tn, Q.Slice(j0 * C), C, T.One, dK.Slice(j0 * C), C);
            Gemm.Compute(true, false, n, hd, rows, T.One, P.Slice(j0 * Tn + j0), Tn, dO.Slice(j0 * C), C, T.One, dV.Slice(j0 * C), C);
        }
    }

    // ───────────── reference: the per-row form of the kernels, for the tests ─────────────
    /// <summary>The forward one (row, head) at a time with vector dot products, as version 1 of the kernels did;
    /// same outputs as <see cref="Forward{T}"/> up to rounding.</summary>
    /// <param name="outp">(B,T,H·hd)</param><param name="lse">(B,H,T)</param>
    /// <param name="q">(B,T,H·hd)</param><param name="k">(B,T,H·hd)</param><param name="v">(B,T,H·hd)</param>
    /// <param name="keyMask">(B,T) 1 or 0</param>
    public static void ForwardRows<T>(Span<T> outp, Span<T> lse, ReadOnlySpan<T> q, ReadOnlySpan<T> k, ReadOnlySpan<T> v,
        ReadOnlySpan<T> keyMask, int B, int Tn, int H, int hd)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int C = H * hd;
        T scale = T.One / T.Sqrt(T.CreateTruncating(hd));
        var prow = new T[Tn];
        for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
        for (int t = 0; t < Tn; t++)
        {
            var qt = q.Slice((b * Tn + t) * C + h * hd, hd);
            T max = T.NegativeInfinity;
            for (int s = 0; s <= t; s++)
            {
                if (keyMask[b * Tn + s] == T.Zero) continue;
                T dot = TensorPrimitives.Dot(qt, k.Slice((b * Tn + s) * C + h * hd, hd)) * scale;
                prow[s] = dot;
                if (dot > max) max = dot;
            }
            T sum = T.Zero;
            for (int s = 0; s <= t; s++)
            {
                bool visible = keyMask[b * Tn + s] != T.Zero;
                T e = visible ? T.Exp(prow[s] - max) : T.Zero;
                prow[s] = e;
                sum += e;
            }
            T inv = sum > T.Zero ? T.One / sum : T.Zero;
            lse[(b * H + h) * Tn + t] = sum > T.Zero ? max + T.Log(sum) : T.NegativeInfinity;
            var ot = outp.Slice((b * Tn + t) * C + h * hd, hd);
            ot.Clear();
            for (int s = 0; s <= t; s++)
            {
                T p = prow[s] * inv;
                if (p == T.Zero) continue;
                TensorPrimitives.MultiplyAdd(v.Slice((b * Tn + s) * C + h * hd, hd), p, ot, ot);
            }
        }
    }

    /// <summary>The backward per query row (P from lse, dS, dq), then per key row (dk, dv), as version 1 of the
    /// kernels split it; same outputs as <see cref="Backward{T}"/> up to rounding.</summary>
    public static void BackwardRows<T>(Span<T> dq, Span<T> dk, Span<T> dv, ReadOnlySpan<T> dout, ReadOnlySpan<T> lse,
        ReadOnlySpan<T> q, ReadOnlySpan<T> k, ReadOnlySpan<T> v, ReadOnlySpan<T> keyMask, int B, int Tn, int H, int hd)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int C = H * hd;
        T scale = T.One / T.Sqrt(T.CreateTruncating(hd));
        var att = new T[B * H * Tn * Tn];
        var datt = new T[B * H * Tn * Tn];
        // pass 1, per query row: P, dS and dq
        for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
        for (int t = 0; t < Tn; t++)
        {
            int row = ((b * H + h) * Tn + t) * Tn;
            T l = lse[(b * H + h) * Tn + t];
            var qt = q.Slice((b * Tn + t) * C + h * hd, hd);
            var dot = dout.Slice((b * Tn + t) * C + h * hd, hd);
            T acc = T.Zero;
            for (int s = 0; s <= t; s++)
            {
                bool visible = keyMask[b * Tn + s] != T.Zero && l != T.NegativeInfinity;
                att[row + s] = visible ? T.Exp(TensorPrimitives.Dot(qt, k.Slice((b * Tn + s) * C + h * hd, hd)) * scale - l) : T.Zero;
                T d = TensorPrimitives.Dot(dot, v.Slice((b * Tn + s) * C + h * hd, hd));
                datt[row + s] = d;
                acc += att[row + s] * d;
            }
            var dqt = dq.Slice((b * Tn + t) * C + h * hd, hd);
            for (int s = 0; s <= t; s++)
            {
                T ds = att[row + s] * (datt[row + s] - acc);
                datt[row + s] = ds;
                if (ds == T.Zero) continue;
                TensorPrimitives.MultiplyAdd(k.Slice((b * Tn + s) * C + h * hd, hd), ds * scale, dqt, dqt);
            }
        }
        // pass 2, per key row: dk and dv
        for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
        for (int s = 0; s < Tn; s++)
        {
            var dks = dk.Slice((b * Tn + s) * C + h * hd, hd);
            var dvs = dv.Slice((b * Tn + s) * C + h * hd, hd);
            for (int t = s; t < Tn; t++)
            {
                int row = ((b * H + h) * Tn + t) * Tn;
                T ds = datt[row + s], p = att[row + s];
                if (ds != T.Zero) TensorPrimitives.MultiplyAdd(q.Slice((b * Tn + t) * C + h * hd, hd), ds * scale, dks, dks);
                if (p != T.Zero) TensorPrimitives.MultiplyAdd(dout.Slice((b * Tn + t) * C + h * hd, hd), p, dvs, dvs);
            }
        }
    }
}
