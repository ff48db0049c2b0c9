using NegDistill.Checkpoints;
using NegDistill.Runtime;

namespace NegDistill.Tests;

/// <summary>
/// Every kernel against its CPU twin, both through <see cref="IBackend"/>: the kernels on ILGPU's
/// CPU accelerator, the twin on <see cref="CpuBackend"/>, same inputs, tiny shapes.
/// Tolerance: both sides are fp32 but sum in different orders (tile vs packed GEMM, tree vs
/// sequential reductions) and use different exp/sin/cos implementations; 1e-5 absolute +
/// 1e-4 relative covers that for O(1) values and K ≤ 100 (K·eps ≈ 1e-5).
/// </summary>
[TestFixture]
public class KernelParityTests
{
    const float Atol = 1e-5f, Rtol = 1e-4f;

    /// <summary>Runs <paramref name="op"/> on both backends with the same uploaded inputs and compares
    /// every tensor named in <paramref name="outputs"/>.</summary>
    static void Parity(Dictionary<string, (DType dt, int[] shape, float[]? data, int[]? ints)> inputs,
        Action<IBackend, Dictionary<string, Tensor>> op, params string[] outputs)
    {
        var both = TestUtil.OnBoth(inputs, op, outputs);
        foreach (var o in outputs) TestUtil.Close(both[0].F[o], both[1].F[o], Atol, Rtol, o);
    }

    static (DType, int[], float[]?, int[]?) F(ulong seed, float scale, params int[] shape) =>
        (DType.F32, shape, TestUtil.Rand(shape.Aggregate(1, (a, b) => a * b), seed, scale), null);
    static (DType, int[], float[]?, int[]?) Z(params int[] shape) => (DType.F32, shape, null, null);
    static (DType, int[], float[]?, int[]?) I(int[] v) => (DType.I32, [v.Length], null, v);

    [Test]
    public void MatMul([Values] bool transA, [Values] bool transB, [Values(DType.F32, DType.F16, DType.BF16)] DType bType,
        [Values(0f, 0.5f)] float beta)
    {
        foreach (var (m, n, k) in new[] { (1, 1, 1), (5, 7, 3), (17, 33, 65), (70, 9, 20) })
        {
            var b = (bType, transB ? new[] { n, k } : new[] { k, n }, TestUtil.Rand(n * k, 2), (int[]?)null);
            Parity(new() { ["a"] = F(1, 1, m * k), ["b"] = b, ["c"] = F(3, 1, m * n) },
                (ops, t) => ops.MatMul(t["c"], t["a"], t["b"], m, n, k, transA, transB, 1.5f, beta), "c");
        }
    }

    [Test]
    public void Embedding()
    {
        int[] tok = [3, 0, 3, 9, 1];
        Parity(new() { ["wte"] = F(1, 1, 10, 6), ["tok"] = I(tok), ["out"] = Z(5, 6), ["dout"] = F(2, 1, 5, 6), ["dwte"] = F(3, 1, 10, 6) },
            (ops, t) => { ops.EmbeddingForward(t["out"], t["tok"], t["wte"], 5, 6); ops.EmbeddingBackward(t["dwte"], t["tok"], t["dout"], 5, 6); },
            "out", "dwte");
    }

    /// <summary>Embedding backward with repeated tokens: a token on 40 of 77 rows (spread over the whole range),
    /// others on two or three rows, some once, an odd width. Version 2 (rows grouped by token, each run summed in
    /// row order) must equal the twin bit for bit, and version 1 too; dwte accumulates (+=) from random values.</summary>
    [Test]
    public void EmbeddingBackward_RepeatedTokens_BitEqualTwinAndV1([Values(1, 37)] int c)
    {
        int n = 77, v = 50;
        var tok = Enumerable.Range(0, n).Select(i => i % 2 == 0 && i < 80 ? 7 : (i * 13) % v).ToArray();
        tok[1] = 49; tok[n - 1] = 0;                           // the vocabulary's two ends
        var inputs = new Dictionary<string, (DType, int[], float[]?, int[]?)>
            { ["tok"] = I(tok), ["dout"] = F(2, 1, n, c), ["dwte"] = F(3, 1, v, c) };
        var both = TestUtil.OnBoth(inputs, (ops, t) => ops.EmbeddingBackward(t["dwte"], t["tok"], t["dout"], n, c), "dwte");
        Assert.That(both[1].F["dwte"], Is.EqualTo(both[0].F["dwte"]), "v2 vs twin, bit for bit");
        Assert.That(both[0].F["dwte"], Is.Not.EqualTo(inputs["dwte"].Item3), "the backward accumulates into dwte");
        var v1 = TestUtil.OnBoth(inputs, (ops, t) =>
        {
            if (ops is NegDistill.Kernels.IlgpuBackend ib) ib.EmbeddingBackwardV1(t["dwte"], t["tok"], t["dout"], n, c);
            else ops.EmbeddingBackward(t["dwte"], t["tok"], t["dout"], n, c);
        }, "dwte");
        Assert.That(v1[1].F["dwte"], Is.EqualTo(both[1].F["dwte"]), "v1 vs v2, bit for bit");
    }

