using ILGPU;
using ILGPU.Runtime;
using NegDistill.Kernels;
using NegDistill.Runtime;

namespace NegDistill.Tests;

/// <summary>
/// The streaming kernels' version 2 (<see cref="Float4"/>: four floats per thread, 128-bit loads; dropout included): each v2 kernel,
/// launched directly on ILGPU's CPU accelerator, gives version 1's bits; <see cref="Wide.Fits"/> takes the v2 path
/// only for lengths that are multiples of 4 on 16-byte-aligned views; through the backend, aligned lengths (v2),
/// odd lengths and odd offsets (the version 1 fallback) agree with the CPU twin. That the SASS holds LDG.E.128 and
/// STG.E.128 is <see cref="PtxasTests"/>'.
/// </summary>
[TestFixture]
public class WideLoadTests
{
    static Accelerator Acc => TestUtil.Ilgpu.Accelerator;

    static MemoryBuffer1D<float, Stride1D.Dense> Buf(int n, ulong seed, float scale = 1f, bool positive = false)
    {
        var x = TestUtil.Rand(n, seed, scale);
        if (positive) x = x.Select(MathF.Abs).ToArray();
        return Acc.Allocate1D(x);
    }

    static ArrayView<Float4> W(MemoryBuffer1D<float, Stride1D.Dense> b) => Wide.As4(b.View, b.Length);

    [Test]
    public void Fits_OnlyAlignedMultiplesOfFour()
    {
        using var b = Acc.Allocate1D<float>(64);
        ArrayView<float> v = b.View;
        Assert.That(Wide.Fits(64, v), Is.True, "a fresh buffer starts 16-byte aligned");
        Assert.That(Wide.Fits(60, v.SubView(4, 60)), Is.True, "offset 4 floats = 16 bytes");
        Assert.That(Wide.Fits(60, v.SubView(1, 60)), Is.False, "offset 1 float");
        Assert.That(Wide.Fits(60, v.SubView(2, 60)), Is.False, "offset 2 floats");
        Assert.That(Wide.Fits(63, v), Is.False, "odd length");
        Assert.That(Wide.Fits(62, v), Is.False, "length 2 mod 4");
        Assert.That(Wide.Fits(64, v, v.SubView(1, 63)), Is.False, "one unaligned view is enough to fall back");
        Assert.That(Wide.Fits(0, v), Is.False);
    }

