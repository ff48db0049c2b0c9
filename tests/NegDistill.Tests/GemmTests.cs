using System.Numerics;
using NegDistill.Cpu;

namespace NegDistill.Tests;

/// <summary>
/// Gemm.Compute / ComputeWide16 against the naive Gemm.Reference.
///
/// Tolerance: both the fast kernels and the reference evaluate each element as a sum of K products
/// (FMA chains in a different order), then one alpha scale and one beta update. Each result is within
/// (K+2)·u·(|alpha|·Σ_k |a_ik·b_kj| + |beta·c_ij|) of the exact value (u = 2^-24 for float, 2^-53 for double,
/// the standard bound for recursive summation), so they differ by at most twice that. The bound is
/// evaluated per element from |A|·|B| computed with the reference itself.
/// </summary>
[TestFixture]
[NonParallelizable] // the determinism tests change Gemm.MaxDegreeOfParallelism
public class GemmTests
{
    private static readonly (bool TransA, bool TransB)[] Transposes = { (false, false), (false, true), (true, false), (true, true) };

    // M, N, K: tiny odd shapes, the skinny (few rows / few columns) paths, edges around the 12×32 tile, and the packed path.
    private static readonly (int M, int N, int K)[] Shapes =
    {
        (1, 1, 1), (1, 1, 17), (2, 3, 5), (3, 5, 7), (5, 3, 2), (7, 7, 7), (1, 17, 3), (17, 1, 9), (16, 16, 16), (17, 17, 17),
        (12, 32, 8), (13, 33, 9), (11, 31, 64), (1, 300, 257), (300, 1, 257), (4, 130, 70), (130, 4, 70), (8, 200, 100),
        (200, 8, 100), (9, 150, 33), (150, 9, 33), (48, 100, 40), (49, 100, 40), (100, 48, 40), (100, 49, 40),
        (64, 64, 8), (100, 90, 8), (37, 129, 300), (129, 37, 300), (200, 300, 260), (333, 211, 517), (257, 513, 129),
    };

    private static IEnumerable<TestCaseData> Cases()
    {
        int index = 0;
        foreach (var (m, n, k) in Shapes)
        {
            foreach (var (ta, tb) in Transposes)
            {
                // Cycle through the alpha/beta variants and row padding so every combination class is covered.
                var (alpha, beta) = (index % 4) switch { 0 => (1.0, 0.0), 1 => (0.5, 1.0), 2 => (-1.25, 0.75), _ => (2.0, 0.0) };
                int pad = index % 3 == 0 ? 0 : 1 + index % 5;
                index++;
                yield return new TestCaseData(ta, tb, m, n, k, pad, alpha, beta)
                    .SetName($"{m}x{n}x{k} tA={ta} tB={tb} pad={pad} alpha={alpha} beta={beta}");
            }
        }
    }

    [TestCaseSource(nameof(Cases))]
    public void Float_MatchesReference(bool ta, bool tb, int m, int n, int k, int pad, double alpha, double beta)
        => CompareWithReference<float>(ta, tb, m, n, k, pad, alpha, beta, seed: m * 7919 + n * 104729 + k);

    [TestCaseSource(nameof(Cases))]
    public void Double_MatchesReference(bool ta, bool tb, int m, int n, int k, int pad, double alpha, double beta)
        => CompareWithReference<double>(ta, tb, m, n, k, pad, alpha, beta, seed: m * 31 + n * 17 + k);

    [Test]
    public void BetaZero_IgnoresNaNInC([Values(false, true)] bool ta, [Values(false, true)] bool tb,
        [Values(1, 5, 64, 300)] int m)
    {
        const int n = 70, k = 45;
        var rnd = new Random(3);
        var (a, lda) = RandomOperand<float>(rnd, ta ? k : m, ta ? m : k, 0);
        var (b, ldb) = RandomOperand<float>(rnd, tb ? n : k, tb ? k : n, 0);
        var c = Enumerable.Repeat(float.NaN, m * n).ToArray();
        Gemm.Compute(ta, tb, m, n, k, 1f, a, lda, b, ldb, 0f, c, n);
        Assert.That(c.All(float.IsFinite), Is.True, "beta = 0 must not propagate NaN from the old C");
    }

