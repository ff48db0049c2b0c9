using ILGPU;
using ILGPU.Runtime;

namespace NegDistill.Kernels;

/// <summary>
/// Negative Calibrated Enhancement (method.md, Step 2). CPU twin and the math, gradient derivation
/// included: src/NegDistill.Core/Ops/Nce.cs. Both kernels run one group per token row with strided,
/// coalesced loops over the vocabulary (thread j of G reads entries j, j+G, ...) and group
/// reductions: version 1 (KlKernel, DistillKernel) by GroupReduce's shared-memory tree, version 2 (KlV2Kernel,
/// DistillV2Kernel) by its warp shuffles, version 3 (KlV3Kernel, DistillV3Kernel, the default where V is a multiple of 4
/// and the rows 16-byte aligned) is version 2 with 128-bit loads and stores; the group size G is read at run time (16 on ILGPU's CPU accelerator, 256 on CUDA).
///
/// Pass 1 of each kernel is an online softmax: each thread keeps a running max and a sum of
/// exponentials relative to it (rescaled when the max grows), and the group combines them as
/// M = max_j m_j, S = Σ_j s_j·exp(m_j − M). So the statistics take one read of each row, not two.
///
///   KlKernel      pass 1: (max, Σexp) of z_neg/τ and z_nat/τ;  pass 2: Σ p_neg·(log(p_neg+ε) − log(p_nat+ε)).
///                 Reads 2 rows twice, writes 1 float: 16 bytes per vocabulary entry.
///   DistillKernel pass 1: (max, Σexp) of z_s (and of z_s/τ when τ ≠ 1) and of z_nat/τ;
///                 pass 2: Σ p_nat·(z_s − max)/τ for the KD loss and, when computing gradients,
///                 dz_s = c1·(p − onehot(y)) + c2·(q − p_nat) written over z_s.
///                 Reads 2 rows twice, writes 1: 20 bytes per entry (16 without the gradient).
///
/// Napkin math at V = 32,000 and 2,048 rows (65.5 M entries), H100 HBM3 at ~3.35 TB/s:
///   KL      16 B × 65.5 M = 1.05 GB → ~0.31 ms
///   Distill 20 B × 65.5 M = 1.31 GB → ~0.39 ms
/// so ~0.7 ms for the whole NCE loss at that size, a lower bound that assumes every pass-2 read goes
/// back to DRAM (a row pair is 256 KB; with many rows in flight per SM pass 2 mostly misses L2).
/// Transcendentals: ≤ 6 exp per entry in Distill (3 with τ = 1), 4 exp + 2 log in KL: ~0.6 G
/// MUFU ops ≈ 0.15 ms of SFU throughput, hidden under the memory time. The op-by-op form (softmax
/// buffers for student, nat and neg, log(p + ε) twice, their difference, the KL and cross-term row
/// sums, log_softmax, exp, and the gradient in three elementwise steps) moves ~130 bytes per entry
/// against 36 here: ~3.5× the traffic, and 6 more N×V buffers.
/// </summary>
public static class NceKernels
{
    const float Eps = (float)Ops.Nce.Epsilon;   // method.md's 1e-7, declared once in the CPU twin

    /// <summary>Scalars of <see cref="DistillKernel"/>: CeCoef = (1 − a)·ceScale, KdCoef = a·kdScale·τ
    /// (times the row weight gives the KD gradient coefficient); Unit = 1 when τ = 1.</summary>
    public struct DistillArgs
    {
        public int V, Unit, Grad;
        public float Tau, InvTau, CeCoef, KdCoef;
    }

    /// <summary>Grid: rows groups. zNat, zNeg (rows,V); kl (rows) out. Version 1: shared-memory trees.</summary>
    public static void KlKernel(ArrayView<float> zNat, ArrayView<float> zNeg, ArrayView<float> kl, int v, float invTau)
        => Kl(zNat, zNeg, kl, v, invTau, 1);

    /// <summary>Version 2: warp shuffles.</summary>
    public static void KlV2Kernel(ArrayView<float> zNat, ArrayView<float> zNeg, ArrayView<float> kl, int v, float invTau)
        => Kl(zNat, zNeg, kl, v, invTau, 2);

