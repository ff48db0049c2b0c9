using ILGPU;
using ILGPU.Runtime;
using NegDistill.Kernels;
using NegDistill.Runtime;

namespace NegDistill.Tests;

/// <summary>
/// <see cref="GroupReduce"/>'s two versions on ILGPU's CPU accelerator (groups of 16, warps of 4): each equals a
/// host replay of its own addition tree bit for bit, every thread of a group gets the same value, the maxima of
/// both versions are the exact maximum, integer-valued sums (the sampling kernels' counts) agree exactly, and the
/// float sums of the two versions do differ somewhere (their trees are not the same); then the per-row kernels
/// that switched to version 2 (RMSNorm forward and dx, cross-entropy, NCE, NAT's integration unit, the Σx, Σx²
/// and non-finite reductions) against their version 1.
/// </summary>
[TestFixture]
public class GroupReduceTests
{
    /// <summary>Grid: groups. outp[4·i + k] for thread i: k = 0 Sum, 1 SumV2, 2 Max, 3 MaxV2 of x over its group.</summary>
    static void ReduceAllKernel(ArrayView<float> x, ArrayView<float> outp)
    {
        var sh = SharedMemory.Allocate<float>(GroupReduce.MaxGroup);
        long i = (long)Grid.IdxX * Group.DimX + Group.IdxX;
        float v = x[i];
        outp[4 * i] = GroupReduce.Sum(v, sh);
        outp[4 * i + 1] = GroupReduce.SumV2(v, sh);
        outp[4 * i + 2] = GroupReduce.Max(v, sh);
        outp[4 * i + 3] = GroupReduce.MaxV2(v, sh);
    }

    static float TreeV1(float[] v)
    {
        var s = (float[])v.Clone();
        for (int h = s.Length / 2; h > 0; h >>= 1) for (int t = 0; t < h; t++) s[t] += s[t + h];
        return s[0];
    }

    /// <summary>Lane 0 of a shuffle-down tree over w lanes: lane l takes lane l + off for off = w/2 … 1.</summary>
    static float WarpTree(float[] v)
    {
        var s = (float[])v.Clone();
        for (int off = s.Length / 2; off > 0; off >>= 1) for (int l = 0; l + off < s.Length; l++) s[l] += s[l + off];
        return s[0];
    }

    static float TreeV2(float[] v, int w)
    {
        int warps = v.Length / w;
        var per = Enumerable.Range(0, warps).Select(k => WarpTree(v[(k * w)..((k + 1) * w)])).ToArray();
        var lanes = new float[w];
        for (int l = 0; l < w; l++) for (int k = l; k < warps; k += w) lanes[l] += per[k];
        return WarpTree(lanes);
    }

    static float[] Run(float[] x, int g, int groups)
    {
        var acc = TestUtil.Ilgpu.Accelerator;
        var k = acc.LoadStreamKernel<ArrayView<float>, ArrayView<float>>(ReduceAllKernel);
        using var bx = acc.Allocate1D(x);
        using var bo = acc.Allocate1D<float>(4L * x.Length);
        k(new KernelConfig(groups, g), bx.View, bo.View);
        acc.Synchronize();
        return bo.GetAsArray1D();
    }

    [Test]
    public void BothVersions_EqualTheirHostTrees_SameValueOnEveryThread_MaxExact()
    {
        var acc = TestUtil.Ilgpu.Accelerator;
        int g = Math.Min(GroupReduce.MaxGroup, acc.MaxNumThreadsPerGroup), w = acc.WarpSize, groups = 40;
        // magnitudes spread over 2^±12 so that the association order shows in the rounding
        var x = TestUtil.Rand(g * groups, 7).Select((v, i) => v * MathF.Pow(2f, (int)(CounterRng.Hash(8, (ulong)i) % 25) - 12)).ToArray();
        var o = Run(x, g, groups);
        int differ = 0;
        for (int b = 0; b < groups; b++)
        {
            var v = x[(b * g)..((b + 1) * g)];
            float s1 = TreeV1(v), s2 = TreeV2(v, w), mx = v.Max();
            for (int t = 0; t < g; t++)
            {
                int i = b * g + t;
                Assert.That(o[4 * i], Is.EqualTo(s1), $"group {b} thread {t}: v1 sum");
                Assert.That(o[4 * i + 1], Is.EqualTo(s2), $"group {b} thread {t}: v2 sum");
                Assert.That(o[4 * i + 2], Is.EqualTo(mx), $"group {b} thread {t}: v1 max");
                Assert.That(o[4 * i + 3], Is.EqualTo(mx), $"group {b} thread {t}: v2 max");
            }
            if (s1 != s2) differ++;
            Assert.That(s2, Is.EqualTo(v.Sum(f => (double)f)).Within(1e-5 * v.Sum(f => Math.Abs((double)f))), "v2 is a sum");
        }
        Assert.That(differ, Is.GreaterThan(0), "the two trees associate differently: some group's sums must differ");
    }

