using System.Runtime.Intrinsics;
using NegDistill.Cpu;
using NegDistill.Ops;
using NegDistill.Runtime;

namespace NegDistill.Tests;

/// <summary>
/// The vectorised, parallel element-wise ops of the CPU twin (SwiGLU, RoPE, dropout, RMSNorm backward) and the
/// vector exp behind SwiGLU and the attention softmax, against scalar references:
///   - float SwiGLU vs the double formula: h and du within 10⁻⁶ relative + 10⁻³⁰ absolute (σ from a ≤ 1.25 ulp exp and
///     four more roundings, ≤ 4·10⁻⁷), dg within 3·10⁻⁶ (1 − σ cancels for large g: 6·10⁻⁸·|g| in the bracket);
///   - RoPE, dropout: bit for bit against the element-by-element forms (same products, no FMA);
///   - RMSNorm backward: fp64 within 10⁻¹³ of the row-by-row sum, fp32 within the kernel tolerance of fp64;
///   - every op through the backend (ranges over threads) bit for bit against one call over the whole range, and
///     an element's bits independent of where its range starts (vector body or padded tail).
/// Run by .ci/run at every vector width (see IsaTests).
/// </summary>
public class ElementwiseOpsTests
{
    // Lengths around the vector widths (4, 8, 16) and the backend's 16 Ki-element chunks.
    static readonly int[] Lengths = [1, 3, 15, 16, 17, 100, 16384 * 3 + 5];

    static float[] Inputs(int n, ulong seed, float scale)
    {
        var x = TestUtil.Rand(n, seed, scale);
        // the far ends of exp's range and the signed zeros, where they fit
        float[] special = [0f, -0f, 88.8f, -88.8f, 100f, -100f, 87.3f, -87.3f, 20f, -20f];
        for (int i = 0; i < Math.Min(n, special.Length); i++) x[i * 7 % n] = special[i];
        return x;
    }

    [Test]
    public void SwiGlu_Float_MatchesTheDoubleFormula([ValueSource(nameof(Lengths))] int n)
    {
        var g = Inputs(n, 1, 12); var u = TestUtil.Rand(n, 2, 3); var dh = TestUtil.Rand(n, 3, 2);
        var dg0 = TestUtil.Rand(n, 4); var du0 = TestUtil.Rand(n, 5);
        var h = new float[n];
        SwiGlu.Forward<float>(h, g, u, n);
        var (dg, du) = ((float[])dg0.Clone(), (float[])du0.Clone());
        SwiGlu.Backward<float>(dg, du, dh, g, u, n);

        double[] D(float[] a) => a.Select(v => (double)v).ToArray();
        var hd = new double[n];
        SwiGlu.ForwardScalar<double>(hd, D(g), D(u), n);
        var (dgd, dud) = (D(dg0), D(du0));
        SwiGlu.BackwardScalar<double>(dgd, dud, D(dh), D(g), D(u), n);
        for (int i = 0; i < n; i++)
        {
            // the backward adds into values of order 1, so its error is relative to those too
            Near(h[i], hd[i], 0, 1e-6, $"h[{i}] (g = {g[i]})");
            Near(du[i], dud[i], Math.Abs(du0[i]), 1e-6, $"du[{i}] (g = {g[i]})");
            Near(dg[i], dgd[i], Math.Abs(dg0[i]), 3e-6, $"dg[{i}] (g = {g[i]})");
        }
    }

    static void Near(float got, double want, double extra, double rtol, string what)
    {
        double tol = rtol * (Math.Abs(want) + extra) + 1e-30;
        Assert.That(Math.Abs(got - want), Is.LessThanOrEqualTo(tol), $"{what}: got {got}, want {want}");
    }