    static void Kl(ArrayView<float> zNat, ArrayView<float> zNeg, ArrayView<float> kl, int v, float invTau, int rv)
    {
        var sh = SharedMemory.Allocate<float>(GroupReduce.MaxGroup);
        long row = Grid.IdxX, o = row * v;
        float mA = float.NegativeInfinity, sA = 0f, mB = float.NegativeInfinity, sB = 0f;   // A: neg, B: nat
        for (int j = Group.IdxX; j < v; j += Group.DimX)
        {
            float a = zNeg[o + j] * invTau;
            if (a > mA) { sA = sA * MathF.Exp(mA - a) + 1f; mA = a; } else sA += MathF.Exp(a - mA);
            float b = zNat[o + j] * invTau;
            if (b > mB) { sB = sB * MathF.Exp(mB - b) + 1f; mB = b; } else sB += MathF.Exp(b - mB);
        }
        float maxA = GroupReduce.Max(mA, sh, rv);
        float sumA = GroupReduce.Sum(sA * MathF.Exp(mA - maxA), sh, rv);
        float maxB = GroupReduce.Max(mB, sh, rv);
        float sumB = GroupReduce.Sum(sB * MathF.Exp(mB - maxB), sh, rv);
        float invA = 1f / sumA, invB = 1f / sumB;
        float acc = 0f;
        for (int j = Group.IdxX; j < v; j += Group.DimX)
        {
            float pNeg = MathF.Exp(zNeg[o + j] * invTau - maxA) * invA;
            float pNat = MathF.Exp(zNat[o + j] * invTau - maxB) * invB;
            acc += pNeg * (MathF.Log(pNeg + Eps) - MathF.Log(pNat + Eps));
        }
        acc = GroupReduce.Sum(acc, sh, rv);
        if (Group.IdxX == 0) kl[row] = acc;
    }

    /// <summary>Version 3 of <see cref="KlKernel"/>: version 2 over <see cref="Float4"/>s (thread j reads entries
    /// 4j … 4j+3, 4(j+G) …: another order of each sum); v = V, a multiple of 4.</summary>
    public static void KlV3Kernel(ArrayView<Float4> zNat, ArrayView<Float4> zNeg, ArrayView<float> kl, int v, float invTau)
    {
        var sh = SharedMemory.Allocate<float>(GroupReduce.MaxGroup);
        int v4 = v / 4;
        long row = Grid.IdxX, o = row * v4;
        float mA = float.NegativeInfinity, sA = 0f, mB = float.NegativeInfinity, sB = 0f;   // A: neg, B: nat
        for (int j = Group.IdxX; j < v4; j += Group.DimX)
        {
            Float4 a = zNeg[o + j], b = zNat[o + j];
            Online(a.X * invTau, ref mA, ref sA); Online(a.Y * invTau, ref mA, ref sA);
            Online(a.Z * invTau, ref mA, ref sA); Online(a.W * invTau, ref mA, ref sA);
            Online(b.X * invTau, ref mB, ref sB); Online(b.Y * invTau, ref mB, ref sB);
            Online(b.Z * invTau, ref mB, ref sB); Online(b.W * invTau, ref mB, ref sB);
        }
        float maxA = GroupReduce.MaxV2(mA, sh);
        float sumA = GroupReduce.SumV2(sA * MathF.Exp(mA - maxA), sh);
        float maxB = GroupReduce.MaxV2(mB, sh);
        float sumB = GroupReduce.SumV2(sB * MathF.Exp(mB - maxB), sh);
        float invA = 1f / sumA, invB = 1f / sumB;
        float acc = 0f;
        for (int j = Group.IdxX; j < v4; j += Group.DimX)
        {
            Float4 a = zNeg[o + j], b = zNat[o + j];
            acc += (KlTerm(a.X, b.X, invTau, maxA, invA, maxB, invB) + KlTerm(a.Y, b.Y, invTau, maxA, invA, maxB, invB))
                 + (KlTerm(a.Z, b.Z, invTau, maxA, invA, maxB, invB) + KlTerm(a.W, b.W, invTau, maxA, invA, maxB, invB));
        }
        acc = GroupReduce.SumV2(acc, sh);
        if (Group.IdxX == 0) kl[row] = acc;
    }

    /// <summary>One step of the online softmax: running max m and Σexp(x − m) s.</summary>
    static void Online(float x, ref float m, ref float s)
    {
        if (x > m) { s = s * MathF.Exp(m - x) + 1f; m = x; } else s += MathF.Exp(x - m);
    }

    static float KlTerm(float zNeg, float zNat, float invTau, float maxA, float invA, float maxB, float invB)
    {
        float pNeg = MathF.Exp(zNeg * invTau - maxA) * invA;
        float pNat = MathF.Exp(zNat * invTau - maxB) * invB;
        return pNeg * (MathF.Log(pNeg + Eps) - MathF.Log(pNat + Eps));
    }