    [Test]
    public void IntegerCounts_AreExactInBothVersions()
    {
        var acc = TestUtil.Ilgpu.Accelerator;
        int g = Math.Min(GroupReduce.MaxGroup, acc.MaxNumThreadsPerGroup), groups = 8;
        var x = Enumerable.Range(0, g * groups).Select(i => (float)(CounterRng.Hash(9, (ulong)i) % 4000)).ToArray();
        var o = Run(x, g, groups);
        for (int b = 0; b < groups; b++)
        {
            float want = x[(b * g)..((b + 1) * g)].Sum();
            Assert.That(o[4 * b * g], Is.EqualTo(want));
            Assert.That(o[4 * b * g + 1], Is.EqualTo(want));
        }
    }

    /// <summary>The per-row kernels at version 2 (the default) against version 1: fp32, other association of each
    /// row's sums, held to the kernel-parity bound (1e-5 + 1e-4 relative); and not bit-equal everywhere, or the
    /// switch would not have switched anything.</summary>
    [Test]
    public void RowKernels_V2AgainstV1()
    {
        var ops = TestUtil.Ilgpu;
        int n = 9, c = 300, v = 300;
        var outs = new Dictionary<string, float[]>[2];
        foreach (var rv in new[] { GroupReduce.Version.V1Tree, GroupReduce.Version.V2Warp })
        {
            ops.RowReduceVersion = rv;
            ops.StreamVersion = Wide.Version.V1Scalar;         // RMSNorm's version 3 (float4) aside: v2 against v1 here
            try
            {
                var r = new Dictionary<string, float[]>();
                Tensor T(string name, float[] data, params int[] shape) { var t = ops.Alloc(name, DType.F32, shape); ops.Upload(t, data); return t; }
                using var x = T("x", TestUtil.Rand(n * c, 1, 2), n, c); using var w = T("w", TestUtil.Rand(c, 2), c);
                using var y = ops.Alloc("y", DType.F32, n, c); using var rstd = ops.Alloc("rstd", DType.F32, n);
                using var dy = T("dy", TestUtil.Rand(n * c, 3), n, c); using var dx = T("dx", TestUtil.Rand(n * c, 4), n, c);
                ops.RmsNormForward(y, rstd, x, w, n, c, 1e-6f);
                ops.RmsNormBackward(dx, null, dy, x, w, rstd, n, c);
                r["rms.y"] = TestUtil.Get(ops, y); r["rms.rstd"] = TestUtil.Get(ops, rstd); r["rms.dx"] = TestUtil.Get(ops, dx);

                using var z = T("z", TestUtil.Rand(n * v, 5, 5), n, v); using var loss = ops.Alloc("loss", DType.F32, n);
                using var tg = ops.Alloc("tg", DType.I32, n); ops.Upload(tg, Enumerable.Range(0, n).Select(i => i == 3 ? -1 : (i * 37) % v).ToArray());
                ops.CrossEntropyFused(z, loss, tg, n, v, 0.5, true);
                r["ce.loss"] = TestUtil.Get(ops, loss); r["ce.dz"] = TestUtil.Get(ops, z);

                using var zn = T("zn", TestUtil.Rand(n * v, 6, 4), n, v); using var zg = T("zg", TestUtil.Rand(n * v, 7, 4), n, v);
                using var kl = ops.Alloc("kl", DType.F32, n);
                ops.NceKl(zg, zn, kl, n, v, 2f);
                r["nce.kl"] = TestUtil.Get(ops, kl);
                using var zs = T("zs", TestUtil.Rand(n * v, 8, 4), n, v); using var rw = T("rw", Enumerable.Repeat(1f, n).ToArray(), n);
                using var lce = ops.Alloc("lce", DType.F32, n); using var lkd = ops.Alloc("lkd", DType.F32, n);
                ops.NceDistillFused(zs, zg, tg, rw, lce, lkd, n, v, 2f, 0.5f, 1.0 / n, 1.0 / n, true);
                r["nce.ce"] = TestUtil.Get(ops, lce); r["nce.kd"] = TestUtil.Get(ops, lkd); r["nce.dz"] = TestUtil.Get(ops, zs);
                outs[(int)rv - 1] = r;
            }
            finally { ops.RowReduceVersion = GroupReduce.Version.V2Warp; ops.StreamVersion = Wide.Version.V2Float4; }
        }
        foreach (var (k, a) in outs[0]) TestUtil.Close(a, outs[1][k], 1e-5f, 1e-4f, $"{k}: v2 vs v1");
        foreach (var family in outs[0].Keys.GroupBy(k => k[..k.IndexOf('.')]))
            Assert.That(family.Any(k => !outs[0][k].SequenceEqual(outs[1][k])), Is.True,
                $"{family.Key}: v1 and v2 sum in other orders; equal bits in every output means one version ran twice");
    }

