using System.Buffers;
using System.Numerics;
using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace NegDistill.Ops;

/// <summary>
/// Negative Calibrated Enhancement (method.md, Step 2): calibrated distillation from the NAT model,
/// each sequence weighted by how far the negative model's view departs from NAT's.
/// CPU twin of kernels/NegDistill.Kernels/NceKernels.cs. The temperature is written τ here (T is the
/// element type). Per token row t over a vocabulary of V:
///
///   p_nat = softmax(z_nat/τ)      p_neg = softmax(z_neg/τ)      q = softmax(z_s/τ)   p = softmax(z_s)
///   KL_t  = Σ_v p_neg(v) · ( log(p_neg(v) + 1e-7) − log(p_nat(v) + 1e-7) )            (<see cref="Kl{T}"/>)
///   β_b   = tanh( Σ_t m_bt KL_t / Σ_t m_bt )        m = attention mask                (<see cref="SequenceBeta{T}"/>)
///   w_t   = m_t · (0.5 + β_b) for the sequence b holding row t, m the attention mask     (<see cref="RowWeights"/>)
///   ce_t  = logsumexp(z_s) − z_s[y_t]
///   kd_t  = −τ² · w_t · Σ_v p_nat(v) · log q(v)
///   L     = (1 − a) · ceScale · Σ_t ce_t + a · kdScale · Σ_t kd_t                      (<see cref="DistillFused{T}"/>)
///
/// Gradient (z_nat, z_neg and w are constants — neither teacher gets gradients, and β is a weight):
///   ∂ce_t/∂z_s(u) = p(u) − [u = y]
///   ∂kd_t/∂z_s(u) = −τ² w Σ_v p_nat(v) · (1/τ)([u = v] − q(u)) = τ · w · (q(u) − p_nat(u))     (Σ_v p_nat = 1)
///   ∂L/∂z_s       = (1 − a)·ceScale·(p − onehot(y)) + a·kdScale·τ·w·(q − p_nat)
/// With τ = 1, q = p. As in method.md, CE runs over the rows with a next-token target and KD over the
/// attention mask (m_t): a row with y &lt; 0 but w_t &gt; 0 (a sequence's last real token) has KD only; a
/// row with y &lt; 0 and w_t = 0 (padding) has zero losses and zero gradient.
///
/// Numerics: Σ_v p_nat log q is formed as Σ_v p_nat(v)·(z_s(v) − max z_s)/τ − log Σ exp((z_s − max z_s)/τ),
/// so no log of a small probability is taken and no large logit is subtracted from another late.
/// The fused op keeps a few V-long scratch rows per call (exponentials), never a second rows×V buffer.
/// Two implementations of the same math: the generic one below (one TensorPrimitives call per pass;
/// with T = double it is the oracle) and, for fp32 on AVX-512 hardware, <see cref="F32"/>, whose
/// hand-fused loops stream each row three times instead of ~11.
/// </summary>
public static class Nce
{
    /// <summary>The constant added to the probabilities inside the logs of KL_t (method.md).</summary>
    public const double Epsilon = 1e-7;