    [Test]
    public void V2Kernels_GiveV1Bits()
    {
        const int n = 4 * 97;
        float[] Get(MemoryBuffer1D<float, Stride1D.Dense> b) { Acc.Synchronize(); return b.GetAsArray1D(); }

        // SwiGLU forward and backward
        {
            using var g = Buf(n, 1, 4); using var u = Buf(n, 2); using var dh = Buf(n, 3);
            using var h1 = Acc.Allocate1D<float>(n); using var h2 = Acc.Allocate1D<float>(n);
            using var dg1 = Buf(n, 4); using var du1 = Buf(n, 5); using var dg2 = Buf(n, 4); using var du2 = Buf(n, 5);
            Acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>>(SwiGluKernels.ForwardKernel)(n, h1.View, g.View, u.View);
            Acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<Float4>, ArrayView<Float4>, ArrayView<Float4>>(SwiGluKernels.ForwardV2Kernel)(n / 4, W(h2), W(g), W(u));
            Acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>>(SwiGluKernels.BackwardKernel)
                (n, dg1.View, du1.View, dh.View, g.View, u.View);
            Acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<Float4>, ArrayView<Float4>, ArrayView<Float4>, ArrayView<Float4>, ArrayView<Float4>>(SwiGluKernels.BackwardV2Kernel)
                (n / 4, W(dg2), W(du2), W(dh), W(g), W(u));
            Assert.That(Get(h2), Is.EqualTo(Get(h1)), "SwiGLU forward");
            Assert.That(Get(h1).Count(x => x != 0f), Is.EqualTo(n), "forward wrote every element");
            Assert.That(Get(dg2), Is.EqualTo(Get(dg1)), "SwiGLU dg");
            Assert.That(Get(du2), Is.EqualTo(Get(du1)), "SwiGLU du");
            Assert.That(Get(du1), Is.Not.EqualTo(TestUtil.Rand(n, 5)), "backward accumulated");
        }
        // AdamW, three steps
        {
            using var g = Buf(n, 6);
            using var p1 = Buf(n, 7); using var m1 = Buf(n, 8, 0.1f); using var v1 = Buf(n, 9, 0.01f, positive: true);
            using var p2 = Buf(n, 7); using var m2 = Buf(n, 8, 0.1f); using var v2 = Buf(n, 9, 0.01f, positive: true);
            var k1 = Acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, AdamWKernels.Hyper>(AdamWKernels.Kernel);
            var k2 = Acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<Float4>, ArrayView<Float4>, ArrayView<Float4>, ArrayView<Float4>, AdamWKernels.Hyper>(AdamWKernels.V2Kernel);
            for (int t = 1; t <= 3; t++)
            {
                var h = new AdamWKernels.Hyper { Lr = 1e-2f, Beta1 = 0.9f, Beta2 = 0.999f, Eps = 1e-8f, Wd = 0.01f, Bc1 = 1f - MathF.Pow(0.9f, t), Bc2 = 1f - MathF.Pow(0.999f, t) };
                k1(n, p1.View, g.View, m1.View, v1.View, h);
                k2(n / 4, W(p2), W(g), W(m2), W(v2), h);
            }
            Assert.That(Get(p2), Is.EqualTo(Get(p1)), "AdamW p");
            Assert.That(Get(m2), Is.EqualTo(Get(m1)), "AdamW m");
            Assert.That(Get(v2), Is.EqualTo(Get(v1)), "AdamW v");
            Assert.That(Get(p1), Is.Not.EqualTo(TestUtil.Rand(n, 7)), "AdamW moved the parameters");
        }
        // dropout forward and backward, p = 0.3 (every element of a Float4 hashed by its own index) and p = 0
        foreach (float p in new[] { 0.3f, 0f })
        {
            using var x = Buf(n, 12); using var y1 = Acc.Allocate1D<float>(n); using var y2 = Acc.Allocate1D<float>(n);
            using var dy = Buf(n, 13); using var dx1 = Buf(n, 14); using var dx2 = Buf(n, 14);
            var f1 = Acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, float, ulong>(DropoutKernels.ForwardKernel);
            var f2 = Acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<Float4>, ArrayView<Float4>, float, ulong>(DropoutKernels.ForwardV2Kernel);
            var b1 = Acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, float, ulong>(DropoutKernels.BackwardKernel);
            var b2 = Acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<Float4>, ArrayView<Float4>, float, ulong>(DropoutKernels.BackwardV2Kernel);
            f1(n, y1.View, x.View, p, 77); f2(n / 4, W(y2), W(x), p, 77);
            b1(n, dx1.View, dy.View, p, 77); b2(n / 4, W(dx2), W(dy), p, 77);
            Assert.That(Get(y2), Is.EqualTo(Get(y1)), $"dropout forward, p = {p}");
            Assert.That(Get(dx2), Is.EqualTo(Get(dx1)), $"dropout backward, p = {p}");
            int dropped = Get(y1).Count(v => v == 0f);
            if (p > 0f) Assert.That(dropped, Is.InRange(n / 6, n / 2), "about 30 % dropped");
            else Assert.That(Get(y1), Is.EqualTo(TestUtil.Rand(n, 12)), "p = 0 copies");
        }
        // fill, axpy, scale
        {
            using var x = Buf(n, 10); using var y1 = Buf(n, 11); using var y2 = Buf(n, 11);
            using var f1 = Acc.Allocate1D<float>(n); using var f2 = Acc.Allocate1D<float>(n);
            Acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, float>(ElementwiseKernels.AxpyKernel)(n, y1.View, x.View, 0.37f);
            Acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<Float4>, ArrayView<Float4>, float>(ElementwiseKernels.AxpyV2Kernel)(n / 4, W(y2), W(x), 0.37f);
            Acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, float>(ElementwiseKernels.ScaleKernel)(n, y1.View, -1.3f);
            Acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<Float4>, float>(ElementwiseKernels.ScaleV2Kernel)(n / 4, W(y2), -1.3f);
            Acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, float>(ElementwiseKernels.FillKernel)(n, f1.View, 2.5f);
            Acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<Float4>, float>(ElementwiseKernels.FillV2Kernel)(n / 4, W(f2), 2.5f);
            Assert.That(Get(y2), Is.EqualTo(Get(y1)), "axpy then scale");
            Assert.That(Get(y1), Is.Not.EqualTo(TestUtil.Rand(n, 11)), "axpy and scale changed y");
            Assert.That(Get(f2), Is.EqualTo(Enumerable.Repeat(2.5f, n).ToArray()), "fill v2");
            Assert.That(Get(f1), Is.EqualTo(Get(f2)), "fill v1");
        }
    }