    /// <summary>Grid: rows groups. zs (rows,V) in: logits, out: dL/dz_s when d.Grad; zNat (rows,V);
    /// targets (rows), −1 where a row has no next token; rowWeight (rows), 0 outside the attention mask;
    /// lossCe, lossKd (rows) out.</summary>
    /// <remarks>Version 1: shared-memory trees.</remarks>
    public static void DistillKernel(ArrayView<float> zs, ArrayView<float> zNat, ArrayView<int> targets, ArrayView<float> rowWeight,
        ArrayView<float> lossCe, ArrayView<float> lossKd, DistillArgs d)
        => Distill(zs, zNat, targets, rowWeight, lossCe, lossKd, d, 1);

    /// <summary>Version 2 of <see cref="DistillKernel"/>: warp shuffles.</summary>
    public static void DistillV2Kernel(ArrayView<float> zs, ArrayView<float> zNat, ArrayView<int> targets, ArrayView<float> rowWeight,
        ArrayView<float> lossCe, ArrayView<float> lossKd, DistillArgs d)
        => Distill(zs, zNat, targets, rowWeight, lossCe, lossKd, d, 2);

    /// <summary>Version 3 of <see cref="DistillKernel"/>: version 2 over <see cref="Float4"/>s (d.V a multiple of 4); the
    /// target logit read from its lane.</summary>
    public static void DistillV3Kernel(ArrayView<Float4> zs, ArrayView<Float4> zNat, ArrayView<int> targets, ArrayView<float> rowWeight,
        ArrayView<float> lossCe, ArrayView<float> lossKd, DistillArgs d)
    {
        var sh = SharedMemory.Allocate<float>(GroupReduce.MaxGroup);
        int v4 = d.V / 4;
        long row = Grid.IdxX, o = row * v4;
        int y = targets[row];
        float w = rowWeight[row];
        if (y < 0 && w == 0f)
        {
            if (Group.IdxX == 0) { lossCe[row] = 0f; lossKd[row] = 0f; }
            if (d.Grad != 0)
                for (int j = Group.IdxX; j < v4; j += Group.DimX) zs[o + j] = default;
            return;
        }
        float zy = 0f;
        if (y >= 0)
        {
            Float4 zt = zs[o + (y >> 2)];
            int k = y & 3;
            zy = k == 0 ? zt.X : k == 1 ? zt.Y : k == 2 ? zt.Z : zt.W;
        }
        float invTau = d.InvTau;
        bool unit = d.Unit != 0;

        float ms = float.NegativeInfinity, s1 = 0f, sT = 0f, mn = float.NegativeInfinity, sn = 0f;
        for (int j = Group.IdxX; j < v4; j += Group.DimX)
        {
            Float4 z = zs[o + j], n = zNat[o + j];
            OnlineS(z.X, ref ms, ref s1, ref sT, invTau, unit); OnlineS(z.Y, ref ms, ref s1, ref sT, invTau, unit);
            OnlineS(z.Z, ref ms, ref s1, ref sT, invTau, unit); OnlineS(z.W, ref ms, ref s1, ref sT, invTau, unit);
            Online(n.X * invTau, ref mn, ref sn); Online(n.Y * invTau, ref mn, ref sn);
            Online(n.Z * invTau, ref mn, ref sn); Online(n.W * invTau, ref mn, ref sn);
        }
        float maxS = GroupReduce.MaxV2(ms, sh);
        float sum1 = GroupReduce.SumV2(s1 * MathF.Exp(ms - maxS), sh);
        float sumT = unit ? sum1 : GroupReduce.SumV2(sT * MathF.Exp((ms - maxS) * invTau), sh);
        float maxN = GroupReduce.MaxV2(mn, sh);
        float sumN = GroupReduce.SumV2(sn * MathF.Exp(mn - maxN), sh);

        var c = new Pass2
        {
            MaxS = maxS, MaxN = maxN, InvTau = invTau, Inv1 = 1f / sum1, InvT = 1f / sumT, InvN = 1f / sumN,
            C1 = y >= 0 ? d.CeCoef : 0f, C2 = d.KdCoef * w, Unit = unit, Grad = d.Grad != 0,
        };
        float cross = 0f;
        for (int j = Group.IdxX; j < v4; j += Group.DimX)
        {
            Float4 z = zs[o + j], n = zNat[o + j];
            int b = 4 * j;
            float gx = Entry(z.X, n.X, b == y, c, ref cross), gy = Entry(z.Y, n.Y, b + 1 == y, c, ref cross);
            float gz = Entry(z.Z, n.Z, b + 2 == y, c, ref cross), gw = Entry(z.W, n.W, b + 3 == y, c, ref cross);
            if (d.Grad != 0) zs[o + j] = new Float4(gx, gy, gz, gw);
        }
        cross = GroupReduce.SumV2(cross, sh);
        if (Group.IdxX == 0)
        {
            lossCe[row] = y >= 0 ? maxS + MathF.Log(sum1) - zy : 0f;
            lossKd[row] = -d.Tau * d.Tau * w * (cross - MathF.Log(sumT));
        }
    }