    [Test]
    public void SwiGlu_Float_BitsDoNotDependOnWhereARangeStarts()
    {
        const int n = 203;
        var g = Inputs(n, 6, 10); var u = TestUtil.Rand(n, 7); var dh = TestUtil.Rand(n, 8);
        var h = new float[n];
        SwiGlu.Forward<float>(h, g, u, n);
        var (dg, du) = (new float[n], new float[n]);
        SwiGlu.Backward<float>(dg, du, dh, g, u, n);
        foreach (int start in new[] { 1, 3, 5, 8, 13 })
        {
            int m = n - start;
            var hs = new float[m];
            SwiGlu.Forward<float>(hs, g.AsSpan(start), u.AsSpan(start), m);
            var (dgs, dus) = (new float[m], new float[m]);
            SwiGlu.Backward<float>(dgs, dus, dh.AsSpan(start), g.AsSpan(start), u.AsSpan(start), m);
            for (int i = 0; i < m; i++)
            {
                Assert.That(BitConverter.SingleToInt32Bits(hs[i]), Is.EqualTo(BitConverter.SingleToInt32Bits(h[start + i])), $"h[{start + i}] from start {start}");
                Assert.That(BitConverter.SingleToInt32Bits(dgs[i]), Is.EqualTo(BitConverter.SingleToInt32Bits(dg[start + i])), $"dg[{start + i}] from start {start}");
                Assert.That(BitConverter.SingleToInt32Bits(dus[i]), Is.EqualTo(BitConverter.SingleToInt32Bits(du[start + i])), $"du[{start + i}] from start {start}");
            }
        }
    }

    [TestCase(48, 6, false)]
    [TestCase(48, 6, true)]
    [TestCase(6, 3, false)]
    [TestCase(34, 2, true)]
    public void Rope_IsTheElementwiseReference_BitForBit(int hd, int heads, bool inverse)
    {
        const int n = 37;
        int c = hd * heads;
        var pos = Enumerable.Range(0, n).Select(i => (i * 37) % 300).ToArray();
        var xf = TestUtil.Rand(n * c, 9, 2);
        var (a, b) = ((float[])xf.Clone(), (float[])xf.Clone());
        Rope.Apply<float>(a, pos, n, heads, hd, 10000f, inverse);
        Rope.ApplyReference<float>(b, pos, n, heads, hd, 10000f, inverse);
        Assert.That(a, Is.EqualTo(b).AsCollection, "float");
        var xd = TestUtil.RandD(n * c, 10, 2);
        var (ad, bd) = ((double[])xd.Clone(), (double[])xd.Clone());
        Rope.Apply<double>(ad, pos, n, heads, hd, 10000f, inverse);
        Rope.ApplyReference<double>(bd, pos, n, heads, hd, 10000f, inverse);
        Assert.That(ad, Is.EqualTo(bd).AsCollection, "double");
    }

    [Test]
    public void Dropout_IsTheMaskFormula_BitForBit_AndRangesCarryTheirOffset()
    {
        const int n = 1000;
        const float p = 0.3f;
        var x = Inputs(n, 11, 5);
        x[5] = float.PositiveInfinity; x[6] = float.NaN;
        var y = new float[n];
        Dropout.Forward<float>(y, x, p, 42, n);
        var dy = TestUtil.Rand(n, 12); var dx0 = TestUtil.Rand(n, 13); var dx = (float[])dx0.Clone();
        Dropout.Backward<float>(dx, dy, p, 42, n);
        for (int i = 0; i < n; i++)
        {
            float s = Dropout.MaskScale(p, 42, i);
            Assert.That(BitConverter.SingleToInt32Bits(y[i]), Is.EqualTo(BitConverter.SingleToInt32Bits(x[i] * s)), $"y[{i}]");
            Assert.That(BitConverter.SingleToInt32Bits(dx[i]), Is.EqualTo(BitConverter.SingleToInt32Bits(dx0[i] + dy[i] * s)), $"dx[{i}]");
        }
        // a range [300, 1000) with first = 300 draws the same mask
        var yr = new float[n - 300];
        Dropout.Forward<float>(yr, x.AsSpan(300), p, 42, n - 300, first: 300);
        Assert.That(yr, Is.EqualTo(y[300..]).AsCollection);
    }