    /// <summary>RMSNorm forward and dx, version 3 (float4, C = 300) against version 2 (the same backend with the
    /// streaming kernels at version 1): fp32, other order of each row's sum, the parity bound, and not bit-equal
    /// everywhere (else version 3 did not run); at C = 302 (not a multiple of 4) version 3 falls back to version 2: the same bits.</summary>
    [Test]
    public void RmsNorm_V3AgainstV2_AndFallback([Values(300, 302)] int c)
    {
        var ops = TestUtil.Ilgpu;
        int n = 9;
        var r = new Dictionary<string, float[]>[2];
        foreach (var sv in new[] { Wide.Version.V1Scalar, Wide.Version.V2Float4 })
        {
            ops.StreamVersion = sv;
            try
            {
                Tensor T(string name, float[] data, params int[] shape) { var t = ops.Alloc(name, DType.F32, shape); ops.Upload(t, data); return t; }
                using var x = T("x", TestUtil.Rand(n * c, 1, 2), n, c); using var w = T("w", TestUtil.Rand(c, 2), c);
                using var y = ops.Alloc("y", DType.F32, n, c); using var rstd = ops.Alloc("rstd", DType.F32, n);
                using var dy = T("dy", TestUtil.Rand(n * c, 3), n, c); using var dx = T("dx", TestUtil.Rand(n * c, 4), n, c);
                ops.RmsNormForward(y, rstd, x, w, n, c, 1e-6f);
                ops.RmsNormBackward(dx, null, dy, x, w, rstd, n, c);
                r[(int)sv - 1] = new() { ["y"] = TestUtil.Get(ops, y), ["rstd"] = TestUtil.Get(ops, rstd), ["dx"] = TestUtil.Get(ops, dx) };
            }
            finally { ops.StreamVersion = Wide.Version.V2Float4; }
        }
        foreach (var (k, a) in r[0]) TestUtil.Close(a, r[1][k], 1e-5f, 1e-4f, $"{k}: v3 vs v2 (C {c})");
        bool same = r[0].All(kv => kv.Value.SequenceEqual(r[1][kv.Key]));
        if (c % 4 == 0) Assert.That(same, Is.False, "version 3 sums each row in another order: some bits must differ");
        else Assert.That(same, Is.True, "C not a multiple of 4: version 3 falls back to version 2");
    }

    /// <summary>Cross-entropy version 3 (float4, V = 300; a target in each lane of a Float4 and a row without one)
    /// against version 2, as for RMSNorm; V = 302 falls back to version 2's bits.</summary>
    [Test]
    public void CrossEntropy_V3AgainstV2_AndFallback([Values(300, 302)] int v)
    {
        var ops = TestUtil.Ilgpu;
        int n = 6;
        int[] y = [0, 1, -1, v - 2, v - 1, 150];
        var r = new Dictionary<string, float[]>[2];
        foreach (var sv in new[] { Wide.Version.V1Scalar, Wide.Version.V2Float4 })
        {
            ops.StreamVersion = sv;
            try
            {
                using var z = ops.Alloc("z", DType.F32, n, v); ops.Upload(z, TestUtil.Rand(n * v, 1, 5));
                using var loss = ops.Alloc("loss", DType.F32, n);
                using var tg = ops.Alloc("tg", DType.I32, n); ops.Upload(tg, y);
                ops.CrossEntropyFused(z, loss, tg, n, v, 0.5, true);
                r[(int)sv - 1] = new() { ["loss"] = TestUtil.Get(ops, loss), ["dz"] = TestUtil.Get(ops, z) };
            }
            finally { ops.StreamVersion = Wide.Version.V2Float4; }
        }
        foreach (var (k, a) in r[0]) TestUtil.Close(a, r[1][k], 1e-5f, 1e-4f, $"{k}: v3 vs v2 (V {v})");
        Assert.That(r[1]["dz"].Skip(2 * v).Take(v), Is.All.EqualTo(0f), "a row without a target gets a zero gradient");
        Assert.That(r[1]["dz"][0], Is.LessThan(0f), "the target's gradient is p − 1 < 0");
        Assert.That(r[1]["dz"][4 * v + v - 1], Is.LessThan(0f), "the target's gradient in the last lane");
        bool same = r[0].All(kv => kv.Value.SequenceEqual(r[1][kv.Key]));
        if (v % 4 == 0) Assert.That(same, Is.False, "version 3 sums each row in another order: some bits must differ");
        else Assert.That(same, Is.True, "V not a multiple of 4: version 3 falls back to version 2");
    }