    /// <summary>Pass 1's step for z_s: the running max, Σexp at τ = 1 and at τ.</summary>
    static void OnlineS(float z, ref float ms, ref float s1, ref float sT, float invTau, bool unit)
    {
        if (z > ms)
        {
            float r = ms - z;                     // ≤ 0 (−∞ on the first entry)
            s1 = s1 * MathF.Exp(r) + 1f;
            if (!unit) sT = sT * MathF.Exp(r * invTau) + 1f;
            ms = z;
        }
        else
        {
            float r = z - ms;
            s1 += MathF.Exp(r);
            if (!unit) sT += MathF.Exp(r * invTau);
        }
    }

    struct Pass2
    {
        public float MaxS, MaxN, InvTau, Inv1, InvT, InvN, C1, C2;
        public bool Unit, Grad;
    }

    /// <summary>Pass 2 for one entry: adds its cross term, returns its gradient (0 without one).</summary>
    static float Entry(float zsj, float znj, bool target, Pass2 c, ref float cross)
    {
        float dz = zsj - c.MaxS;
        float pn = MathF.Exp(znj * c.InvTau - c.MaxN) * c.InvN;
        float dT = dz * c.InvTau;
        cross += pn * dT;
        if (!c.Grad) return 0f;
        float p = MathF.Exp(dz) * c.Inv1;
        float q = c.Unit ? p : MathF.Exp(dT) * c.InvT;
        float g = c.C1 * p + c.C2 * (q - pn);
        return target ? g - c.C1 : g;
    }

    static void Distill(ArrayView<float> zs, ArrayView<float> zNat, ArrayView<int> targets, ArrayView<float> rowWeight,
        ArrayView<float> lossCe, ArrayView<float> lossKd, DistillArgs d, int rv)
    {
        var sh = SharedMemory.Allocate<float>(GroupReduce.MaxGroup);
        int v = d.V;
        long row = Grid.IdxX, o = row * v;
        int y = targets[row];
        float w = rowWeight[row];                 // 0 outside the attention mask
        if (y < 0 && w == 0f)
        {
            if (Group.IdxX == 0) { lossCe[row] = 0f; lossKd[row] = 0f; }
            if (d.Grad != 0)
                for (int j = Group.IdxX; j < v; j += Group.DimX) zs[o + j] = 0f;
            return;
        }
        float zy = y >= 0 ? zs[o + y] : 0f;       // read before any thread overwrites the row
        float invTau = d.InvTau;
        bool unit = d.Unit != 0;

        // pass 1: online (max, Σexp) of z_s at τ = 1 and at τ (same max since τ > 0), and of z_nat/τ
        float ms = float.NegativeInfinity, s1 = 0f, sT = 0f, mn = float.NegativeInfinity, sn = 0f;
        for (int j = Group.IdxX; j < v; j += Group.DimX)
        {
            OnlineS(zs[o + j], ref ms, ref s1, ref sT, invTau, unit);
            float n = zNat[o + j] * invTau;
            if (n > mn) { sn = sn * MathF.Exp(mn - n) + 1f; mn = n; } else sn += MathF.Exp(n - mn);
        }
        float maxS = GroupReduce.Max(ms, sh, rv);
        float sum1 = GroupReduce.Sum(s1 * MathF.Exp(ms - maxS), sh, rv);
        float sumT = unit ? sum1 : GroupReduce.Sum(sT * MathF.Exp((ms - maxS) * invTau), sh, rv);
        float maxN = GroupReduce.Max(mn, sh, rv);
        float sumN = GroupReduce.Sum(sn * MathF.Exp(mn - maxN), sh, rv);

        // pass 2: cross term Σ p_nat·(z_s − max)/τ, and the gradient over z_s
        float inv1 = 1f / sum1, invT = 1f / sumT, invN = 1f / sumN;
        float c1 = y >= 0 ? d.CeCoef : 0f, c2 = d.KdCoef * w;     // no target (a sequence's last token): KD only
        float cross = 0f;
        for (int j = Group.IdxX; j < v; j += Group.DimX)
        {
            float dz = zs[o + j] - maxS;
            float pn = MathF.Exp(zNat[o + j] * invTau - maxN) * invN;
            float dT = dz * invTau;
            cross += pn * dT;
            if (d.Grad != 0)
            {
                float p = MathF.Exp(dz) * inv1;
                float q = unit ? p : MathF.Exp(dT) * invT;
                float g = c1 * p + c2 * (q - pn);
                zs[o + j] = j == y ? g - c1 : g;
            }
        }
        cross = GroupReduce.Sum(cross, sh, rv);
        if (Group.IdxX == 0)
        {
            lossCe[row] = y >= 0 ? maxS + MathF.Log(sum1) - zy : 0f;
            lossKd[row] = -d.Tau * d.Tau * w * (cross - MathF.Log(sumT));
        }
    }

