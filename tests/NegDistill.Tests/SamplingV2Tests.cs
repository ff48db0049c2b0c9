using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using NegDistill.Kernels;
using NegDistill.Ops;
using NegDistill.Runtime;

namespace NegDistill.Tests;

/// <summary>
/// Sampling version 2 (lane order, radix select) on ILGPU's CPU accelerator against the CPU twin, bit for
/// bit: the accelerator's exp and log are the host's, so tokens and log-probabilities must be identical,
/// at every group size, for V below, at and above the 1024 lanes, and on rows built to break a radix
/// select (ties, all-equal weights, one huge logit, −∞ and NaN logits, top-p exactly at a mass step).
/// Version 1 keeps its own twin (<see cref="SamplingV1"/>) and is checked against it the same way.
/// </summary>
[TestFixture]
public class SamplingV2Tests
{
    static (int[] Tokens, float[] LogProbs) Run(Action<IBackend, Tensor, Tensor, Tensor, Tensor, Tensor> sample, IBackend ops, float[] logits, int rows, int v)
    {
        using var z = ops.Alloc("z", DType.F32, rows, v); using var tok = ops.Alloc("tok", DType.I32, rows); using var lp = ops.Alloc("lp", DType.F32, rows);
        using var sd = ops.Alloc("seed", DType.I32, rows, 2); using var ct = ops.Alloc("ctr", DType.I32, rows);
        ops.Upload(z, logits);
        var seeds = Enumerable.Range(0, rows).Select(i => Sampling.SampleSeed(7, i, i % 3)).ToArray();
        ops.Upload(sd, seeds.SelectMany(s => new[] { (int)(uint)s, (int)(uint)(s >> 32) }).ToArray());
        ops.Upload(ct, Enumerable.Range(0, rows).Select(i => 5 * i + 1).ToArray());
        ops.Upload(tok, Enumerable.Repeat(-7, rows).ToArray());
        sample(ops, z, tok, lp, sd, ct);
        var t = new int[rows]; ops.Download(tok, t);
        return (t, TestUtil.Get(ops, lp));
    }

    static (int[], float[]) Twin(float[] logits, int rows, int v, float temperature, int topK, float topP) =>
        Run((o, z, t, l, s, c) => o.SampleRows(z, t, l, s, c, rows, v, temperature, topK, topP), new CpuBackend(), logits, rows, v);

    static (int[], float[]) Kernel(float[] logits, int rows, int v, float temperature, int topK, float topP, int group, int nudge = 0) =>
        Run((o, z, t, l, s, c) => ((IlgpuBackend)o).SampleRowsV2(z, t, l, s, c, rows, v, temperature, topK, topP, group, nudge), TestUtil.Ilgpu, logits, rows, v);

    static (int[], float[]) Split(float[] logits, int rows, int v, int group, int split) =>
        Run((o, z, t, l, s, c) => ((IlgpuBackend)o).SampleRowsV2(z, t, l, s, c, rows, v, 0f, 0, 1f, group, 0, split), TestUtil.Ilgpu, logits, rows, v);

    static void Same((int[] T, float[] L) twin, (int[] T, float[] L) kernel, string what)
    {
        Assert.That(kernel.T, Is.EqualTo(twin.T), $"{what}: tokens");
        for (int r = 0; r < twin.L.Length; r++)
            if (!(float.IsNaN(twin.L[r]) && float.IsNaN(kernel.L[r])))
                Assert.That(BitConverter.SingleToInt32Bits(kernel.L[r]), Is.EqualTo(BitConverter.SingleToInt32Bits(twin.L[r])), $"{what}: row {r} log-probability {kernel.L[r]} vs {twin.L[r]}");
    }

    static readonly (float T, int K, float P)[] Modes = [(0f, 0, 1f), (1f, 0, 1f), (0.7f, 0, 0.95f), (0.8f, 20, 1f), (0.7f, 40, 0.95f), (1.3f, 5, 0.5f)];

    /// <summary>Every mode at group sizes 4, 8 and 16 (the accelerator's largest), V not a multiple of
    /// the 1024 lanes, below it, at it and across several lanes per thread; and the draws are not
    /// degenerate (several distinct tokens where the row allows).</summary>
    [Test]
    public void V2_KernelEqualsTwin_AcrossGroupSizesAndShapes([Values(4, 8, 16)] int group, [Values(7, 300, 1024, 1025, 3001)] int v)
    {
        int rows = 12;
        var z = TestUtil.Rand(rows * v, (ulong)v * 31 + 1, 4f);
        foreach (var (t, k, p) in Modes)
        {
            var twin = Twin(z, rows, v, t, k, p);
            Same(twin, Kernel(z, rows, v, t, k, p, group), $"G {group}, V {v}, T {t}, k {k}, p {p}");
            Assert.That(twin.Item1, Has.All.InRange(0, v - 1));
            if (t > 0f && k != 5 && v > 100) Assert.That(twin.Item1.Distinct().Count(), Is.GreaterThan(3), "draws vary");
        }
    }