    /// <summary>RMSNorm forward and backward; rows 5 (one block of the dw sum) and 77 (three blocks, the last
    /// partial), so the kernels' version 2 dw (parts per 32 rows, added in block order) meets the twin's blocks.</summary>
    [Test]
    public void RmsNorm([Values(7, 40)] int c, [Values(5, 77)] int n)
    {
        Parity(new() { ["x"] = F(1, 2, n, c), ["w"] = F(2, 1, c), ["y"] = Z(n, c), ["rstd"] = Z(n), ["dy"] = F(3, 1, n, c), ["dx"] = F(4, 1, n, c), ["dw"] = F(5, 1, c) },
            (ops, t) =>
            {
                ops.RmsNormForward(t["y"], t["rstd"], t["x"], t["w"], n, c, 1e-6f);
                ops.RmsNormBackward(t["dx"], t["dw"], t["dy"], t["x"], t["w"], t["rstd"], n, c);
            }, "y", "rstd", "dx", "dw");
    }

    /// <summary>A frozen norm weight (dw null) gets exactly the dx of the full backward, on both backends; and the
    /// kernels' dw version 1 (one thread per column) agrees with version 2 (fp32, other summation order: 1e-5 + 1e-4).</summary>
    [Test]
    public void RmsNorm_FrozenWeight_SameDx_AndDwVersionsAgree()
    {
        int n = 77, c = 40;
        foreach (IBackend ops in new IBackend[] { new CpuBackend(), TestUtil.Ilgpu })
        {
            float[] Dx(bool withDw, out float[] dw, bool v1 = false)
            {
                using var x = ops.Alloc("x", DType.F32, n, c); using var w = ops.Alloc("w", DType.F32, c); using var rstd = ops.Alloc("rstd", DType.F32, n);
                using var y = ops.Alloc("y", DType.F32, n, c); using var dy = ops.Alloc("dy", DType.F32, n, c); using var dx = ops.Alloc("dx", DType.F32, n, c);
                using var tdw = ops.Alloc("dw", DType.F32, c);
                ops.Upload(x, TestUtil.Rand(n * c, 1, 2)); ops.Upload(w, TestUtil.Rand(c, 2)); ops.Upload(dy, TestUtil.Rand(n * c, 3)); ops.Upload(dx, TestUtil.Rand(n * c, 4));
                ops.Upload(tdw, TestUtil.Rand(c, 5));
                ops.RmsNormForward(y, rstd, x, w, n, c, 1e-6f);
                if (v1) ((NegDistill.Kernels.IlgpuBackend)ops).RmsNormBackwardV1(dx, tdw, dy, x, w, rstd, n, c);
                else ops.RmsNormBackward(dx, withDw ? tdw : null, dy, x, w, rstd, n, c);
                dw = TestUtil.Get(ops, tdw);
                return TestUtil.Get(ops, dx);
            }
            var full = Dx(true, out var dwFull);
            var frozen = Dx(false, out _);
            Assert.That(frozen, Is.EqualTo(full), ops.Name);
            Assert.That(dwFull, Is.Not.EqualTo(TestUtil.Rand(c, 5)), $"{ops.Name}: the full backward accumulates into dw");
            if (ops is NegDistill.Kernels.IlgpuBackend)
            {
                Dx(true, out var dwV1, v1: true);
                TestUtil.Close(dwFull, dwV1, 1e-5f, 1e-4f, "dw v2 vs v1");
            }
        }
    }