    /// <summary>Per-row KL_t of p_neg from p_nat at temperature τ, in the log(p + 1e-7) form.</summary>
    /// <param name="zNat">(rows,V) NAT logits</param><param name="zNeg">(rows,V) LoRA_neg logits</param>
    /// <param name="kl">(rows) out</param>
    public static void Kl<T>(ReadOnlySpan<T> zNat, ReadOnlySpan<T> zNeg, Span<T> kl, int rows, int v, float temperature)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        T invTau = InverseTemperature<T>(temperature), eps = T.CreateTruncating(Epsilon);
        if (Fast<T>())
        {
            F32.Kl(MemoryMarshal.Cast<T, float>(zNat), MemoryMarshal.Cast<T, float>(zNeg), MemoryMarshal.Cast<T, float>(kl), rows, v, 1f / temperature);
            return;
        }
        var pool = ArrayPool<T>.Shared;
        T[] a = pool.Rent(v), b = pool.Rent(v), c = pool.Rent(v);
        try
        {
            Span<T> pNeg = a.AsSpan(0, v), pNat = b.AsSpan(0, v), logRatio = c.AsSpan(0, v);
            for (int i = 0; i < rows; i++)
            {
                Softmax(zNeg.Slice(i * v, v), invTau, pNeg);
                Softmax(zNat.Slice(i * v, v), invTau, pNat);
                TensorPrimitives.Add(pNeg, eps, logRatio);
                TensorPrimitives.Log(logRatio, logRatio);                    // log(p_neg + ε)
                TensorPrimitives.Add(pNat, eps, pNat);
                TensorPrimitives.Log(pNat, pNat);                            // log(p_nat + ε)
                TensorPrimitives.Subtract(logRatio, pNat, logRatio);
                kl[i] = TensorPrimitives.Dot(pNeg, (ReadOnlySpan<T>)logRatio);
            }
        }
        finally { pool.Return(a); pool.Return(b); pool.Return(c); }
    }

    /// <summary>Fused calibrated-distillation loss and gradient (see the class comment).</summary>
    /// <param name="zs">(rows,V) in: student logits; out (when computeGrad): dL/dz_s</param>
    /// <param name="zNat">(rows,V) NAT teacher logits</param>
    /// <param name="targets">(rows) next-token ids, −1 where the row has none</param>
    /// <param name="rowWeight">(rows) m_t·(0.5 + β_b): 0 outside the attention mask</param>
    /// <param name="lossCe">(rows) out: ce_t</param><param name="lossKd">(rows) out: kd_t (w_t and τ² included)</param>
    public static void DistillFused<T>(Span<T> zs, ReadOnlySpan<T> zNat, ReadOnlySpan<int> targets, ReadOnlySpan<T> rowWeight,
        Span<T> lossCe, Span<T> lossKd, int rows, int v, float temperature, float a, double ceScale, double kdScale, bool computeGrad)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        T invTau = InverseTemperature<T>(temperature), tau = T.CreateTruncating(temperature);
        bool unit = temperature == 1f;
        T aa = T.CreateTruncating(a);
        T c1 = (T.One - aa) * T.CreateTruncating(ceScale);                 // CE coefficient
        T kdCoef = aa * T.CreateTruncating(kdScale) * tau;                   // × w_t gives the KD coefficient
        if (Fast<T>())
        {
            F32.DistillFused(MemoryMarshal.Cast<T, float>(zs), MemoryMarshal.Cast<T, float>(zNat), targets, MemoryMarshal.Cast<T, float>(rowWeight),
                MemoryMarshal.Cast<T, float>(lossCe), MemoryMarshal.Cast<T, float>(lossKd), rows, v, temperature, float.CreateTruncating(c1),
                float.CreateTruncating(kdCoef), computeGrad);
            return;
        }
        var pool = ArrayPool<T>.Shared;
        T[] bufT = pool.Rent(v), bufN = pool.Rent(v), buf1 = pool.Rent(unit ? 1 : v);
        try
        {
            Span<T> eT = bufT.AsSpan(0, v), eN = bufN.AsSpan(0, v);
            for (int i = 0; i < rows; i++)
            {
                var z = zs.Slice(i * v, v);
                var zn = zNat.Slice(i * v, v);
                int y = targets[i];
                T w = rowWeight[i];
                if (y < 0 && w == T.Zero)
                {
                    lossCe[i] = T.Zero; lossKd[i] = T.Zero;
                    if (computeGrad) z.Clear();
                    continue;
                }
                if (y >= v) throw new ArgumentOutOfRangeException(nameof(targets), $"target {y} at row {i} is outside the vocabulary of {v}");
                T c1r = y >= 0 ? c1 : T.Zero;                                     // no target: KD only

                T ms = TensorPrimitives.Max<T>(z);
                TensorPrimitives.Subtract(z, ms, eT);
                if (!unit) TensorPrimitives.Multiply(eT, invTau, eT);            // eT = (z_s − m_s)/τ
                T mn = TensorPrimitives.Max(zn);
                TensorPrimitives.Subtract(zn, mn, eN);
                if (!unit) TensorPrimitives.Multiply(eN, invTau, eN);
                TensorPrimitives.Exp(eN, eN);                                    // eN = exp((z_nat − m_nat)/τ)
                T sN = TensorPrimitives.Sum<T>(eN);
                T cross = TensorPrimitives.Dot<T>(eN, eT) / sN;                  // Σ p_nat (z_s − m_s)/τ
                TensorPrimitives.Exp(eT, eT);                                    // eT = exp((z_s − m_s)/τ)
                T sT = TensorPrimitives.Sum<T>(eT);
                lossKd[i] = -(tau * tau) * w * (cross - T.Log(sT));

                Span<T> e1 = eT; T s1 = sT;                                     // exp(z_s − m_s) and its sum
                if (!unit)
                {
                    e1 = buf1.AsSpan(0, v);
                    TensorPrimitives.Subtract(z, ms, e1);
                    TensorPrimitives.Exp(e1, e1);
                    s1 = TensorPrimitives.Sum<T>(e1);
                }
                lossCe[i] = y >= 0 ? ms + T.Log(s1) - z[y] : T.Zero;
                if (!computeGrad) continue;

                T c2 = kdCoef * w;
                if (unit) TensorPrimitives.Multiply(e1, c1r / s1 + c2 / sT, z);  // (c1 + c2)·p
                else
                {
                    TensorPrimitives.Multiply(e1, c1r / s1, z);                   // c1·p
                    TensorPrimitives.MultiplyAdd(eT, c2 / sT, z, z);            // + c2·q
                }
                TensorPrimitives.MultiplyAdd(eN, -c2 / sN, z, z);               // − c2·p_nat
                if (y >= 0) z[y] -= c1r;
            }
        }
        finally { pool.Return(bufT); pool.Return(bufN); pool.Return(buf1); }
    }

    /// <summary>β_b = tanh(Σ_t m_bt KL_t / Σ_t m_bt) for each of the b sequences of t rows; 0 for a
    /// sequence without a real token.</summary>
    /// <param name="kl">(b·t)</param><param name="mask">(b·t) attention mask</param>
    public static double[] SequenceBeta<T>(ReadOnlySpan<T> kl, ReadOnlySpan<float> mask, int b, int t)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        if (kl.Length < b * t || mask.Length < b * t) throw new ArgumentException($"β over {b}×{t} rows needs that many KL and mask values (got {kl.Length}, {mask.Length})");
        var beta = new double[b];
        for (int s = 0; s < b; s++)
        {
            double num = 0, den = 0;
            for (int j = 0; j < t; j++)
            {
                double m = mask[s * t + j];
                if (m == 0) continue;                                           // pads may hold anything
                num += m * double.CreateTruncating(kl[s * t + j]);
                den += m;
            }
            beta[s] = den > 0 ? Math.Tanh(num / den) : 0;
        }
        return beta;
    }

    /// <summary>Per-row weights m_t·(0.5 + β_b), (b·t) values, row-major by sequence; an empty
    /// <paramref name="mask"/> means every row is a real token.</summary>
    public static float[] RowWeights(ReadOnlySpan<double> beta, int t, ReadOnlySpan<float> mask = default)
    {
        if (!mask.IsEmpty && mask.Length < beta.Length * t) throw new ArgumentException($"row weights over {beta.Length}×{t} rows need that many mask values (got {mask.Length})");
        var w = new float[beta.Length * t];
        for (int s = 0; s < beta.Length; s++)
            for (int j = 0; j < t; j++) w[s * t + j] = (mask.IsEmpty ? 1f : mask[s * t + j]) * (float)(0.5 + beta[s]);
        return w;
    }

    /// <summary>fp32 with 512-bit vectors: the fused loops of <see cref="F32"/>; otherwise (the fp64 oracle,
    /// or hardware without AVX-512) the TensorPrimitives form above, one primitive per pass.</summary>
    static bool Fast<T>() => typeof(T) == typeof(float) && Vector512.IsHardwareAccelerated;

    /// <summary>
    /// The fp32 fast path: the same math as the generic form, with the per-row primitives fused into
    /// three passes over the row (both maxima; exponentials, their sums and the cross term; the
    /// gradient or the KL terms), 16 lanes at a time, so each V-long row is streamed 3 times rather
    /// than ~11. Exponentials are kept in two V-long scratch rows (three when τ ≠ 1).
    /// </summary>
    static class F32
    {
        const int W = 16;   // Vector512<float>.Count

        public static void Kl(ReadOnlySpan<float> zNat, ReadOnlySpan<float> zNeg, Span<float> kl, int rows, int v, float invTau)
        {
            var pool = ArrayPool<float>.Shared;
            float[] bufA = pool.Rent(v), bufB = pool.Rent(v);
            try
            {
                Span<float> eA = bufA.AsSpan(0, v), eB = bufB.AsSpan(0, v);
                for (int i = 0; i < rows; i++)
                {
                    var a = zNeg.Slice(i * v, v);
                    var b = zNat.Slice(i * v, v);
                    var (ma, mb) = Max2(a, b);
                    float sa = ExpShifted(a, ma, invTau, eA), sb = ExpShifted(b, mb, invTau, eB);
                    kl[i] = KlTerms(eA, eB, 1f / sa, 1f / sb);
                }
            }
            finally { pool.Return(bufA); pool.Return(bufB); }
        }

        public static void DistillFused(Span<float> zs, ReadOnlySpan<float> zNat, ReadOnlySpan<int> targets, ReadOnlySpan<float> rowWeight,
            Span<float> lossCe, Span<float> lossKd, int rows, int v, float tau, float c1, float kdCoef, bool computeGrad)
        {
            bool unit = tau == 1f;
            float invTau = 1f / tau;
            var pool = ArrayPool<float>.Shared;
            float[] bufT = pool.Rent(v), bufN = pool.Rent(v), buf1 = pool.Rent(unit ? 1 : v);
            try
            {
                for (int i = 0; i < rows; i++)
                {
                    var z = zs.Slice(i * v, v);
                    int y = targets[i];
                    float w = rowWeight[i];
                    if (y < 0 && w == 0f)
                    {
                        lossCe[i] = 0f; lossKd[i] = 0f;
                        if (computeGrad) z.Clear();
                        continue;
                    }
                    if (y >= v) throw new ArgumentOutOfRangeException(nameof(targets), $"target {y} at row {i} is outside the vocabulary of {v}");
                    var zn = zNat.Slice(i * v, v);
                    Span<float> eT = bufT.AsSpan(0, v), eN = bufN.AsSpan(0, v), e1 = unit ? eT : buf1.AsSpan(0, v);
                    var (ms, mn) = Max2(z, zn);
                    var (sT, sN, s1, cross) = Exponentials(z, zn, ms, mn, invTau, unit, eT, eN, e1);
                    float c1r = y >= 0 ? c1 : 0f;                                 // no target: KD only
                    lossKd[i] = -(tau * tau) * w * (cross / sN - MathF.Log(sT));
                    lossCe[i] = y >= 0 ? ms + MathF.Log(s1) - z[y] : 0f;
                    if (!computeGrad) continue;
                    float c2 = kdCoef * w;
                    if (unit) Combine(z, eT, c1r / s1 + c2 / sT, eN, -c2 / sN);
                    else Combine(z, e1, c1r / s1, eT, c2 / sT, eN, -c2 / sN);
                    if (y >= 0) z[y] -= c1r;
                }
            }
            finally { pool.Return(bufT); pool.Return(bufN); pool.Return(buf1); }
        }

        /// <summary>(max a, max b) in one pass.</summary>
        static (float, float) Max2(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
        {
            ref float ra = ref MemoryMarshal.GetReference(a), rb = ref MemoryMarshal.GetReference(b);
            var va = Vector512.Create(float.NegativeInfinity); var vb = va;
            int n = a.Length, j = 0;
            for (; j <= n - W; j += W)
            {
                va = Vector512.Max(va, Vector512.LoadUnsafe(ref ra, (nuint)j));
                vb = Vector512.Max(vb, Vector512.LoadUnsafe(ref rb, (nuint)j));
            }
            float ma = float.NegativeInfinity, mb = float.NegativeInfinity;
            for (int k = 0; k < W; k++) { ma = MathF.Max(ma, va[k]); mb = MathF.Max(mb, vb[k]); }
            for (; j < n; j++) { ma = MathF.Max(ma, a[j]); mb = MathF.Max(mb, b[j]); }
            return (ma, mb);
        }

        /// <summary>e = exp((z − m)·invTau); returns Σ e.</summary>
        static float ExpShifted(ReadOnlySpan<float> z, float m, float invTau, Span<float> e)
        {
            ref float rz = ref MemoryMarshal.GetReference(z); ref float re = ref MemoryMarshal.GetReference(e);
            var vm = Vector512.Create(m); var vt = Vector512.Create(invTau); var acc = Vector512<float>.Zero;
            int n = z.Length, j = 0;
            for (; j <= n - W; j += W)
            {
                var x = Vector512.Exp((Vector512.LoadUnsafe(ref rz, (nuint)j) - vm) * vt);
                x.StoreUnsafe(ref re, (nuint)j);
                acc += x;
            }
            float s = Vector512.Sum(acc);
            for (; j < n; j++) { e[j] = MathF.Exp((z[j] - m) * invTau); s += e[j]; }
            return s;
        }

        /// <summary>Σ pa·(log(pa + ε) − log(pb + ε)) with pa = ea·ia, pb = eb·ib.</summary>
        static float KlTerms(ReadOnlySpan<float> ea, ReadOnlySpan<float> eb, float ia, float ib)
        {
            ref float ra = ref MemoryMarshal.GetReference(ea); ref float rb = ref MemoryMarshal.GetReference(eb);
            var via = Vector512.Create(ia); var vib = Vector512.Create(ib); var veps = Vector512.Create((float)Epsilon); var acc = Vector512<float>.Zero;
            int n = ea.Length, j = 0;
            for (; j <= n - W; j += W)
            {
                var pa = Vector512.LoadUnsafe(ref ra, (nuint)j) * via;
                var pb = Vector512.LoadUnsafe(ref rb, (nuint)j) * vib;
                acc += pa * (Vector512.Log(pa + veps) - Vector512.Log(pb + veps));
            }
            float s = Vector512.Sum(acc);
            for (; j < n; j++)
            {
                float pa = ea[j] * ia, pb = eb[j] * ib;
                s += pa * (MathF.Log(pa + (float)Epsilon) - MathF.Log(pb + (float)Epsilon));
            }
            return s;
        }

        /// <summary>One pass over a row pair: eT = exp((z − ms)/τ), eN = exp((z_nat − mn)/τ) and, when τ ≠ 1,
        /// e1 = exp(z − ms); returns their sums and cross = Σ eN·(z − ms)/τ.</summary>
        static (float sT, float sN, float s1, float cross) Exponentials(ReadOnlySpan<float> z, ReadOnlySpan<float> zn, float ms, float mn, float invTau,
            bool unit, Span<float> eT, Span<float> eN, Span<float> e1)
        {
            ref float rz = ref MemoryMarshal.GetReference(z); ref float rn = ref MemoryMarshal.GetReference(zn);
            ref float rt = ref MemoryMarshal.GetReference(eT); ref float rN = ref MemoryMarshal.GetReference(eN); ref float r1 = ref MemoryMarshal.GetReference(e1);
            var vms = Vector512.Create(ms); var vmn = Vector512.Create(mn); var vt = Vector512.Create(invTau);
            var aT = Vector512<float>.Zero; var aN = aT; var a1 = aT; var aX = aT;
            int n = z.Length, j = 0;
            for (; j <= n - W; j += W)
            {
                var dz = Vector512.LoadUnsafe(ref rz, (nuint)j) - vms;
                var d = dz * vt;
                var en = Vector512.Exp((Vector512.LoadUnsafe(ref rn, (nuint)j) - vmn) * vt);
                var et = Vector512.Exp(d);
                en.StoreUnsafe(ref rN, (nuint)j); et.StoreUnsafe(ref rt, (nuint)j);
                aN += en; aT += et; aX += en * d;
                if (!unit) { var e = Vector512.Exp(dz); e.StoreUnsafe(ref r1, (nuint)j); a1 += e; }
            }
            float sT = Vector512.Sum(aT), sN = Vector512.Sum(aN), s1 = Vector512.Sum(a1), cross = Vector512.Sum(aX);
            for (; j < n; j++)
            {
                float dz = z[j] - ms, d = dz * invTau;
                eN[j] = MathF.Exp((zn[j] - mn) * invTau); eT[j] = MathF.Exp(d);
                sN += eN[j]; sT += eT[j]; cross += eN[j] * d;
                if (!unit) { e1[j] = MathF.Exp(dz); s1 += e1[j]; }
            }
            return (sT, sN, unit ? sT : s1, cross);
        }

        /// <summary>z = ka·a + kb·b.</summary>
        static void Combine(Span<float> z, ReadOnlySpan<float> a, float ka, ReadOnlySpan<float> b, float kb)
        {
            ref float rz = ref MemoryMarshal.GetReference(z); ref float ra = ref MemoryMarshal.GetReference(a); ref float rb = ref MemoryMarshal.GetReference(b);
            var va = Vector512.Create(ka); var vb = Vector512.Create(kb);
            int n = z.Length, j = 0;
            for (; j <= n - W; j += W)
                (va * Vector512.LoadUnsafe(ref ra, (nuint)j) + vb * Vector512.LoadUnsafe(ref rb, (nuint)j)).StoreUnsafe(ref rz, (nuint)j);
            for (; j < n; j++) z[j] = ka * a[j] + kb * b[j];
        }

        /// <summary>z = ka·a + kb·b + kc·c.</summary>
        static void Combine(Span<float> z, ReadOnlySpan<float> a, float ka, ReadOnlySpan<float> b, float kb, ReadOnlySpan<float> c, float kc)
        {
            ref float rz = ref MemoryMarshal.GetReference(z); ref float ra = ref MemoryMarshal.GetReference(a);
            ref float rb = ref MemoryMarshal.GetReference(b); ref float rc = ref MemoryMarshal.GetReference(c);
            var va = Vector512.Create(ka); var vb = Vector512.Create(kb); var vc = Vector512.Create(kc);
            int n = z.Length, j = 0;
            for (; j <= n - W; j += W)
                (va * Vector512.LoadUnsafe(ref ra, (nuint)j) + vb * Vector512.LoadUnsafe(ref rb, (nuint)j) + vc * Vector512.LoadUnsafe(ref rc, (nuint)j))
                    .StoreUnsafe(ref rz, (nuint)j);
            for (; j < n; j++) z[j] = ka * a[j] + kb * b[j] + kc * c[j];
        }
    }

    static T InverseTemperature<T>(float temperature) where T : unmanaged, IFloatingPointIeee754<T>
    {
        if (!(temperature > 0f) || !float.IsFinite(temperature)) throw new ArgumentOutOfRangeException(nameof(temperature), $"temperature must be positive and finite (got {temperature})");
        return T.One / T.CreateTruncating(temperature);
    }

    /// <summary>p = softmax(z·invTau), max-subtracted.</summary>
    static void Softmax<T>(ReadOnlySpan<T> z, T invTau, Span<T> p) where T : unmanaged, IFloatingPointIeee754<T>
    {
        T max = TensorPrimitives.Max(z);
        TensorPrimitives.Subtract(z, max, p);
        if (invTau != T.One) TensorPrimitives.Multiply(p, invTau, p);
        TensorPrimitives.Exp(p, p);
        TensorPrimitives.Multiply(p, T.One / TensorPrimitives.Sum<T>(p), p);
    }
}