    [Test]
    public void KZero_ScalesC([Values(0.0f, 2.0f)] float beta)
    {
        var c = new float[] { 1, 2, float.NaN, 4, 5, 6 };
        Gemm.Compute(false, false, 2, 3, 0, 1f, ReadOnlySpan<float>.Empty, 0, ReadOnlySpan<float>.Empty, 3, beta, c, 3);
        if (beta == 0) Assert.That(c, Is.All.EqualTo(0f));
        else Assert.That(c, Is.EqualTo(new float[] { 2, 4, float.NaN, 8, 10, 12 }));
    }

    [Test]
    public void EmptyShapes_DoNothing()
    {
        var c = new float[] { 7 };
        Gemm.Compute(false, false, 0, 5, 5, 1f, new float[25], 5, new float[25], 5, 0f, c, 5);
        Gemm.Compute(false, false, 5, 0, 5, 1f, new float[25], 5, new float[25], 5, 0f, c, 0);
        Assert.That(c[0], Is.EqualTo(7f));
    }

    [Test]
    public void TooShortOperands_Throw()
    {
        var a = new float[6]; var b = new float[6]; var c = new float[4];
        Assert.Throws<ArgumentException>(() => Gemm.Compute(false, false, 2, 2, 3, 1f, a.AsSpan(0, 5), 3, b, 2, 0f, c, 2));
        Assert.Throws<ArgumentException>(() => Gemm.Compute(false, false, 2, 2, 3, 1f, a, 3, b.AsSpan(0, 5), 2, 0f, c, 2));
        Assert.Throws<ArgumentException>(() => Gemm.Compute(false, false, 2, 2, 3, 1f, a, 3, b, 2, 0f, c.AsSpan(0, 3), 2));
        Assert.Throws<ArgumentOutOfRangeException>(() => Gemm.Compute(false, false, 2, 2, 3, 1f, a, 2, b, 2, 0f, c, 2));
        Assert.Throws<ArgumentOutOfRangeException>(() => Gemm.Compute(false, true, 2, 2, 3, 1f, a, 3, b, 2, 0f, c, 2));
        Assert.Throws<ArgumentOutOfRangeException>(() => Gemm.Compute(false, false, -1, 2, 3, 1f, a, 3, b, 2, 0f, c, 2));
    }

    [Test]
    public void OtherIeeeTypes_UseTheReference()
    {
        var a = new Half[] { (Half)1, (Half)2, (Half)3, (Half)4 };
        var b = new Half[] { (Half)1, (Half)0, (Half)0, (Half)1 };
        var c = new Half[4];
        Gemm.Compute(false, false, 2, 2, 2, (Half)1, a, 2, b, 2, (Half)0, c, 2);
        Assert.That(c, Is.EqualTo(a));
    }

    // ───────────── 16-bit B ─────────────

    private static IEnumerable<TestCaseData> WideCases()
    {
        (int, int, int)[] shapes = { (1, 1, 1), (3, 5, 7), (1, 300, 130), (5, 200, 64), (17, 100, 33), (100, 5, 70), (100, 40, 50), (150, 170, 190), (257, 65, 300) };
        int index = 0;
        foreach (bool bf16 in new[] { false, true })
        foreach (var (m, n, k) in shapes)
        foreach (var (ta, tb) in Transposes)
        {
            var (alpha, beta) = (index % 3) switch { 0 => (1.0, 0.0), 1 => (0.5, 1.0), _ => (-2.0, 0.25) };
            int pad = index % 2 == 0 ? 0 : 3;
            index++;
            yield return new TestCaseData(bf16, ta, tb, m, n, k, pad, alpha, beta)
                .SetName($"{(bf16 ? "bf16" : "f16")} {m}x{n}x{k} tA={ta} tB={tb} pad={pad} alpha={alpha} beta={beta}");
        }
    }