    [Test]
    public void Rope([Values] bool inverse)
    {
        Parity(new() { ["x"] = F(1, 1, 4, 3 * 8), ["pos"] = I([0, 3, 17, 255]) },
            (ops, t) => ops.Rope(t["x"], t["pos"], 4, 3, 8, 10000f, inverse), "x");
    }

    [Test]
    public void Attention([Values(1, 5, 19)] int T)
    {
        int B = 2, H = 2, hd = 4, C = H * hd;
        var mask = Enumerable.Range(0, B * T).Select(i => i >= T && i < T + 2 ? 0f : 1f).ToArray(); // row 1 is left-padded
        if (T == 1) mask = [1f, 1f];
        Parity(new()
        {
            ["q"] = F(1, 1, B, T, C), ["k"] = F(2, 1, B, T, C), ["v"] = F(3, 1, B, T, C), ["mask"] = (DType.F32, [B, T], mask, null),
            ["out"] = Z(B, T, C), ["lse"] = Z(B, H, T), ["dout"] = F(4, 1, B, T, C),
            ["dq"] = F(5, 1, B, T, C), ["dk"] = F(6, 1, B, T, C), ["dv"] = F(7, 1, B, T, C),
        }, (ops, t) =>
        {
            ops.AttentionForward(t["out"], t["lse"], t["q"], t["k"], t["v"], t["mask"], B, T, H, hd);
            ops.AttentionBackward(t["dq"], t["dk"], t["dv"], t["dout"], t["out"], t["lse"], t["q"], t["k"], t["v"], t["mask"], B, T, H, hd);
        }, "out", "dq", "dk", "dv");
        // lse too, where finite (a left-padded query's is −∞ on both)
        var both = TestUtil.OnBoth(new()
        {
            ["q"] = F(1, 1, B, T, C), ["k"] = F(2, 1, B, T, C), ["v"] = F(3, 1, B, T, C), ["mask"] = (DType.F32, [B, T], mask, null), ["out"] = Z(B, T, C), ["lse"] = Z(B, H, T),
        }, (ops, t) => ops.AttentionForward(t["out"], t["lse"], t["q"], t["k"], t["v"], t["mask"], B, T, H, hd), "lse");
        var (l0, l1) = (both[0].F["lse"], both[1].F["lse"]);
        for (int i = 0; i < l0.Length; i++)
            if (float.IsNegativeInfinity(l0[i])) Assert.That(l1[i], Is.EqualTo(float.NegativeInfinity), $"lse[{i}]");
            else Assert.That(l1[i], Is.EqualTo(l0[i]).Within(Atol + Rtol * Math.Abs(l0[i])), $"lse[{i}]");
    }

    [Test]
    public void SwiGlu()
    {
        Parity(new() { ["g"] = F(1, 4, 50), ["u"] = F(2, 1, 50), ["h"] = Z(50), ["dh"] = F(3, 1, 50), ["dg"] = F(4, 1, 50), ["du"] = F(5, 1, 50) },
            (ops, t) => { ops.SwiGluForward(t["h"], t["g"], t["u"], 50); ops.SwiGluBackward(t["dg"], t["du"], t["dh"], t["g"], t["u"], 50); },
            "h", "dg", "du");
    }

    [Test]
    public void Dropout_SameMaskOnBothSides([Values(0f, 0.05f, 0.5f)] float p)
    {
        Parity(new() { ["x"] = F(1, 1, 300), ["y"] = Z(300), ["dy"] = F(2, 1, 300), ["dx"] = F(3, 1, 300) },
            (ops, t) => { ops.DropoutForward(t["y"], t["x"], p, 1234, 300); ops.DropoutBackward(t["dx"], t["dy"], p, 1234, 300); },
            "y", "dx");
    }

    [Test]
    public void CrossEntropyFused([Values] bool grad, [Values(5, 300)] int v)
    {
        int[] y = [0, -1, v - 1, 2];
        Parity(new() { ["z"] = F(1, 5, 4, v), ["loss"] = Z(4), ["y"] = I(y) },
            (ops, t) => ops.CrossEntropyFused(t["z"], t["loss"], t["y"], 4, v, 0.25f, grad), "z", "loss");
    }