    [Test]
    public void RmsNormBackward_Blocked_MatchesTheRowByRowSum()
    {
        const int n = 77, c = 36;   // 3 blocks of 32 rows, the last one short; C not a multiple of the vector width
        var x = TestUtil.RandD(n * c, 14, 2); var w = TestUtil.RandD(c, 15); var dy = TestUtil.RandD(n * c, 16);
        var rstd = new double[n];
        var outp = new double[n * c];
        RmsNorm.Forward<double>(outp, rstd, x, w, n, c, 1e-5);
        var dx0 = TestUtil.RandD(n * c, 17); var dw0 = TestUtil.RandD(c, 18);
        var (dx, dw) = ((double[])dx0.Clone(), (double[])dw0.Clone());
        RmsNorm.Backward<double>(dx, dw, dy, x, w, rstd, n, c);
        // reference: the formula row by row, dw summed over all rows in order
        var (ex, ew) = ((double[])dx0.Clone(), (double[])dw0.Clone());
        var sumDw = new double[c];
        for (int i = 0; i < n; i++)
        {
            double r = rstd[i], gx = 0;
            for (int j = 0; j < c; j++) gx += dy[i * c + j] * w[j] * x[i * c + j];
            for (int j = 0; j < c; j++)
            {
                ex[i * c + j] += r * dy[i * c + j] * w[j] - r * r * r * gx / c * x[i * c + j];
                sumDw[j] += dy[i * c + j] * x[i * c + j] * r;
            }
        }
        for (int j = 0; j < c; j++) ew[j] += sumDw[j];
        TestUtil.Close(ex, dx, 1e-13, 1e-13, "dx (fp64)");
        TestUtil.Close(ew, dw, 1e-13, 1e-13, "dw (fp64)");

        // fp32 within the kernel tolerance of fp64
        float[] F(double[] a) => a.Select(v => (float)v).ToArray();
        var (dxf, dwf) = (F(dx0), F(dw0));
        RmsNorm.Backward<float>(dxf, dwf, F(dy), F(x), F(w), F(rstd), n, c);
        TestUtil.Close(F(dx), dxf, 1e-5f, 1e-4f, "dx (fp32)");
        TestUtil.Close(F(dw), dwf, 1e-5f, 1e-4f, "dw (fp32)");
    }

    [Test]
    public void Backend_ElementwiseOps_InParallel_SameBitsAsOneCall()
    {
        // Long enough for several of the backend's chunks (and RMSNorm blocks), odd so the last chunk is partial.
        const int rows = 301, c = 288, heads = 6, hd = 48;
        int n = rows * c;
        using var ops = new CpuBackend();
        Tensor T(float[] v) { var t = ops.Alloc("t", DType.F32, v.Length); ops.Upload(t, v); return t; }
        float[] Get(Tensor t) => TestUtil.Get(ops, t);
        var g = Inputs(n, 19, 8); var u = TestUtil.Rand(n, 20); var dh = TestUtil.Rand(n, 21);

        using var tg = T(g); using var tu = T(u); using var tdh = T(dh); using var th = T(new float[n]);
        ops.SwiGluForward(th, tg, tu, n);
        var h = new float[n];
        SwiGlu.Forward<float>(h, g, u, n);
        Assert.That(Get(th), Is.EqualTo(h).AsCollection, "SwiGLU forward");

        using var tdg = T(new float[n]); using var tdu = T(new float[n]);
        ops.SwiGluBackward(tdg, tdu, tdh, tg, tu, n);
        var (dg, du) = (new float[n], new float[n]);
        SwiGlu.Backward<float>(dg, du, dh, g, u, n);
        Assert.That(Get(tdg), Is.EqualTo(dg).AsCollection, "SwiGLU backward dg");
        Assert.That(Get(tdu), Is.EqualTo(du).AsCollection, "SwiGLU backward du");

        using var ty = T(new float[n]);
        ops.DropoutForward(ty, tg, 0.05f, 7, n);
        var y = new float[n];
        Dropout.Forward<float>(y, g, 0.05f, 7, n);
        Assert.That(Get(ty), Is.EqualTo(y).AsCollection, "dropout forward");
        using var tdx = T(new float[n]);
        ops.DropoutBackward(tdx, tdh, 0.05f, 7, n);
        var dx = new float[n];
        Dropout.Backward<float>(dx, dh, 0.05f, 7, n);
        Assert.That(Get(tdx), Is.EqualTo(dx).AsCollection, "dropout backward");

        var pos = Enumerable.Range(0, rows).Select(i => i % 256).ToArray();
        using var tpos = ops.Alloc("pos", DType.I32, rows); ops.Upload(tpos, pos);
        using var tx = T(g);
        ops.Rope(tx, tpos, rows, heads, hd, 10000f, false);
        var xr = (float[])g.Clone();
        Rope.Apply<float>(xr, pos, rows, heads, hd, 10000f, false);
        Assert.That(Get(tx), Is.EqualTo(xr).AsCollection, "RoPE");

        var w = TestUtil.Rand(c, 22); var rs = TestUtil.Rand(rows, 23).Select(v => 1 + Math.Abs(v)).ToArray();
        using var tw = T(w); using var trs = T(rs); using var tgx = T(new float[n]); using var tgw = T(new float[c]);
        ops.RmsNormBackward(tgx, tgw, tdh, tg, tw, trs, rows, c);
        var (rx, rw) = (new float[n], new float[c]);
        RmsNorm.Backward<float>(rx, rw, dh, g, w, rs, rows, c);
        Assert.That(Get(tgx), Is.EqualTo(rx).AsCollection, "RMSNorm backward dx");
        Assert.That(Get(tgw), Is.EqualTo(rw).AsCollection, "RMSNorm backward dw");
    }