    /// <summary>Typed launchers, loaded once per accelerator.</summary>
    public sealed class Launcher(Accelerator acc, int group)
    {
        readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float> _kl =
            acc.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float>(KlKernel);
        readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float> _kl2 =
            acc.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float>(KlV2Kernel);
        readonly Action<KernelConfig, ArrayView<Float4>, ArrayView<Float4>, ArrayView<float>, int, float> _kl3 =
            acc.LoadStreamKernel<ArrayView<Float4>, ArrayView<Float4>, ArrayView<float>, int, float>(KlV3Kernel);
        readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, ArrayView<float>, DistillArgs> _distill =
            acc.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, ArrayView<float>, DistillArgs>(DistillKernel);
        readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, ArrayView<float>, DistillArgs> _distill2 =
            acc.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, ArrayView<float>, DistillArgs>(DistillV2Kernel);
        readonly Action<KernelConfig, ArrayView<Float4>, ArrayView<Float4>, ArrayView<int>, ArrayView<float>, ArrayView<float>, ArrayView<float>, DistillArgs> _distill3 =
            acc.LoadStreamKernel<ArrayView<Float4>, ArrayView<Float4>, ArrayView<int>, ArrayView<float>, ArrayView<float>, ArrayView<float>, DistillArgs>(DistillV3Kernel);

        /// <summary>Version 3 when <paramref name="rv"/> and <paramref name="sv"/> are 2 and the rows fit 128-bit
        /// accesses; else version <paramref name="rv"/>.</summary>
        public void Kl(ArrayView<float> zNat, ArrayView<float> zNeg, ArrayView<float> kl, int n, int v, float temperature,
            GroupReduce.Version rv = GroupReduce.Version.V2Warp, Wide.Version sv = Wide.Version.V2Float4)
        {
            CheckTemperature(temperature);
            if (n <= 0) return;
            long nv = (long)n * v;
            if (rv == GroupReduce.Version.V2Warp && sv == Wide.Version.V2Float4 && (v & 3) == 0 && Wide.Fits(nv, zNat, zNeg))
                _kl3(new KernelConfig(n, group), Wide.As4(zNat, nv), Wide.As4(zNeg, nv), kl, v, 1f / temperature);
            else (rv == GroupReduce.Version.V1Tree ? _kl : _kl2)(new KernelConfig(n, group), zNat, zNeg, kl, v, 1f / temperature);
        }

        public void Distill(ArrayView<float> zs, ArrayView<float> zNat, ArrayView<int> targets, ArrayView<float> rowWeight,
            ArrayView<float> lossCe, ArrayView<float> lossKd, int n, int v, float temperature, float a, float ceScale, float kdScale, bool grad,
            GroupReduce.Version rv = GroupReduce.Version.V2Warp, Wide.Version sv = Wide.Version.V2Float4)
        {
            CheckTemperature(temperature);
            var d = new DistillArgs
            {
                V = v, Unit = temperature == 1f ? 1 : 0, Grad = grad ? 1 : 0,
                Tau = temperature, InvTau = 1f / temperature, CeCoef = (1f - a) * ceScale, KdCoef = a * kdScale * temperature,
            };
            if (n <= 0) return;
            long nv = (long)n * v;
            if (rv == GroupReduce.Version.V2Warp && sv == Wide.Version.V2Float4 && (v & 3) == 0 && Wide.Fits(nv, zs, zNat))
                _distill3(new KernelConfig(n, group), Wide.As4(zs, nv), Wide.As4(zNat, nv), targets, rowWeight, lossCe, lossKd, d);
            else (rv == GroupReduce.Version.V1Tree ? _distill : _distill2)(new KernelConfig(n, group), zs, zNat, targets, rowWeight, lossCe, lossKd, d);
        }

        static void CheckTemperature(float t)
        {
            if (!(t > 0f) || !float.IsFinite(t)) throw new ArgumentOutOfRangeException(nameof(t), $"temperature must be positive and finite (got {t})");
        }
    }
}