    /// <summary>Rows built against a radix select: all-equal weights, long runs of ties at the threshold,
    /// one huge logit (every other weight underflows to 0), −∞ logits, a NaN logit, k = 1 and k = V − 1,
    /// and top-p set to land exactly on (and one float either side of) a step of the fixed-order mass.
    /// Each also with top-p's radix candidate nudged away, so the checked bisection fallback must give
    /// the same τ; the twin's bisection is the definition.</summary>
    [Test]
    public void V2_AdversarialRows_KernelEqualsTwin([Values(0, 1, -1, 3, -1000, 1 << 30, -(1 << 30))] int nudge)
    {
        int v = 1500, rows = 8, group = 16;
        var z = new float[rows * v];
        var rnd = TestUtil.Rand(rows * v, 99, 1f);
        for (int j = 0; j < v; j++)
        {
            z[0 * v + j] = 0f;                                                  // all equal
            z[1 * v + j] = MathF.Floor(3 * rnd[v + j]);                         // four values, long tie runs
            z[2 * v + j] = 4 * rnd[2 * v + j];
            z[3 * v + j] = j % 3 == 0 ? float.NegativeInfinity : 2 * rnd[3 * v + j];
            z[4 * v + j] = j % 7 == 0 ? 1.5f : j % 7 == 1 ? 0.5f : -0.5f;      // three tied levels
            z[5 * v + j] = 4 * rnd[5 * v + j];
            z[6 * v + j] = j < v - 1 ? float.NegativeInfinity : 0f;             // one finite logit, at the end
            z[7 * v + j] = 3 * rnd[7 * v + j];
        }
        z[2 * v + 777] = 1e30f;                                                 // a single huge logit
        z[5 * v + 3] = float.NaN;                                               // one NaN: no token can have a finite log-probability
        var cases = new List<(float T, int K, float P)>
        {
            (1f, 1, 1f), (1f, v - 1, 1f), (0.9f, 1, 0.5f), (0.9f, v - 1, 0.9f), (1f, 0, 0.5f), (1f, 214, 1f), (1f, 215, 0.3f), (0.5f, 0, 0.999f), (1f, 0, 1e-6f),
        };
        // top-p on a step of row 4's mass: masses of the top level (v/7 weights of 1) over the whole row
        float[] w4 = z.AsSpan(4 * v, v).ToArray().Select(x => MathF.Exp(x - 1.5f)).ToArray();
        double total = Sampling.Mass<float>(w4, 0f);
        foreach (float c in w4.Distinct())
        {
            float p = (float)(Sampling.Mass<float>(w4, c) / total);
            foreach (float q in new[] { p, MathF.BitDecrement(p), MathF.BitIncrement(p) })
                if (q > 0f && q < 1f) cases.Add((1f, 0, q));
        }
        foreach (var (t, k, p) in cases)
            Same(Twin(z, rows, v, t, k, p), Kernel(z, rows, v, t, k, p, group, nudge), $"nudge {nudge}, T {t}, k {k}, p {p}");
    }

    /// <summary>The twin keeps what the threshold's definition says on the built rows (so the equality
    /// above is not between two wrong answers): all-equal weights keep every token under any k or p, and
    /// the huge logit's row draws only it; the −∞ row with one finite logit draws that one.</summary>
    [Test]
    public void V2_Twin_DegenerateRowsDrawTheObviousToken()
    {
        int v = 1500;
        var flat = new float[v];
        Assert.That(Sampling.Threshold<float>(flat.Select(_ => 1f).ToArray(), 1, 0.01f), Is.EqualTo(1f), "ties at the threshold: all kept");
        var huge = TestUtil.Rand(v, 5, 1f); huge[777] = 1e30f;
        var one = Enumerable.Repeat(float.NegativeInfinity, v).ToArray(); one[v - 1] = 0f;
        foreach (var (t, k, p) in new[] { (1f, 0, 1f), (1f, 3, 0.5f), (0.7f, 0, 0.95f) })
        {
            Assert.That(Twin(huge, 1, v, t, k, p).Item1[0], Is.EqualTo(777));
            Assert.That(Twin(one, 1, v, t, k, p).Item1[0], Is.EqualTo(v - 1));
        }
    }