    /// <summary>NCE's KL, version 3 (float4, V = 300) against version 2, at the parity bound and not bit-equal; V = 302
    /// falls back to version 2's bits; and version 3 against the CPU twin.</summary>
    [Test]
    public void NceKl_V3AgainstV2_AndFallback([Values(300, 302)] int v)
    {
        var ops = TestUtil.Ilgpu;
        int n = 7;
        float[] zn = TestUtil.Rand(n * v, 3, 4), zg = TestUtil.Rand(n * v, 4, 4);
        var r = new float[2][];
        foreach (var sv in new[] { Wide.Version.V1Scalar, Wide.Version.V2Float4 })
        {
            ops.StreamVersion = sv;
            try
            {
                using var a = ops.Alloc("zn", DType.F32, n, v); ops.Upload(a, zn);
                using var b = ops.Alloc("zg", DType.F32, n, v); ops.Upload(b, zg);
                using var kl = ops.Alloc("kl", DType.F32, n);
                ops.NceKl(a, b, kl, n, v, 2f);
                r[(int)sv - 1] = TestUtil.Get(ops, kl);
            }
            finally { ops.StreamVersion = Wide.Version.V2Float4; }
        }
        TestUtil.Close(r[0], r[1], 1e-5f, 1e-4f, $"kl: v3 vs v2 (V {v})");
        var inputs = new Dictionary<string, (DType, int[], float[]?, int[]?)>
        {
            ["zn"] = (DType.F32, [n, v], zn, null), ["zg"] = (DType.F32, [n, v], zg, null), ["kl"] = (DType.F32, [n], new float[n], null),
        };
        var both = TestUtil.OnBoth(inputs, (ops2, t) => ops2.NceKl(t["zn"], t["zg"], t["kl"], n, v, 2f), ["kl"]);
        TestUtil.Close(both[0].F["kl"], both[1].F["kl"], 1e-5f, 1e-4f, $"kl: kernels vs twin (V {v})");
        Assert.That(r[1].All(x => x > 0f), Is.True, "two different rows have a positive KL");
        if (v % 4 == 0) Assert.That(r[1], Is.Not.EqualTo(r[0]), "version 3 sums each row in another order: some bits must differ");
        else Assert.That(r[1], Is.EqualTo(r[0]), "V not a multiple of 4: version 3 falls back to version 2");
    }

    /// <summary>NCE's fused distillation, version 3 (float4, V = 300) against version 2 at τ = 2 and τ = 1, with targets in
    /// the first and last lane, a row without a target and a masked row: the parity bound, not bit-equal; V = 302 falls
    /// back to version 2's bits; version 3 against the CPU twin.</summary>
    [Test]
    public void NceDistill_V3AgainstV2_AndFallback([Values(300, 302)] int v, [Values(2f, 1f)] float tau)
    {
        var ops = TestUtil.Ilgpu;
        int n = 6;
        int[] y = [0, v - 1, -1, -1, 149, 2];
        float[] rw = [1f, 0.5f, 1f, 0f, 1f, 1f];
        float[] zs = TestUtil.Rand(n * v, 5, 4), zn = TestUtil.Rand(n * v, 6, 4);
        void Run(IBackend o, Dictionary<string, Tensor> t) =>
            o.NceDistillFused(t["zs"], t["zn"], t["y"], t["w"], t["ce"], t["kd"], n, v, tau, 0.5f, 1.0 / n, 1.0 / n, true);
        var inputs = new Dictionary<string, (DType, int[], float[]?, int[]?)>
        {
            ["zs"] = (DType.F32, [n, v], zs, null), ["zn"] = (DType.F32, [n, v], zn, null), ["y"] = (DType.I32, [n], null, y),
            ["w"] = (DType.F32, [n], rw, null), ["ce"] = (DType.F32, [n], new float[n], null), ["kd"] = (DType.F32, [n], new float[n], null),
        };
        string[] outs = ["zs", "ce", "kd"];
        var r = new Dictionary<string, float[]>[2];
        foreach (var sv in new[] { Wide.Version.V1Scalar, Wide.Version.V2Float4 })
        {
            ops.StreamVersion = sv;
            try { r[(int)sv - 1] = TestUtil.OnBoth(inputs, Run, outs)[1].F; }
            finally { ops.StreamVersion = Wide.Version.V2Float4; }
        }
        var twin = TestUtil.OnBoth(inputs, Run, outs)[0].F;
        foreach (var k in outs)
        {
            TestUtil.Close(r[0][k], r[1][k], 1e-5f, 1e-4f, $"{k}: v3 vs v2 (V {v}, τ {tau})");
            TestUtil.Close(twin[k], r[1][k], 1e-5f, 1e-4f, $"{k}: kernels vs twin (V {v}, τ {tau})");
        }
        Assert.That(r[1]["zs"].Skip(3 * v).Take(v), Is.All.EqualTo(0f), "a masked row gets a zero gradient");
        Assert.That(r[1]["zs"][0], Is.LessThan(0f), "the target's gradient in the first lane");
        Assert.That(r[1]["zs"][v + v - 1], Is.LessThan(0f), "the target's gradient in the last lane");
        Assert.That(r[1]["ce"][2], Is.EqualTo(0f), "no target: no cross-entropy");
        Assert.That(r[1]["kd"][2], Is.Not.EqualTo(0f), "no target: KD still");
        bool same = outs.All(k => r[0][k].SequenceEqual(r[1][k]));
        if (v % 4 == 0) Assert.That(same, Is.False, "version 3 sums each row in another order: some bits must differ");
        else Assert.That(same, Is.True, "V not a multiple of 4: version 3 falls back to version 2");
    }