    /// <summary>NAT's integration unit at version 2 against version 1, at the parity bound and not bit-equal.</summary>
    [Test]
    public void IntegrationKernels_V2AgainstV1()
    {
        var ops = TestUtil.Ilgpu;
        int n = 11, d = 128;
        var outs = new Dictionary<string, float[]>[2];
        foreach (var rv in new[] { GroupReduce.Version.V1Tree, GroupReduce.Version.V2Warp })
        {
            ops.RowReduceVersion = rv;
            try
            {
                var r = new Dictionary<string, float[]>();
                Tensor T(string name, float[] data) { var t = ops.Alloc(name, DType.F32, n, d); ops.Upload(t, data); return t; }
                using var q = T("q", TestUtil.Rand(n * d, 11)); using var kp = T("kp", TestUtil.Rand(n * d, 12)); using var kn = T("kn", TestUtil.Rand(n * d, 13));
                using var up = T("up", TestUtil.Rand(n * d, 14, 2)); using var un = T("un", TestUtil.Rand(n * d, 15, 2));
                using var mix = ops.Alloc("mix", DType.F32, n, d); using var a = ops.Alloc("a", DType.F32, n);
                ops.IntegrationForward(mix, a, q, kp, kn, up, un, n, d, 0.5f, 1f);
                r["fwd.mix"] = TestUtil.Get(ops, mix); r["fwd.a"] = TestUtil.Get(ops, a);
                using var dmix = T("dmix", TestUtil.Rand(n * d, 16));
                using var dq = T("dq", TestUtil.Rand(n * d, 17)); using var dkp = T("dkp", TestUtil.Rand(n * d, 18)); using var dkn = T("dkn", TestUtil.Rand(n * d, 19));
                using var dup = T("dup", TestUtil.Rand(n * d, 20)); using var dun = T("dun", TestUtil.Rand(n * d, 21));
                ops.IntegrationBackward(dq, dkp, dkn, dup, dun, dmix, q, kp, kn, up, un, a, n, d, 0.5f, 1f);
                r["bwd.dq"] = TestUtil.Get(ops, dq); r["bwd.dkp"] = TestUtil.Get(ops, dkp); r["bwd.dkn"] = TestUtil.Get(ops, dkn);
                r["bwd.dup"] = TestUtil.Get(ops, dup); r["bwd.dun"] = TestUtil.Get(ops, dun);
                outs[(int)rv - 1] = r;
            }
            finally { ops.RowReduceVersion = GroupReduce.Version.V2Warp; }
        }
        foreach (var (k, a) in outs[0]) TestUtil.Close(a, outs[1][k], 1e-5f, 1e-4f, $"{k}: v2 vs v1");
        Assert.That(outs[0].Keys.Any(k => !outs[0][k].SequenceEqual(outs[1][k])), Is.True,
            "v1 and v2 sum in other orders; equal bits in every output means one version ran twice");
    }

    /// <summary>The Σx, Σx² and non-finite reductions at both versions: sums within 1e-6 relative of a double sum
    /// (and not the same bits in both), the non-finite count exact in both, lengths off the group multiple included.</summary>
    [Test]
    public void Reductions_BothVersions_CountsExact_SumsClose()
    {
        var acc = TestUtil.Ilgpu.Accelerator;
        var ew = new ElementwiseKernels.Launcher(acc, Math.Min(GroupReduce.MaxGroup, acc.MaxNumThreadsPerGroup));
        bool differ = false;
        foreach (int n in new[] { 1, 37, 1000, 100_003 })
        {
            var x = TestUtil.Rand(n, (ulong)n, 3);
            int bad = 0;
            for (int i = 0; i < n; i += 7) { x[i] = (i / 7 % 3) switch { 0 => float.NaN, 1 => float.PositiveInfinity, _ => float.NegativeInfinity }; bad++; }
            var clean = TestUtil.Rand(n, (ulong)n + 1, 3);
            using var bx = acc.Allocate1D(x);
            using var bc = acc.Allocate1D(clean);
            double sum = clean.Sum(f => (double)f), sq = clean.Sum(f => (double)f * f), mag = clean.Sum(f => Math.Abs((double)f));
            var got = new double[2][];
            foreach (var rv in new[] { GroupReduce.Version.V1Tree, GroupReduce.Version.V2Warp })
            {
                Assert.That(ew.Reduce(bx.View, n, 1, rv), Is.EqualTo(bad), $"n = {n}, {rv}: non-finite count");
                Assert.That(ew.Reduce(bc.View, n, 1, rv), Is.EqualTo(0), $"n = {n}, {rv}: no non-finite value");
                double s = ew.Reduce(bc.View, n, 2, rv), s2 = ew.Reduce(bc.View, n, 0, rv);
                Assert.That(s, Is.EqualTo(sum).Within(1e-6 * mag), $"n = {n}, {rv}: Σx");
                Assert.That(s2, Is.EqualTo(sq).Within(1e-6 * sq), $"n = {n}, {rv}: Σx²");
                got[(int)rv - 1] = [s, s2];
            }
            differ |= !got[0].SequenceEqual(got[1]);
        }
        Assert.That(differ, Is.True, "the two trees associate differently: some sum must differ");
    }
}
