using NegDistill.Ops;
using NegDistill.Runtime;

namespace NegDistill.Tests;

/// <summary>
/// The CPU twin's attention as GEMMs per (batch, head) pair, query and key blocks of 48 rows
/// (<see cref="Attention.ForwardHead{T}"/>, <see cref="Attention.BackwardHead{T}"/>), against the per-row
/// reference form (<see cref="Attention.ForwardRows{T}"/>, <see cref="Attention.BackwardRows{T}"/>) in fp64.
/// Shapes: T below one block, T not a multiple of the block (the last block takes the remainder), the
/// small preset's T = 256 with hd = 48 and H·hd = C strides, and an hd that is not a multiple of the SIMD
/// width. Masks: left padding (queries with no visible key), right padding, a hole, a fully padded sequence.
/// Tolerances:
/// - fp64 GEMM form vs fp64 rows: same math, other summation order; sums of ≤ 256 O(1) terms, so
///   1e-12 absolute + 1e-10 relative is far above the ~1e-14 rounding and far below any real error.
/// - fp32 backend (GEMM, AVX-512 softmax with its own exp) vs fp64 rows: fp32 rounding of sums of ≤ 256
///   terms (K·eps ≈ 1.5e-5 relative at worst, ~1e-6 typically) plus a 2-ulp exp; 2e-5 absolute + 1e-4
///   relative, about the kernel parity tests' (observed: at most 4e-6 absolute, under 2 % of the tolerance).
/// - lse: −∞ exactly on queries with no visible key (and out exactly 0 there), else compared as above.
/// </summary>
[TestFixture]
public class AttentionTests
{
    static IEnumerable<TestCaseData> Cases()
    {
        // name, B, T, H, hd
        yield return new TestCaseData("T below one block", 3, 7, 2, 4);
        yield return new TestCaseData("T = 100: blocks 48 + 52", 3, 100, 3, 16);
        yield return new TestCaseData("T = 131, hd not a multiple of 16", 3, 131, 2, 20);
        yield return new TestCaseData("small preset shape", 3, 256, 6, 48);
    }

    /// <summary>Sequence 0 full; 1 left-padded by a third of T (its first queries see no key) and right-padded
    /// by 2; 2 with a hole at positions 1–2 and, when B &gt; 3, further sequences fully padded.</summary>
    static double[] Mask(int B, int T, bool fullyPaddedLast)
    {
        var m = new double[B * T];
        for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
        {
            bool on = b switch
            {
                0 => true,
                1 => t >= T / 3 && t < T - 2,
                _ => t != 1 && t != 2,
            };
            if (fullyPaddedLast && b == B - 1) on = false;
            m[b * T + t] = on ? 1 : 0;
        }
        return m;
    }

    record Result(double[] Out, double[] Lse, double[] Dq, double[] Dk, double[] Dv);

    static Result RowsF64(double[] q, double[] k, double[] v, double[] mask, double[] dout, double[] g0, int B, int T, int H, int hd)
    {
        int n = B * T * H * hd;
        var o = new double[n]; var lse = new double[B * H * T];
        var dq = (double[])g0.Clone(); var dk = (double[])g0.Clone(); var dv = (double[])g0.Clone();
        Attention.ForwardRows<double>(o, lse, q, k, v, mask, B, T, H, hd);
        Attention.BackwardRows<double>(dq, dk, dv, dout, lse, q, k, v, mask, B, T, H, hd);
        return new(o, lse, dq, dk, dv);
    }

    static Result Backend<TB>(CpuBackend<TB> be, double[] q, double[] k, double[] v, double[] mask, double[] dout, double[] g0, int B, int T, int H, int hd)
        where TB : unmanaged, System.Numerics.IFloatingPointIeee754<TB>
    {
        int C = H * hd;
        Tensor Up(double[] x, params int[] shape)
        {
            var t = be.Alloc("x", DType.F32, shape);
            be.Write(t, x.Select(TB.CreateTruncating).ToArray());
            return t;
        }
        double[] Read(Tensor t) => be.Read(t).Select(double.CreateTruncating).ToArray();
        var (tq, tk, tv, tm, tdo) = (Up(q, B, T, C), Up(k, B, T, C), Up(v, B, T, C), Up(mask, B, T), Up(dout, B, T, C));
        var nan = Enumerable.Repeat(double.NaN, B * T * C).ToArray();
        // out and lse start as NaN: the forward must write every element
        var (to, tl) = (Up(nan, B, T, C), Up(nan.AsSpan(0, B * H * T).ToArray(), B, H, T));
        var (tdq, tdk, tdv) = (Up(g0, B, T, C), Up(g0, B, T, C), Up(g0, B, T, C));
        be.AttentionForward(to, tl, tq, tk, tv, tm, B, T, H, hd);
        be.AttentionBackward(tdq, tdk, tdv, tdo, to, tl, tq, tk, tv, tm, B, T, H, hd);
        return new(Read(to), Read(tl), Read(tdq), Read(tdk), Read(tdv));
    }