    /// <summary>Through the backend (version 2 by default) against the CPU twin, at an aligned length (the float4 path)
    /// and at odd lengths and odd offsets (the scalar fallback); kernel-parity bound 1e-5 + 1e-4 relative (exp differs).</summary>
    [Test]
    public void Backend_AlignedAndFallbackLengths_MatchTheTwin([Values(0, 1)] int offset, [Values(52, 51, 50)] int n)
    {
        int len = n + 8;
        var inputs = new Dictionary<string, (DType, int[], float[]?, int[]?)>
        {
            ["g"] = (DType.F32, [len], TestUtil.Rand(len, 1, 4), null), ["u"] = (DType.F32, [len], TestUtil.Rand(len, 2), null),
            ["h"] = (DType.F32, [len], TestUtil.Rand(len, 3), null), ["dh"] = (DType.F32, [len], TestUtil.Rand(len, 4), null),
            ["dg"] = (DType.F32, [len], TestUtil.Rand(len, 5), null), ["du"] = (DType.F32, [len], TestUtil.Rand(len, 6), null),
            ["p"] = (DType.F32, [len], TestUtil.Rand(len, 7), null), ["m"] = (DType.F32, [len], TestUtil.Rand(len, 8, 0.1f), null),
            ["v"] = (DType.F32, [len], TestUtil.Rand(len, 9, 0.01f).Select(MathF.Abs).ToArray(), null),
            ["y"] = (DType.F32, [len], TestUtil.Rand(len, 10), null), ["f"] = (DType.F32, [len], TestUtil.Rand(len, 11), null),
            ["dr"] = (DType.F32, [len], TestUtil.Rand(len, 12), null), ["dd"] = (DType.F32, [len], TestUtil.Rand(len, 13), null),
        };
        string[] outs = ["h", "dg", "du", "p", "m", "v", "y", "f", "dr", "dd"];
        var both = TestUtil.OnBoth(inputs, (ops, t) =>
        {
            Tensor V(string k) => ops.View(t[k], offset, n);
            ops.SwiGluForward(V("h"), V("g"), V("u"), n);
            ops.SwiGluBackward(V("dg"), V("du"), V("dh"), V("g"), V("u"), n);
            ops.AdamW(V("p"), V("g"), V("m"), V("v"), n, 1e-2f, 0.9f, 0.999f, 1e-8f, 0.01f, 2);
            ops.Axpy(V("y"), V("u"), 0.5f, n);
            ops.Scale(V("y"), 2f, n);
            ops.Fill(V("f"), 3f);
            ops.DropoutForward(V("dr"), V("u"), 0.25f, 9, n);
            ops.DropoutBackward(V("dd"), V("dh"), 0.25f, 9, n);
        }, outs);
        foreach (var o in outs)
        {
            TestUtil.Close(both[0].F[o], both[1].F[o], 1e-5f, 1e-4f, $"{o} (n {n}, offset {offset})");
            var before = inputs[o].Item3!;
            for (int i = 0; i < len; i++)
                if (i < offset || i >= offset + n)
                    Assert.That(both[1].F[o][i], Is.EqualTo(before[i]), $"{o}[{i}] outside the view must stay");
        }
    }
}