    [TestCaseSource(nameof(WideCases))]
    public void Wide16_MatchesWidenedReference_AndWidenedComputeBitForBit(bool bf16, bool ta, bool tb, int m, int n, int k, int pad, double alpha, double beta)
    {
        var rnd = new Random(m * 1000 + n * 10 + k);
        var (a, lda) = RandomOperand<float>(rnd, ta ? k : m, ta ? m : k, pad);
        int bRows = tb ? n : k, bCols = tb ? k : n, ldb = bCols + pad;
        var b16 = new ushort[(bRows - 1) * ldb + bCols];
        var b = new float[b16.Length];
        for (int i = 0; i < b16.Length; i++)
        {
            float x = (float)(rnd.NextDouble() * 4 - 2);
            b16[i] = bf16 ? (ushort)(BitConverter.SingleToUInt32Bits(x) >> 16) : BitConverter.HalfToUInt16Bits((Half)x);
            b[i] = bf16 ? BitConverter.UInt32BitsToSingle((uint)b16[i] << 16) : (float)BitConverter.UInt16BitsToHalf(b16[i]);
        }
        int ldc = n + pad;
        var c0 = RandomC<float>(rnd, m, ldc, beta);
        var wide = (float[])c0.Clone();
        Gemm.ComputeWide16(ta, tb, m, n, k, (float)alpha, a, lda, b16, ldb, bf16, (float)beta, wide, ldc);

        var viaCompute = (float[])c0.Clone();
        Gemm.Compute(ta, tb, m, n, k, (float)alpha, a, lda, b, ldb, (float)beta, viaCompute, ldc);
        Assert.That(wide, Is.EqualTo(viaCompute), "ComputeWide16 must equal widening B then Compute, bit for bit");

        AssertCloseToReference(ta, tb, m, n, k, alpha, beta, a, lda, b, ldb, c0, wide, ldc);
    }

    [Test]
    public void Wide16_WidensSpecialValuesExactly([Values(false, true)] bool bf16)
    {
        // All 65536 words as a 1×65536 B row, times A = [1]: C must equal the exact widened value of each word.
        var words = new ushort[65536];
        for (int i = 0; i < words.Length; i++) words[i] = (ushort)i;
        var c = new float[words.Length];
        Gemm.ComputeWide16(false, false, 1, words.Length, 1, 1f, new[] { 1f }, 1, words, words.Length, bf16, 0f, c, words.Length);
        for (int i = 0; i < words.Length; i++)
        {
            float expected = bf16 ? BitConverter.UInt32BitsToSingle((uint)i << 16) : (float)BitConverter.UInt16BitsToHalf((ushort)i);
            if (float.IsNaN(expected)) Assert.That(float.IsNaN(c[i]), Is.True, $"word 0x{i:X4}");
            else Assert.That(c[i], Is.EqualTo(expected), $"word 0x{i:X4}");
        }
    }

    // ───────────── determinism ─────────────

    private static IEnumerable<TestCaseData> DeterminismCases()
    {
        // One shape per path: packed (large), few rows / few columns streaming, few rows / few columns dot products.
        (int, int, int, bool, bool)[] shapes =
        {
            (301, 517, 700, false, false), (301, 517, 700, false, true), (300, 520, 700, true, false), (260, 1100, 300, true, true),
            (20, 3000, 900, false, false), (3000, 20, 900, true, true), (5, 3000, 900, false, true), (3000, 5, 900, false, false),
            (4096, 8, 300, false, true), (1, 4096, 700, false, true),
        };
        foreach (var (m, n, k, ta, tb) in shapes)
            yield return new TestCaseData(m, n, k, ta, tb).SetName($"{m}x{n}x{k} tA={ta} tB={tb}");
    }

    [TestCaseSource(nameof(DeterminismCases))]
    public void Result_IsBitIdentical_ForAnyThreadCount(int m, int n, int k, bool ta, bool tb)
    {
        var rnd = new Random(11);
        var (a, lda) = RandomOperand<float>(rnd, ta ? k : m, ta ? m : k, 0);
        var (b, ldb) = RandomOperand<float>(rnd, tb ? n : k, tb ? k : n, 0);
        var c0 = RandomC<float>(rnd, m, n, 0.5);
        var b16 = b.Select(x => (ushort)(BitConverter.SingleToUInt32Bits(x) >> 16)).ToArray();
        int saved = Gemm.MaxDegreeOfParallelism;
        try
        {
            float[]? first = null, firstWide = null;
            foreach (int threads in new[] { 1, 2, 3, 0, 2 })
            {
                Gemm.MaxDegreeOfParallelism = threads;
                var c = (float[])c0.Clone();
                Gemm.Compute(ta, tb, m, n, k, 0.75f, a, lda, b, ldb, 0.5f, c, n);
                var cw = (float[])c0.Clone();
                Gemm.ComputeWide16(ta, tb, m, n, k, 0.75f, a, lda, b16, ldb, true, 0.5f, cw, n);
                first ??= c;
                firstWide ??= cw;
                Assert.That(BitsEqual(c, first), Is.True, $"Compute differs with MaxDegreeOfParallelism = {threads}");
                Assert.That(BitsEqual(cw, firstWide), Is.True, $"ComputeWide16 differs with MaxDegreeOfParallelism = {threads}");
            }
        }
        finally
        {
            Gemm.MaxDegreeOfParallelism = saved;
        }
    }

