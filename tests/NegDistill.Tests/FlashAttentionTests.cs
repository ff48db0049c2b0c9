using ILGPU;
using ILGPU.Runtime;
using NegDistill.Kernels;

namespace NegDistill.Tests;

/// <summary>
/// Attention kernels version 2 (flash: online softmax over key blocks, only log-sum-exp kept) against
/// version 1 (per-row kernels that keep the (B,H,T,T) probabilities) on ILGPU's CPU accelerator, same
/// inputs: out, every gradient, and lse against a host log-sum-exp; left-padded rows, a row that sees no
/// key, T across block boundaries, head dimensions that do not split evenly over a row's threads.
/// Tolerance as the kernel-parity tests: fp32 both sides, different summation orders, 1e-5 + 1e-4 relative.
/// </summary>
[TestFixture]
public class FlashAttentionTests
{
    [Test]
    public void Version2_EqualsVersion1([Values(1, 5, 19, 40)] int T, [Values(4, 8, 20)] int hd)
    {
        var acc = TestUtil.Ilgpu.Accelerator;
        int B = 2, H = 2, C = H * hd, n = B * T * C;
        var l = new AttentionKernels.Launcher(acc, Math.Min(16, acc.MaxNumThreadsPerGroup));
        var q = TestUtil.Rand(n, 1); var k = TestUtil.Rand(n, 2); var v = TestUtil.Rand(n, 3); var dout = TestUtil.Rand(n, 4);
        // row 1 is left-padded by 2 (its first two queries see no key), row 0 sees everything
        var mask = Enumerable.Range(0, B * T).Select(i => i >= T && i < T + Math.Min(2, T) ? 0f : 1f).ToArray();
        using var bq = acc.Allocate1D(q); using var bk = acc.Allocate1D(k); using var bv = acc.Allocate1D(v); using var bm = acc.Allocate1D(mask);
        using var bdo = acc.Allocate1D(dout);
        using var out1 = acc.Allocate1D<float>(n); using var att = acc.Allocate1D<float>((long)B * H * T * T); using var datt = acc.Allocate1D<float>((long)B * H * T * T);
        using var out2 = acc.Allocate1D<float>(n); using var lse = acc.Allocate1D<float>(B * H * T); using var dsum = acc.Allocate1D<float>(B * H * T);
        var g1 = new[] { acc.Allocate1D<float>(n), acc.Allocate1D<float>(n), acc.Allocate1D<float>(n) };
        var g2 = new[] { acc.Allocate1D<float>(n), acc.Allocate1D<float>(n), acc.Allocate1D<float>(n) };
        try
        {
            var start = TestUtil.Rand(n, 5);   // gradients accumulate: start both from the same values
            foreach (var x in g1.Concat(g2)) x.CopyFromCPU(start);
            l.Forward(out1.View, att.View, bq.View, bk.View, bv.View, bm.View, B, T, H, hd);
            l.Backward(g1[0].View, g1[1].View, g1[2].View, datt.View, bdo.View, att.View, bq.View, bk.View, bv.View, B, T, H, hd);
            l.FlashForward(out2.View, lse.View, bq.View, bk.View, bv.View, bm.View, B, T, H, hd);
            l.FlashBackward(g2[0].View, g2[1].View, g2[2].View, dsum.View, bdo.View, out2.View, lse.View, bq.View, bk.View, bv.View, bm.View, B, T, H, hd);
            acc.Synchronize();
            TestUtil.Close(out2.GetAsArray1D(), out1.GetAsArray1D(), 1e-5f, 1e-4f, "out");
            string[] names = ["dq", "dk", "dv"];
            for (int i = 0; i < 3; i++) TestUtil.Close(g2[i].GetAsArray1D(), g1[i].GetAsArray1D(), 1e-5f, 1e-4f, names[i]);
            // lse from the host, in double
            var got = lse.GetAsArray1D();
            double scale = 1 / Math.Sqrt(hd);
            for (int b = 0; b < B; b++)
                for (int h = 0; h < H; h++)
                    for (int t = 0; t < T; t++)
                    {
                        var s = Enumerable.Range(0, t + 1).Where(j => mask[b * T + j] != 0f)
                            .Select(j => scale * Enumerable.Range(0, hd).Sum(d => (double)q[(b * T + t) * C + h * hd + d] * k[(b * T + j) * C + h * hd + d])).ToList();
                        float g = got[(b * H + h) * T + t];
                        if (s.Count == 0) { Assert.That(float.IsNegativeInfinity(g), Is.True, $"lse of a row that sees no key (b {b}, t {t})"); continue; }
                        double m = s.Max(), want = m + Math.Log(s.Sum(x => Math.Exp(x - m)));
                        Assert.That(g, Is.EqualTo(want).Within(1e-5 + 1e-5 * Math.Abs(want)), $"lse b {b} h {h} t {t}");
                    }
        }
        finally { foreach (var x in g1.Concat(g2)) x.Dispose(); }
    }

    [Test]
    public void HeadDimensionAboveTheTiles_IsRefusedByName()
    {
        var acc = TestUtil.Ilgpu.Accelerator;
        var l = new AttentionKernels.Launcher(acc, 16);
        using var x = acc.Allocate1D<float>(256);
        var ex = Assert.Throws<ArgumentException>(() => l.FlashForward(x.View, x.View, x.View, x.View, x.View, x.View, 1, 1, 1, 256));
        Assert.That(ex!.Message, Does.Contain("head dimension 256"));
    }
}