    static (double[] q, double[] k, double[] v, double[] dout, double[] g0) Inputs(int B, int T, int C) =>
        (TestUtil.RandD(B * T * C, 31, 2), TestUtil.RandD(B * T * C, 32, 2), TestUtil.RandD(B * T * C, 33),
         TestUtil.RandD(B * T * C, 34), TestUtil.RandD(B * T * C, 35, 0.5));

    static void Compare(Result expected, Result actual, double atol, double rtol, string what)
    {
        TestUtil.Close(expected.Out, actual.Out, atol, rtol, what + " out");
        for (int i = 0; i < expected.Lse.Length; i++)
            if (double.IsNegativeInfinity(expected.Lse[i]) || double.IsNegativeInfinity(actual.Lse[i]))
                Assert.That(actual.Lse[i], Is.EqualTo(expected.Lse[i]), $"{what} lse[{i}]: −∞ exactly where no key is visible");
            else Assert.That(actual.Lse[i], Is.EqualTo(expected.Lse[i]).Within(atol + rtol * Math.Abs(expected.Lse[i])), $"{what} lse[{i}]");
        TestUtil.Close(expected.Dq, actual.Dq, atol, rtol, what + " dq");
        TestUtil.Close(expected.Dk, actual.Dk, atol, rtol, what + " dk");
        TestUtil.Close(expected.Dv, actual.Dv, atol, rtol, what + " dv");
    }

    [TestCaseSource(nameof(Cases))]
    public void GemmForm_MatchesRowForm(string name, int B, int T, int H, int hd)
    {
        foreach (bool fullyPadded in new[] { false, true })
        {
            var mask = Mask(B, T, fullyPadded);
            var (q, k, v, dout, g0) = Inputs(B, T, H * hd);
            var rows = RowsF64(q, k, v, mask, dout, g0, B, T, H, hd);
            string what = $"{name}{(fullyPadded ? ", last sequence fully padded," : "")}";
            Compare(rows, Backend(new CpuBackend<double>(), q, k, v, mask, dout, g0, B, T, H, hd), 1e-12, 1e-10, what + " fp64");
            var f32 = Backend(new CpuBackend(), q, k, v, mask, dout, g0, B, T, H, hd);
            Compare(rows, f32, 2e-5, 1e-4, what + " fp32");
            CheckExactZeros(f32, mask, B, T, H, hd, what + " fp32");
        }
    }

    static void CheckExactZeros(Result r, double[] mask, int B, int T, int H, int hd, string what)
    {
        int C = H * hd;
        for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
        for (int t = 0; t < T; t++)
        {
            bool anyVisible = false;
            for (int s = 0; s <= t; s++) anyVisible |= mask[b * T + s] != 0;
            if (anyVisible != !double.IsNegativeInfinity(r.Lse[(b * H + h) * T + t])) Assert.Fail($"{what}: lse[{b},{h},{t}] is −∞ exactly when no key is visible");
            if (!anyVisible)
                for (int d = 0; d < hd; d++)
                    if (r.Out[(b * T + t) * C + h * hd + d] != 0) Assert.Fail($"{what}: out[{b},{t},{h}·hd+{d}] of a query with no visible key is not 0");
        }
    }

    [Test]
    public void Backend_PairsInParallel_SameBitsAsInTurn()
    {
        int B = 3, T = 100, H = 3, hd = 16, C = H * hd;
        var mask = Mask(B, T, false);
        var (q, k, v, dout, g0) = Inputs(B, T, C);
        var parallel = Backend(new CpuBackend(), q, k, v, mask, dout, g0, B, T, H, hd);
        float[] F(double[] x) => x.Select(e => (float)e).ToArray();
        var (o, lse) = (new float[B * T * C], new float[B * H * T]);
        var (dq, dk, dv) = (F(g0), F(g0), F(g0));
        Attention.Forward<float>(o, lse, F(q), F(k), F(v), F(mask), B, T, H, hd);
        Attention.Backward<float>(dq, dk, dv, F(dout), lse, F(q), F(k), F(v), F(mask), B, T, H, hd);
        Assert.That(parallel.Out, Is.EqualTo(o.Select(e => (double)e).ToArray()), "out");
        Assert.That(parallel.Lse, Is.EqualTo(lse.Select(e => (double)e).ToArray()), "lse");
        Assert.That(parallel.Dq, Is.EqualTo(dq.Select(e => (double)e).ToArray()), "dq");
        Assert.That(parallel.Dk, Is.EqualTo(dk.Select(e => (double)e).ToArray()), "dk");
        Assert.That(parallel.Dv, Is.EqualTo(dv.Select(e => (double)e).ToArray()), "dv");
    }
}