    // ───────────── helpers ─────────────

    private static void CompareWithReference<T>(bool ta, bool tb, int m, int n, int k, int pad, double alpha, double beta, int seed)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        var rnd = new Random(seed);
        var (a, lda) = RandomOperand<T>(rnd, ta ? k : m, ta ? m : k, pad);
        var (b, ldb) = RandomOperand<T>(rnd, tb ? n : k, tb ? k : n, pad);
        int ldc = n + pad;
        var c0 = RandomC<T>(rnd, m, ldc, beta);
        var c = (T[])c0.Clone();
        Gemm.Compute(ta, tb, m, n, k, T.CreateChecked(alpha), a, lda, b, ldb, T.CreateChecked(beta), c, ldc);
        AssertCloseToReference(ta, tb, m, n, k, alpha, beta, a, lda, b, ldb, c0, c, ldc);
    }

    private static void AssertCloseToReference<T>(bool ta, bool tb, int m, int n, int k, double alpha, double beta,
        T[] a, int lda, T[] b, int ldb, T[] c0, T[] actual, int ldc)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        var expected = (T[])c0.Clone();
        Gemm.Reference(ta, tb, m, n, k, T.CreateChecked(alpha), a, lda, b, ldb, T.CreateChecked(beta), expected, ldc);
        var magnitude = new T[c0.Length];
        Gemm.Reference(ta, tb, m, n, k, T.One, a.Select(T.Abs).ToArray(), lda, b.Select(T.Abs).ToArray(), ldb, T.Zero, magnitude, ldc);
        double u = typeof(T) == typeof(float) ? Math.Pow(2, -24) : Math.Pow(2, -53);
        for (int i = 0; i < m; i++)
        {
            for (int j = 0; j < ldc; j++)
            {
                int idx = i * ldc + j;
                if (idx >= actual.Length) break;
                if (j >= n)
                {
                    Assert.That(actual[idx], Is.EqualTo(c0[idx]), $"padding C[{i},{j}] was written");
                    continue;
                }
                double got = double.CreateChecked(actual[idx]), want = double.CreateChecked(expected[idx]);
                double scale = Math.Abs(alpha) * double.CreateChecked(magnitude[idx])
                    + (beta == 0 ? 0 : Math.Abs(beta * double.CreateChecked(c0[idx])));
                double tolerance = 2 * (k + 2) * u * scale;
                Assert.That(Math.Abs(got - want), Is.LessThanOrEqualTo(tolerance),
                    $"C[{i},{j}]: got {got}, reference {want} (M={m} N={n} K={k} tA={ta} tB={tb})");
            }
        }
    }

    private static (T[] Data, int Ld) RandomOperand<T>(Random rnd, int rows, int cols, int pad)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int ld = cols + pad;
        var data = new T[Math.Max(0, (rows - 1) * ld + cols)];
        for (int i = 0; i < data.Length; i++)
            data[i] = i % ld < cols ? T.CreateChecked(rnd.NextDouble() * 2 - 1) : T.NaN; // NaN in the gaps: must never be read
        return (data, ld);
    }

    private static T[] RandomC<T>(Random rnd, int rows, int ldc, double beta) where T : unmanaged, IFloatingPointIeee754<T>
    {
        var c = new T[rows * ldc];
        for (int i = 0; i < c.Length; i++) c[i] = beta == 0 ? T.NaN : T.CreateChecked(rnd.NextDouble() * 2 - 1);
        return c;
    }

    private static bool BitsEqual(float[] x, float[] y)
    {
        if (x.Length != y.Length) return false;
        for (int i = 0; i < x.Length; i++)
            if (BitConverter.SingleToUInt32Bits(x[i]) != BitConverter.SingleToUInt32Bits(y[i])) return false;
        return true;
    }
}