    /// <summary>Greedy rows split over 2 to 1024 groups each (three launches) give the twin's tokens and
    /// log-probabilities bit for bit: random rows, a tie for the maximum across parts (the lowest index
    /// wins), −∞ logits, a NaN among finite logits, and a row of NaN (token −1).</summary>
    [Test]
    public void V2_GreedySplitAcrossGroups_EqualsTwin([Values(2, 16, 1024)] int split, [Values(7, 1025, 3001)] int v)
    {
        int rows = 5;
        var z = TestUtil.Rand(rows * v, (ulong)v + 11, 4f);
        z[1 * v + v - 1] = z[1 * v + v / 2] = z[1 * v + 3] = 9f;                // a three-way tie: index 3 wins
        for (int j = 0; j < v; j += 2) z[2 * v + j] = float.NegativeInfinity;
        z[3 * v + v / 3] = float.NaN;
        for (int j = 0; j < v; j++) z[4 * v + j] = float.NaN;
        var twin = Twin(z, rows, v, 0f, 0, 1f);
        Assert.That(twin.Item1[1], Is.EqualTo(3));
        Assert.That(twin.Item1[4], Is.EqualTo(-1));
        foreach (int group in new[] { 4, 16 })
            Same(twin, Split(z, rows, v, group, split), $"split {split}, G {group}");
    }

    /// <summary>Groups of 256 threads, as on CUDA (one bin chunk of 4 per thread, an 8-step suffix scan,
    /// 32 of the 256 threads folding), on a CPU accelerator of its own with 8 warps of 32 threads: the
    /// same bits as the twin for every mode, and for greedy rows split over 16 groups of 64.</summary>
    [Test]
    public void V2_GroupsOf256_EqualTwin()
    {
        int rows = 3, v = 2100;
        var z = TestUtil.Rand(rows * v, 77, 4f);
        for (int j = 0; j < v; j += 5) z[2 * v + j] = 1f;                        // ties in row 2
        using var ctx = Context.Create(b => KernelCatalog.Configure(b.CPU(new CPUDevice(32, 8, 1))));
        using var acc = ctx.GetCPUDevice(0).CreateAccelerator(ctx);
        var launcher = new SamplingKernels.LauncherV2(acc, 256);
        using var dz = acc.Allocate1D(z);
        var seeds = Enumerable.Range(0, rows).Select(i => Sampling.SampleSeed(7, i, i % 3)).ToArray();
        using var dsd = acc.Allocate1D(seeds.SelectMany(x => new[] { (int)(uint)x, (int)(uint)(x >> 32) }).ToArray());
        using var dct = acc.Allocate1D(Enumerable.Range(0, rows).Select(i => 5 * i + 1).ToArray());
        using var dtok = acc.Allocate1D<int>(rows); using var dlp = acc.Allocate1D<float>(rows);
        foreach (var (t, k, p) in Modes)
            foreach (int split in t > 0f ? new[] { 1 } : new[] { 1, 16 })
            {
                launcher.Sample(dz.View, dtok.View, dlp.View, dsd.View, dct.View, rows, v, t, k, p, 0, split);
                acc.Synchronize();
                Same(Twin(z, rows, v, t, k, p), (dtok.GetAsArray1D(), dlp.GetAsArray1D()), $"G 256, T {t}, k {k}, p {p}, split {split}");
            }
    }

    /// <summary>Version 1's kernel against version 1's twin (the contiguous-block order), as gpu-check
    /// compares them. Below 1024 entries both orders scan in index order; above, the lane order draws
    /// other tokens, so version 1 no longer matches the version-2 twin there.</summary>
    [TestCase(0f, 0, 1f, 300)]
    [TestCase(1f, 0, 1f, 3000)]
    [TestCase(0.7f, 40, 0.95f, 1000)]
    [TestCase(1.2f, 0, 0.9f, 2500)]
    public void V1_KernelEqualsItsTwin(float temperature, int topK, float topP, int v)
    {
        int rows = 24;
        var z = TestUtil.Rand(rows * v, 3, 4f);
        var twin = Run((o, zz, t, l, s, c) => ((CpuBackend)o).SampleRowsV1(zz, t, l, s, c, rows, v, temperature, topK, topP), new CpuBackend(), z, rows, v);
        var kernel = Run((o, zz, t, l, s, c) => ((IlgpuBackend)o).SampleRowsV1(zz, t, l, s, c, rows, v, temperature, topK, topP), TestUtil.Ilgpu, z, rows, v);
        Same(twin, kernel, "v1");
        if (temperature > 0f && v > Sampling.Lanes)
            Assert.That(twin.Item1, Is.Not.EqualTo(Twin(z, rows, v, temperature, topK, topP).Item1), "the two orders draw differently somewhere");
    }
}