    [Test]
    public void AdamW()
    {
        Parity(new() { ["p"] = F(1, 1, 100), ["g"] = F(2, 1, 100), ["m"] = F(3, 0.1f, 100), ["v"] = (DType.F32, [100], TestUtil.Rand(100, 4, 0.01f).Select(MathF.Abs).ToArray(), null) },
            (ops, t) => { for (int s = 1; s <= 3; s++) ops.AdamW(t["p"], t["g"], t["m"], t["v"], 100, 1e-2f, 0.9f, 0.999f, 1e-8f, 0.01f, s); },
            "p", "m", "v");
    }

    [Test]
    public void ElementwiseAndReductions()
    {
        Parity(new() { ["y"] = F(1, 1, 1000), ["x"] = F(2, 1, 1000), ["f"] = Z(10) },
            (ops, t) => { ops.Axpy(t["y"], t["x"], 0.5f, 1000); ops.Scale(t["y"], 2f, 999); ops.Fill(t["f"], 3f); }, "y", "f");
        var x = TestUtil.Rand(1000, 5);
        foreach (IBackend ops in new IBackend[] { new CpuBackend(), TestUtil.Ilgpu })
        {
            using var t = ops.Alloc("x", DType.F32, 1000);
            ops.Upload(t, x);
            Assert.That(ops.SumSquares(t, 1000), Is.EqualTo(x.Sum(v => (double)v * v)).Within(1e-4), ops.Name);
            Assert.That(ops.Sum(t, 1000), Is.EqualTo(x.Sum(v => (double)v)).Within(1e-4), ops.Name);
            Assert.That(ops.HasNonFinite(t, 1000), Is.False, ops.Name);
            x[777] = float.NaN; ops.Upload(t, x);
            Assert.That(ops.HasNonFinite(t, 1000), Is.True, ops.Name);
            Assert.That(ops.HasNonFinite(t, 777), Is.False, ops.Name + " (prefix before the NaN)");
            x[777] = 0;
        }
    }

    [Test]
    public void FillNormal_TwinDrawsTheHostValues_KernelsTheirFp32Form([Values(DType.F32, DType.BF16, DType.F16)] DType dt)
    {
        // the model's weights can be drawn where they live: the twin exactly as Init.Normal, the kernels in
        // fp32 (Init.NormalAt32) within 1e-5 relative (+ one 16-bit rounding step where narrowed)
        const int n = 4000;
        var host = NegDistill.Model.Init.Normal(n, 0.02f, 77);
        float Narrowed(float v) => dt == DType.F32 ? v : HalfPrecision.Widen(HalfPrecision.Narrow(v, dt == DType.BF16), dt == DType.BF16);
        foreach (IBackend ops in new IBackend[] { new CpuBackend(), TestUtil.Ilgpu })
        {
            using var t = ops.Alloc("w", dt, n);
            ops.FillNormal(t, 0.02f, 77);
            var got = TestUtil.Get(ops, t);
            bool twin = ops is CpuBackend;
            float step = dt == DType.F32 ? 0f : dt == DType.BF16 ? 1f / 128 : 1f / 1024;
            for (int i = 0; i < n; i++)
            {
                if (twin) { Assert.That(got[i], Is.EqualTo(Narrowed(host[i])), $"{ops.Name} {dt} element {i}"); continue; }
                Assert.That(got[i], Is.EqualTo(Narrowed(NegDistill.Model.Init.NormalAt32(0.02f, 77, i))), $"{ops.Name} {dt} element {i} (kernel = NormalAt32)");
                Assert.That(got[i], Is.EqualTo(host[i]).Within(1e-5f * 0.1f + step * Math.Abs(host[i])), $"{ops.Name} {dt} element {i} vs host");
            }
            Assert.That(got.Select(v => (double)v * v).Average(), Is.EqualTo(0.02 * 0.02).Within(0.1 * 0.02 * 0.02), "variance of the draws");
        }
    }

    [Test]
    public void ViewsShareStorage()
    {
        foreach (IBackend ops in new IBackend[] { new CpuBackend(), TestUtil.Ilgpu })
        {
            using var t = ops.Alloc("t", DType.F32, 4, 3);
            var v = ops.View(t, 6, 2, 3);
            ops.Fill(v, 2f);
            var all = TestUtil.Get(ops, t);
            Assert.That(all, Is.EqualTo(new float[] { 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2 }), ops.Name);
            Assert.Throws<ArgumentException>(() => ops.View(t, 7, 2, 3), ops.Name);
        }
    }
}