    [Test]
    public void VectorExp_WithinAnUlpAndAQuarter_AndTheSameBitsAtEveryWidth()
    {
        // 2^20 points spread over exp's whole float range, plus the edges.
        const int n = 1 << 20;
        var x = new float[n + 8];
        for (int i = 0; i < n; i++) x[i] = -87.3f + 176f * i / n;
        float[] edges = [-87.3f, 0f, -0f, 88.7f, 1e-8f, -1e-8f, 0.5f, -0.5f];
        edges.CopyTo(x, n);
        var e128 = Apply<Vector128<float>, V128>(x, v => VecMath.Exp<Vector128<float>, V128>(v));
        double worst = 0;
        for (int i = 0; i < x.Length; i++)
        {
            double exact = Math.Exp(x[i]);
            float f = (float)exact;
            double ulp = MathF.BitIncrement(f) - f;
            worst = Math.Max(worst, Math.Abs(e128[i] - exact) / ulp);
        }
        // measured: 1.25 ulp with FMA, 1.26 where an FMA is a multiply and an add
        Assert.That(worst, Is.LessThanOrEqualTo(CpuInfo.HardwareFma ? 1.25 : 1.3), "ulp error of exp");
        if (Vector256.IsHardwareAccelerated)
            Assert.That(Apply<Vector256<float>, V256>(x, v => VecMath.Exp<Vector256<float>, V256>(v)), Is.EqualTo(e128).AsCollection, "256-bit vs 128-bit");
        if (Vector512.IsHardwareAccelerated)
            Assert.That(Apply<Vector512<float>, V512>(x, v => VecMath.Exp<Vector512<float>, V512>(v)), Is.EqualTo(e128).AsCollection, "512-bit vs 128-bit");
        // the softmax form: exactly 0 below −87.3, and for −∞; NaN stays NaN
        float[] sp = [-87.31f, -100f, float.NegativeInfinity, float.NaN];
        var s = Apply<Vector128<float>, V128>(sp, v => VecMath.ExpNeg<Vector128<float>, V128>(v));
        Assert.That(s[..3], Is.All.EqualTo(0f));
        Assert.That(float.IsNaN(s[3]), Is.True);
    }

    static unsafe float[] Apply<TV, TS>(float[] x, Func<TV, TV> f) where TV : unmanaged where TS : IVecF<TV>
    {
        int w = TS.Count;
        var padded = new float[(x.Length + w - 1) / w * w];
        x.CopyTo(padded, 0);
        var r = new float[padded.Length];
        fixed (float* px = padded) fixed (float* pr = r)
            for (int i = 0; i < padded.Length; i += w) TS.Store(pr + i, f(TS.Load(px + i)));
        return r[..x.Length];
    }
}
