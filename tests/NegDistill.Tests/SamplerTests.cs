using NegDistill.Infer;
using NegDistill.Model;
using NegDistill.Ops;
using NegDistill.Runtime;

namespace NegDistill.Tests;

/// <summary>
/// KV-cache inference and the batched sampler: the cache ops and the sampling kernel against their
/// CPU twins, KV-cache decoding against the full forward, the sampler against the greedy reference,
/// the sampling distribution (top-p set, χ²), and continuous batching against one-at-a-time decoding.
/// </summary>
[TestFixture]
public class SamplerTests
{
    // ------------------------------------------------------------------ ops: kernels vs twin

    static (Dictionary<string, float[]> F, Dictionary<string, int[]> I)[] OnBoth(
        Dictionary<string, (DType dt, int[] shape, float[]? data, int[]? ints)> inputs, Action<IBackend, Dictionary<string, Tensor>> op, params string[] outputs)
        => TestUtil.OnBoth(inputs, op, outputs);

    static (DType, int[], float[]?, int[]?) F(ulong seed, float scale, params int[] shape) =>
        (DType.F32, shape, TestUtil.Rand(shape.Aggregate(1, (a, b) => a * b), seed, scale), null);
    static (DType, int[], float[]?, int[]?) Z(params int[] shape) => (DType.F32, shape, null, null);
    static (DType, int[], float[]?, int[]?) I(int[] v, params int[] shape) => (DType.I32, shape.Length > 0 ? shape : [v.Length], null, v);
    static (DType, int[], float[]?, int[]?) IZ(params int[] shape) => (DType.I32, shape, null, null);

    /// <summary>Cache write, cached attention (prefill rows of one slot next to decode rows of others,
    /// positions 0 to Tmax − 1) and row gather: kernels vs twin. Tolerance as KernelParityTests: fp32 on
    /// both sides, tree vs sequential max/Σexp, different exp; 1e-5 absolute + 1e-4 relative. A 16-bit
    /// cache takes the kernels' version 2 (flash decoding) and the twin's widening path; both narrow the
    /// written values the same way (round to nearest even), so the caches are equal bit for bit. With a
    /// shared prefix, the decode rows of slots 0 and 2 read their first positions from a prompt region
    /// after the slots.</summary>
    [Test]
    public void Sampler_CacheOps_KernelsMatchCpuTwin([Values(1, 7, 40)] int tmax, [Values(DType.F32, DType.BF16, DType.F16)] DType cache, [Values] bool sharedPrefix)
    {
        int S = 3, H = 2, hd = 4, C = H * hd, pool = S * tmax + tmax;
        // slot 1 gets a prefill chunk at positions 0..k−1, slots 0 and 2 one decode row each
        int k = Math.Min(5, tmax);
        var slot = new List<int> { 0 }; var pos = new List<int> { tmax - 1 };
        for (int p = 0; p < k; p++) { slot.Add(1); pos.Add(p); }
        slot.Add(2); pos.Add(tmax / 2);
        int R = slot.Count;
        int[] rows = [R - 1, 0, 2];
        var map = Enumerable.Range(0, R).SelectMany(i => sharedPrefix && slot[i] != 1
            ? new[] { S * tmax, Math.Min(3, pos[i]), slot[i] * tmax } : new[] { 0, 0, slot[i] * tmax }).ToArray();
        var res = OnBoth(new()
        {
            ["kc"] = F(1, 1, pool, C) with { Item1 = cache }, ["vc"] = F(2, 1, pool, C) with { Item1 = cache }, ["k"] = F(3, 1, R, C), ["v"] = F(4, 1, R, C), ["q"] = F(5, 2, R, C),
            ["map"] = I(map, R, 3), ["pos"] = I([.. pos]), ["out"] = Z(R, C), ["rows"] = I(rows), ["sel"] = Z(rows.Length, C),
        }, (ops, t) =>
        {
            ops.CacheWrite(t["kc"], t["vc"], t["k"], t["v"], t["map"], t["pos"], R, C);
            ops.CachedAttention(t["out"], t["q"], t["kc"], t["vc"], t["map"], t["pos"], R, tmax, H, hd);
            ops.GatherRows(t["sel"], t["out"], t["rows"], rows.Length, C);
        }, "kc", "vc", "out", "sel");
        foreach (var o in new[] { "kc", "vc", "out", "sel" }) TestUtil.Close(res[0].F[o], res[1].F[o], 1e-5f, 1e-4f, o);
        Assert.That(res[0].F["kc"], Is.EqualTo(res[1].F["kc"]), "the cache write is a copy");
        Assert.That(res[0].F["vc"], Is.EqualTo(res[1].F["vc"]), "the cache write is a copy");
    }

    /// <summary>The twin's cached attention over a BF16 or F16 cache equals, bit for bit, its attention over
    /// an F32 cache that holds the same values rounded to 16 bits: widening is exact and the arithmetic
    /// after it is the same. Also: the 16-bit cache's bytes are half the F32 cache's.</summary>
    [Test]
    public void Sampler_16BitCache_IsTheF32CacheOfRoundedValues([Values(DType.BF16, DType.F16)] DType cache, [Values(4, 20)] int hd)
    {
        var ops = new CpuBackend();
        bool bf16 = cache == DType.BF16;
        int T = 11, H = 2, C = H * hd, tmax = 16;
        var q = TestUtil.Rand(T * C, 1); var k = TestUtil.Rand(T * C, 2); var v = TestUtil.Rand(T * C, 3);
        float[] Round(float[] x) => x.Select(e => Checkpoints.HalfPrecision.Widen(Checkpoints.HalfPrecision.Narrow(e, bf16), bf16)).ToArray();
        float[] Run(DType dt, float[] kk, float[] vv, out long bytes)
        {
            using var tq = ops.Alloc("q", DType.F32, T, C); using var tk = ops.Alloc("k", DType.F32, T, C); using var tv = ops.Alloc("v", DType.F32, T, C);
            using var kc = ops.Alloc("kc", dt, 2, tmax, C); using var vc = ops.Alloc("vc", dt, 2, tmax, C);
            using var map = ops.Alloc("map", DType.I32, T, 3); using var pos = ops.Alloc("pos", DType.I32, T); using var o = ops.Alloc("o", DType.F32, T, C);
            ops.Upload(tq, q); ops.Upload(tk, kk); ops.Upload(tv, vv);
            ops.Upload(map, Enumerable.Range(0, T).SelectMany(i => new[] { 0, 0, i % 2 * tmax }).ToArray()); ops.Upload(pos, Enumerable.Range(0, T).Select(i => i / 2).ToArray());
            ops.CacheWrite(kc, vc, tk, tv, map, pos, T, C);
            ops.CachedAttention(o, tq, kc, vc, map, pos, T, tmax, H, hd);
            bytes = kc.Bytes + vc.Bytes;
            return TestUtil.Get(ops, o);
        }
        var half = Run(cache, k, v, out long b16);
        var full = Run(DType.F32, Round(k), Round(v), out long b32);
        Assert.That(half, Is.EqualTo(full));
        Assert.That(b16 * 2, Is.EqualTo(b32));
        // and the rounding is not a no-op: the unrounded F32 cache gives other bits
        Assert.That(Run(DType.F32, k, v, out _), Is.Not.EqualTo(half));
    }

    /// <summary>Cached attention over a slot's whole history equals the training attention (causal,
    /// no padding) row by row. Tolerance 1e-6 absolute + 1e-5 relative: the same arithmetic except the
    /// SIMD q·k dot products (hd terms), outputs O(1). hd 4, 20 and 48 take the 128-bit vectors, a vector
    /// body with a scalar tail, and whole 256/512-bit vectors.</summary>
    [Test]
    public void Sampler_CachedAttention_EqualsCausalAttention([Values(4, 20, 48)] int hd)
    {
        var ops = new CpuBackend();
        int T = 9, H = 3, C = H * hd, tmax = 12;
        var q = TestUtil.Rand(T * C, 1); var k = TestUtil.Rand(T * C, 2); var v = TestUtil.Rand(T * C, 3);
        using var tq = ops.Alloc("q", DType.F32, T, C); using var tk = ops.Alloc("k", DType.F32, T, C); using var tv = ops.Alloc("v", DType.F32, T, C);
        using var mask = ops.Alloc("mask", DType.F32, 1, T); using var lse = ops.Alloc("lse", DType.F32, 1, H, T); using var outp = ops.Alloc("out", DType.F32, T, C);
        ops.Upload(tq, q); ops.Upload(tk, k); ops.Upload(tv, v); ops.Fill(mask, 1f);
        ops.AttentionForward(outp, lse, tq, tk, tv, mask, 1, T, H, hd);
        using var kc = ops.Alloc("kc", DType.F32, 2, tmax, C); using var vc = ops.Alloc("vc", DType.F32, 2, tmax, C);
        using var map = ops.Alloc("map", DType.I32, T, 3); using var pos = ops.Alloc("pos", DType.I32, T); using var o2 = ops.Alloc("o2", DType.F32, T, C);
        ops.Upload(map, Enumerable.Range(0, T).SelectMany(_ => new[] { 0, 0, tmax }).ToArray()); ops.Upload(pos, Enumerable.Range(0, T).ToArray());
        ops.CacheWrite(kc, vc, tk, tv, map, pos, T, C);
        ops.CachedAttention(o2, tq, kc, vc, map, pos, T, tmax, H, hd);
        TestUtil.Close(TestUtil.Get(ops, outp), TestUtil.Get(ops, o2), 1e-6f, 1e-5f, "out");
    }

    /// <summary>A sequence whose first L positions lie in a shared prompt region (map (pb, L, ob)) attends
    /// bit for bit as the same sequence held whole in one slot, on the twin and on the kernels (versions 1
    /// and 2): only the address of a key changes, not the arithmetic. Prefill rows of the prompt itself
    /// (map (pb, Tp, 0)) and the sequence's rows after it share one call, as the sampler sends them.</summary>
    [Test]
    public void Sampler_SharedPrefix_EqualsTheWholeSequenceInOneSlot([Values] bool kernels, [Values(DType.F32, DType.BF16)] DType cache)
    {
        IBackend ops = kernels ? TestUtil.Ilgpu : new CpuBackend();
        int T = 70, L = 37, H = 2, hd = 20, C = H * hd, tmax = 80;   // keys on both sides of version 2's 64-key chunks
        var q = TestUtil.Rand(T * C, 1); var k = TestUtil.Rand(T * C, 2); var v = TestUtil.Rand(T * C, 3);
        float[] Run(int[] map, int pool)
        {
            using var tq = ops.Alloc("q", DType.F32, T, C); using var tk = ops.Alloc("k", DType.F32, T, C); using var tv = ops.Alloc("v", DType.F32, T, C);
            using var kc = ops.Alloc("kc", cache, pool, C); using var vc = ops.Alloc("vc", cache, pool, C);
            using var tm = ops.Alloc("map", DType.I32, T, 3); using var pos = ops.Alloc("pos", DType.I32, T); using var o = ops.Alloc("o", DType.F32, T, C);
            ops.Upload(tq, q); ops.Upload(tk, k); ops.Upload(tv, v); ops.Upload(tm, map); ops.Upload(pos, Enumerable.Range(0, T).ToArray());
            ops.CacheWrite(kc, vc, tk, tv, tm, pos, T, C);
            ops.CachedAttention(o, tq, kc, vc, tm, pos, T, tmax, H, hd);
            return TestUtil.Get(ops, o);
        }
        // whole: slot 1 of two plain slots; split: positions < L in a prompt region at row 2·tmax, the rest in slot 0
        var whole = Run(Enumerable.Range(0, T).SelectMany(_ => new[] { 0, 0, tmax }).ToArray(), 2 * tmax);
        var split = Run(Enumerable.Range(0, T).SelectMany(_ => new[] { 2 * tmax, L, 0 }).ToArray(), 3 * tmax);
        Assert.That(split, Is.EqualTo(whole));
        // the prompt's own rows can name the region with its capacity as L (map (pb, Tp, 0)): the same bits
        var asPrompt = Run(Enumerable.Range(0, T).SelectMany(j => j < L ? new[] { 2 * tmax, tmax, 0 } : new[] { 2 * tmax, L, 0 }).ToArray(), 3 * tmax);
        Assert.That(asPrompt, Is.EqualTo(whole));
    }

    static float[] RandomLogits(int rows, int v, ulong seed, float scale = 4f) => TestUtil.Rand(rows * v, seed, scale);

    static (int[] Tokens, float[] LogProbs) SampleOn(IBackend ops, float[] logits, int rows, int v, ulong[] seeds, int[] counters,
        float temperature, int topK, float topP)
    {
        using var z = ops.Alloc("z", DType.F32, rows, v); using var tok = ops.Alloc("tok", DType.I32, rows); using var lp = ops.Alloc("lp", DType.F32, rows);
        using var sd = ops.Alloc("seed", DType.I32, rows, 2); using var ct = ops.Alloc("ctr", DType.I32, rows);
        ops.Upload(z, logits);
        ops.Upload(sd, seeds.SelectMany(s => new[] { (int)(uint)s, (int)(uint)(s >> 32) }).ToArray());
        ops.Upload(ct, counters);
        ops.SampleRows(z, tok, lp, sd, ct, rows, v, temperature, topK, topP);
        var t = new int[rows]; ops.Download(tok, t);
        return (t, TestUtil.Get(ops, lp));
    }

    static double[] LogSoftmax(ReadOnlySpan<float> z)
    {
        double max = double.NegativeInfinity; foreach (float x in z) max = Math.Max(max, x);
        double s = 0; foreach (float x in z) s += Math.Exp(x - max);
        var r = new double[z.Length];
        for (int j = 0; j < z.Length; j++) r[j] = z[j] - max - Math.Log(s);
        return r;
    }

    /// <summary>The same seeds and counters give the same tokens on the twin and on the kernels, for
    /// every mode (greedy, plain, top-k, top-p, both) and for V below and above the 1024 lanes; the
    /// log-probabilities agree to fp32 rounding (1e-5) and equal log softmax(z)[token] at T = 1 computed
    /// here in double (1e-5: fp32 exp and log on |z| ≤ 4).</summary>
    [TestCase(0f, 0, 1f, 300)]
    [TestCase(1f, 0, 1f, 300)]
    [TestCase(0.8f, 20, 1f, 300)]
    [TestCase(1.2f, 0, 0.9f, 1000)]
    [TestCase(0.7f, 50, 0.95f, 1000)]
    [TestCase(1f, 3, 0.5f, 7)]
    [TestCase(1.2f, 0, 0.9f, 3000)]
    [TestCase(0.7f, 50, 0.95f, 3000)]
    public void Sampler_SampleRows_SameSeedSameSamplesOnTwinAndKernels(float temperature, int topK, float topP, int v)
    {
        int rows = 48;
        var z = RandomLogits(rows, v, 17);
        var seeds = Enumerable.Range(0, rows).Select(i => Sampling.SampleSeed(42, i / 4, i % 4)).ToArray();
        var counters = Enumerable.Range(0, rows).Select(i => i * 3).ToArray();
        var (tc, lc) = SampleOn(new CpuBackend(), z, rows, v, seeds, counters, temperature, topK, topP);
        var (tk, lk) = SampleOn(TestUtil.Ilgpu, z, rows, v, seeds, counters, temperature, topK, topP);
        Assert.That(tk, Is.EqualTo(tc), "tokens");
        TestUtil.Close(lc, lk, 1e-5f, 1e-5f, "logProbs");
        for (int r = 0; r < rows; r++)
        {
            var ls = LogSoftmax(z.AsSpan(r * v, v));
            Assert.That(lc[r], Is.EqualTo(ls[tc[r]]).Within(1e-5), $"row {r} log-probability");
            if (temperature <= 0f) Assert.That(tc[r], Is.EqualTo(Array.IndexOf(ls, ls.Max())), $"row {r} greedy");
        }
        if (temperature > 0f) Assert.That(tc.Distinct().Count(), Is.GreaterThan(v > 100 ? rows / 4 : 1), "sampling is not stuck on one token");
        // the fp64 oracle makes the same choices on these well-separated draws
        var (td, _) = SampleOn(new CpuBackend<double>(), z, rows, v, seeds, counters, temperature, topK, topP);
        Assert.That(td, Is.EqualTo(tc), "tokens of the fp64 twin");
    }

    /// <summary>Greedy takes the lowest index among equal maxima; a temperature of 1e-7 (every non-maximal
    /// weight underflows to exactly 0 since the logits differ by ≥ 1e-4) gives the greedy token.</summary>
    [Test]
    public void Sampler_TemperatureToZero_EqualsGreedy([Values] bool kernels)
    {
        IBackend ops = kernels ? TestUtil.Ilgpu : new CpuBackend();
        int rows = 32, v = 300;
        var z = new float[rows * v];
        for (int r = 0; r < rows; r++)
        {
            // a random permutation of distinct values spaced 1e-3 apart, so gaps are ≥ 1e-3
            var perm = Enumerable.Range(0, v).OrderBy(j => CounterRng.Hash((ulong)r, (ulong)j)).ToArray();
            for (int j = 0; j < v; j++) z[r * v + perm[j]] = j * 1e-3f;
        }
        z[5 * v + 7] = z[5 * v + 200] = 10f;                                 // a tie in row 5: index 7 wins
        var seeds = Enumerable.Range(0, rows).Select(i => (ulong)i * 7919).ToArray();
        var counters = new int[rows];
        var (greedy, _) = SampleOn(ops, z, rows, v, seeds, counters, 0f, 0, 1f);
        var (cold, _) = SampleOn(ops, z, rows, v, seeds, counters, 1e-7f, 0, 1f);
        for (int r = 0; r < rows; r++)
        {
            var row = z.AsSpan(r * v, v);
            int arg = 0; for (int j = 1; j < v; j++) if (row[j] > row[arg]) arg = j;
            Assert.That(greedy[r], Is.EqualTo(arg), $"row {r}");
        }
        Assert.That(greedy[5], Is.EqualTo(7));
        Assert.That(cold, Is.EqualTo(greedy));
    }

    static float[] LogitsOf(params double[] p) => p.Select(x => (float)Math.Log(x)).ToArray();

    static int[] Kept(float[] z, float temperature, int topK, float topP)
    {
        float max = z.Max();
        var w = z.Select(x => MathF.Exp((x - max) / temperature)).ToArray();
        float tau = Sampling.Threshold<float>(w, topK, topP);
        return Enumerable.Range(0, z.Length).Where(j => w[j] >= tau).ToArray();
    }

    /// <summary>Top-p keeps exactly the smallest set of highest-probability tokens whose probability
    /// reaches p, in any index order; top-k the k most probable; ties at the threshold are kept; and the
    /// sampler (twin and kernels) draws only kept tokens.</summary>
    [Test]
    public void Sampler_TopPAndTopK_KeepExactlyTheSmallestHighProbabilityPrefix()
    {
        var z = LogitsOf(0.05, 0.4, 0.1, 0.3, 0.15);
        Assert.That(Kept(z, 1f, 0, 0.35f), Is.EqualTo(new[] { 1 }));
        Assert.That(Kept(z, 1f, 0, 0.65f), Is.EqualTo(new[] { 1, 3 }));          // 0.4 + 0.3 = 0.7 ≥ 0.65 > 0.4
        Assert.That(Kept(z, 1f, 0, 0.8f), Is.EqualTo(new[] { 1, 3, 4 }));        // 0.85 ≥ 0.8 > 0.7
        Assert.That(Kept(z, 1f, 0, 0.9f), Is.EqualTo(new[] { 1, 2, 3, 4 }));     // 0.95
        Assert.That(Kept(z, 1f, 0, 0.99f), Is.EqualTo(new[] { 0, 1, 2, 3, 4 }));
        Assert.That(Kept(z, 1f, 0, 1f), Is.EqualTo(new[] { 0, 1, 2, 3, 4 }), "p = 1 is off");
        Assert.That(Kept(z, 1f, 2, 1f), Is.EqualTo(new[] { 1, 3 }));
        Assert.That(Kept(z, 1f, 3, 0.6f), Is.EqualTo(new[] { 1, 3 }), "top-p applies to the renormalised top-k: 0.7/0.85 ≥ 0.6 > 0.4/0.85");
        Assert.That(Kept(z, 1f, 3, 0.85f), Is.EqualTo(new[] { 1, 3, 4 }));
        // ties at the threshold are kept: weights 1, ½, ½, ½ (p = 0.4, 0.2, 0.2, 0.2)
        var tie = new[] { MathF.Log(2f), 0f, 0f, 0f };
        Assert.That(Kept(tie, 1f, 2, 1f), Is.EqualTo(new[] { 0, 1, 2, 3 }), "top-2 keeps all three tied runners-up");
        Assert.That(Kept(tie, 1f, 0, 0.5f), Is.EqualTo(new[] { 0, 1, 2, 3 }), "the prefix reaching 0.5 ends in a tie");
        Assert.That(Kept(tie, 1f, 0, 0.39f), Is.EqualTo(new[] { 0 }));

        // draws: only kept tokens, on both backends
        int rows = 64;
        var logits = Enumerable.Range(0, rows).SelectMany(_ => z).ToArray();
        var seeds = Enumerable.Repeat(99UL, rows).ToArray();
        var counters = Enumerable.Range(0, rows).ToArray();
        foreach (IBackend ops in new IBackend[] { new CpuBackend(), TestUtil.Ilgpu })
        {
            var (t, _) = SampleOn(ops, logits, rows, 5, seeds, counters, 1f, 0, 0.65f);
            Assert.That(t.Distinct().Order(), Is.EqualTo(new[] { 1, 3 }), ops.Name);
            var (t2, _) = SampleOn(ops, logits, rows, 5, seeds, counters, 1f, 3, 1f);
            Assert.That(t2.Distinct().Order(), Is.EqualTo(new[] { 1, 3, 4 }), ops.Name);
        }
    }

    /// <summary>Pearson's χ² of 20,000 draws (one seed, counters 0..19,999) against the intended
    /// distribution: softmax(z/T) over 5 tokens, and the same renormalised over the top-p set. The
    /// test fails when the p-value is below 0.001 (χ² above 18.467 for 4 degrees of freedom, 13.816
    /// for 2); with the fixed seed the statistic is a fixed number, so the test is deterministic.</summary>
    [TestCase(1f, 1f, new[] { 0, 1, 2, 3, 4 }, 18.467)]
    [TestCase(0.7f, 1f, new[] { 0, 1, 2, 3, 4 }, 18.467)]
    [TestCase(1f, 0.8f, new[] { 1, 3, 4 }, 13.816)]
    public void Sampler_ChiSquare_DrawsFollowTheDistribution(float temperature, float topP, int[] support, double critical)
    {
        var z = LogitsOf(0.05, 0.4, 0.1, 0.3, 0.15);
        int n = 20_000;
        var logits = Enumerable.Range(0, n).SelectMany(_ => z).ToArray();
        var (t, lp) = SampleOn(new CpuBackend(), logits, n, 5, Enumerable.Repeat(2024UL, n).ToArray(), Enumerable.Range(0, n).ToArray(), temperature, 0, topP);
        var w = z.Select(x => Math.Exp(x / temperature)).ToArray();
        double mass = support.Sum(j => w[j]);
        var counts = new int[5]; foreach (int x in t) counts[x]++;
        double chi2 = 0;
        for (int j = 0; j < 5; j++)
        {
            if (!support.Contains(j)) { Assert.That(counts[j], Is.Zero, $"token {j} is outside the kept set"); continue; }
            double e = n * w[j] / mass;
            chi2 += (counts[j] - e) * (counts[j] - e) / e;
        }
        Assert.That(chi2, Is.LessThan(critical), $"counts {string.Join(", ", counts)}");
        var ls = LogSoftmax(z);
        for (int i = 0; i < 50; i++) Assert.That(lp[i], Is.EqualTo(ls[t[i]]).Within(1e-6), "log-probability at T = 1");
    }

    // ------------------------------------------------------------------ model: KV cache vs full forward

    static LlamaModel TinyModel(IBackend ops, bool lora)
    {
        var m = new LlamaModel(ops, LlamaConfig.Tiny, DType.F32, seed: 3);
        if (lora)
        {
            var ads = m.AddLora(new LoraConfig { Targets = [Proj.q_proj, Proj.v_proj, Proj.down_proj] }, seed: 5);
            foreach (var a in ads) ops.Upload(a.B.W, TestUtil.Rand((int)a.B.Length, 11, 0.1f));   // non-zero B: the adapters change the logits
        }
        return m;
    }

    static int[] Tokens(int n, ulong seed, int vocab) => Enumerable.Range(0, n).Select(i => (int)(CounterRng.Hash(seed, (ulong)i) % (ulong)vocab)).ToArray();

    static float[] FullLogits(LlamaModel m, int[] seq)
    {
        int t = seq.Length;
        return m.Logits(new ModelBatch(1, t, seq, Enumerable.Repeat(-1, t).ToArray(), Enumerable.Repeat(1f, t).ToArray()));
    }

    /// <summary>
    /// Three prompts of different lengths are prefilled in one ForwardRows call (every row's logits
    /// requested) and then decoded together for 8 steps with one row per slot; at every step each
    /// slot's logits equal those of <see cref="LlamaModel.Logits"/> over the whole sequence so far
    /// (4 steps on the kernels, whose CPU accelerator is slow).
    /// Tolerance 1e-5 absolute + 1e-4 relative (logits are O(0.1–1)): fp32 throughout, but the
    /// matmuls see different row counts (the GEMM picks its path by shape) and, on the kernels, the
    /// attention's tree reductions run over different key ranges. Exact where nothing differs: on the
    /// CPU twin a slot's decode row alone gives bit for bit the logits it gets next to other slots'
    /// rows (rows are independent, and the GEMM keeps its path for ≤ 32 rows).
    /// </summary>
    [Test]
    public void Sampler_KvCacheDecoding_EqualsFullForwardAtEveryStep([Values] bool lora, [Values] bool kernels)
    {
        IBackend ops = kernels ? TestUtil.Ilgpu : new CpuBackend();
        using var m = TinyModel(ops, lora);
        int v = m.Config.Vocab;
        var seqs = new[] { Tokens(5, 1, v), Tokens(9, 2, v), Tokens(3, 3, v) }.Select(s => s.ToList()).ToArray();
        using var cache = new KvCache(m, slots: 3, maxSeq: 24, maxRows: 20);

        // prefill: all rows of all prompts in one call, slots interleaved in the row order 2, 0, 1
        var tok = new List<int>(); var slot = new List<int>(); var pos = new List<int>();
        foreach (int s in new[] { 2, 0, 1 })
            for (int p = 0; p < seqs[s].Count; p++) { tok.Add(seqs[s][p]); slot.Add(s); pos.Add(p); }
        var all = Enumerable.Range(0, tok.Count).ToArray();
        var logits = m.ForwardRows([.. tok], [.. slot], [.. pos], cache, all);
        var prefillFull = seqs.Select(s => FullLogits(m, [.. s])).ToArray();
        for (int i = 0; i < tok.Count; i++)
            TestUtil.Close(prefillFull[slot[i]].AsSpan(pos[i] * v, v), logits.AsSpan(i * v, v), 1e-5f, 1e-4f, $"prefill slot {slot[i]} pos {pos[i]}");
        for (int step = 0; step < (kernels ? 4 : 8); step++)
        {
            var next = Tokens(3, 100 + (ulong)step, v);
            var rows = new[] { 0, 1, 2 };
            var r = m.ForwardRows(next, rows, rows.Select(s => seqs[s].Count).ToArray(), cache, [0, 1, 2]);
            for (int s = 0; s < 3; s++)
            {
                seqs[s].Add(next[s]);
                var full = FullLogits(m, [.. seqs[s]]);
                TestUtil.Close(full.AsSpan((seqs[s].Count - 1) * v, v), r.AsSpan(s * v, v), 1e-5f, 1e-4f, $"step {step} slot {s}");
            }
        }
        if (kernels) return;
        // exact: the same decode row of slot 1 with the other slots' rows, then alone (it rewrites the
        // same cache position with the same k and v)
        var last = Tokens(3, 999, v);
        var at = seqs.Select(s => s.Count).ToArray();
        var together = m.ForwardRows(last, [0, 1, 2], at, cache, [0, 1, 2]);
        var alone = m.ForwardRows([last[1]], [1], [at[1]], cache, [0]);
        Assert.That(alone, Is.EqualTo(together.AsSpan(v, v).ToArray()));
    }

    // ------------------------------------------------------------------ sampler

    static List<int[]> Prompts(int vocab) => [Tokens(4, 21, vocab), Tokens(9, 22, vocab), Tokens(2, 23, vocab), Tokens(6, 24, vocab)];

    /// <summary>Greedy sampling (temperature 0) through the KV cache and continuous batching equals the
    /// full-recompute <see cref="GreedyDecoder"/>, with and without a LoRA, token for token.</summary>
    [Test]
    public void Sampler_Greedy_EqualsGreedyDecoder([Values] bool lora)
    {
        var ops = new CpuBackend();
        using var m = TinyModel(ops, lora);
        var prompts = Prompts(m.Config.Vocab);
        int eos = 7, maxNew = 16;
        var expected = GreedyDecoder.Generate(m, prompts, maxNew, eos);
        using var sampler = new Sampler(m, new SamplerSettings { Temperature = 0f, MaxNewTokens = maxNew, Eos = eos, Slots = 3, MaxSeq = 40 });
        var got = sampler.Run(prompts.Select((p, i) => new SampleRequest(i, p, 1)));
        Assert.That(got.Select(s => s.Tokens), Is.EqualTo(expected));
        foreach (var s in got)
        {
            Assert.That(s.StopReason, Is.EqualTo(s.Tokens.Length == maxNew ? StopReason.MaxNewTokens : StopReason.Eos));
            Assert.That(s.TokenCount, Is.EqualTo(s.Tokens.Length + (s.StopReason == StopReason.Eos ? 1 : 0)));
        }
    }

    static IReadOnlyList<Sample> RunSampler(LlamaModel m, int slots, int maxRows, out SamplerStats stats, int requests = 4, int n = 3, int maxNew = 14,
        DType cache = DType.F32, int sharedPrompts = 0)
    {
        var settings = new SamplerSettings
        {
            Temperature = 1f, TopK = 40, TopP = 0.95f, MaxNewTokens = maxNew, Eos = 5, Slots = slots, MaxSeq = 30, MaxRowsPerStep = maxRows, Seed = 77,
            Cache = cache, SharedPrompts = sharedPrompts, PromptPositions = 8,   // the longest prompt (9 tokens) less one
        };
        using var sampler = new Sampler(m, settings);
        var reqs = Prompts(m.Config.Vocab).Take(requests).Select((p, i) => new SampleRequest(100 + i, p, n));
        var r = sampler.Run(reqs);
        stats = sampler.Stats;
        return r;
    }

    /// <summary>
    /// Continuous batching gives exactly the candidates of one-at-a-time decoding with the same seeds:
    /// 4 requests × 3 samples (prompts of 2 to 9 tokens, EOS, a 14-token budget, so lengths differ) on
    /// S = 1, on S = 2, and on S = 3 with 4 rows per step (prompts prefilled in chunks across steps).
    /// Tokens and stop reasons must be equal; the summed log-probabilities are compared to 1e-5 (the
    /// row count of each forward differs between runs, and the GEMM's path depends on it).
    /// </summary>
    [Test]
    public void Sampler_ContinuousBatching_EqualsOneAtATime()
    {
        var ops = new CpuBackend();
        using var m = TinyModel(ops, lora: true);
        var one = RunSampler(m, 1, 0, out var s1);
        var two = RunSampler(m, 2, 0, out var s2);
        var chunked = RunSampler(m, 3, 4, out var s3);
        Assert.That(one.Count, Is.EqualTo(12));
        foreach (var other in new[] { two, chunked })
        {
            Assert.That(other.Select(x => (x.RequestId, x.Index)), Is.EqualTo(one.Select(x => (x.RequestId, x.Index))));
            for (int i = 0; i < one.Count; i++)
            {
                Assert.That(other[i].Tokens, Is.EqualTo(one[i].Tokens), $"sample {i}");
                Assert.That(other[i].StopReason, Is.EqualTo(one[i].StopReason), $"sample {i}");
                Assert.That(other[i].TokenCount, Is.EqualTo(one[i].TokenCount), $"sample {i}");
                Assert.That(other[i].LogProb, Is.EqualTo(one[i].LogProb).Within(1e-5), $"sample {i}");
            }
        }
        // the run is not degenerate: lengths differ, samples of one request differ, slots were shared
        Assert.That(one.Select(x => x.Tokens.Length).Distinct().Count(), Is.GreaterThan(1));
        Assert.That(one.Where(x => x.RequestId == 101).Select(x => string.Join(",", x.Tokens)).Distinct().Count(), Is.GreaterThan(1));
        Assert.That(one.Select(x => x.StopReason).Distinct().Count(), Is.GreaterThan(1), "both EOS and the budget end samples");
        Assert.That(s1.MeanRowsPerStep, Is.LessThan(s2.MeanRowsPerStep));
        Assert.That(s2.Steps, Is.LessThan(s1.Steps));
        Assert.That(s3.Rows, Is.EqualTo(s1.Rows), "every token is forwarded once, whatever the batching");
        Assert.That(s1.GeneratedTokens, Is.EqualTo(one.Sum(x => x.TokenCount)));
    }

    /// <summary>The sampler on the kernels (ILGPU CPU accelerator) draws the same candidates as on the
    /// CPU twin from the same seeds (log-probabilities to 1e-4: logits differ in the last bits).
    /// 2 requests × 2 samples of up to 8 tokens: ILGPU's CPU accelerator is slow. With a BF16 cache the
    /// kernels run flash decoding (KV-cache kernels version 2) and the twin its widening path.</summary>
    [Test]
    public void Sampler_OnKernels_EqualsCpuTwin([Values(DType.F32, DType.BF16)] DType cache)
    {
        var a = RunOn(new CpuBackend(), cache);
        var b = RunOn(TestUtil.Ilgpu, cache);
        Assert.That(b.Select(x => x.Tokens), Is.EqualTo(a.Select(x => x.Tokens)));
        for (int i = 0; i < a.Count; i++) Assert.That(b[i].LogProb, Is.EqualTo(a[i].LogProb).Within(1e-4));

        static IReadOnlyList<Sample> RunOn(IBackend ops, DType cache)
        {
            using var m = TinyModel(ops, lora: true);
            return RunSampler(m, 2, 0, out _, requests: 2, n: 2, maxNew: 8, cache: cache);
        }
    }

    /// <summary>
    /// Shared prompts: logits of two candidates that read one prefilled copy of their prompt (a prompt slot,
    /// each candidate feeding the prompt's last token itself) equal the logits of the same candidates each
    /// holding and prefilling the whole prompt, at every step. Bit for bit on the CPU twin (every call has at
    /// most 32 rows, where the GEMM keeps its path, and the attention's arithmetic does not depend on where a
    /// key lives); on the kernels within 1e-5 + 1e-4 relative (their GEMM tiles follow the row count).
    /// </summary>
    [Test]
    public void Sampler_SharedPrompt_LogitsEqualTheUnsharedPath([Values] bool kernels, [Values(DType.F32, DType.BF16)] DType cache)
    {
        IBackend ops = kernels ? TestUtil.Ilgpu : new CpuBackend();
        using var m = TinyModel(ops, lora: true);
        int v = m.Config.Vocab, L = 9;
        var prompt = Tokens(L, 31, v);
        var next = new[] { Tokens(4, 32, v), Tokens(4, 33, v) };               // each candidate's own continuation
        using var plain = new KvCache(m, slots: 2, maxSeq: 20, maxRows: 24, cache);
        using var sharedCache = new KvCache(m, new KvLayout(2, 8, PromptSlots: 1, PromptPositions: L - 1), 20, 24, cache);
        var a = new List<float[]>(); var b = new List<float[]>();
        // plain: both slots prefill the whole prompt; shared: the prompt less its last token once, in prompt slot id 2
        a.Add(m.ForwardRows([.. prompt, .. prompt], [.. Enumerable.Repeat(0, L), .. Enumerable.Repeat(1, L)],
            [.. Enumerable.Range(0, L), .. Enumerable.Range(0, L)], plain, [L - 1, 2 * L - 1]));
        b.Add(m.ForwardRows(prompt[..^1], [.. Enumerable.Repeat(2, L - 1)], [.. Enumerable.Range(0, L - 1)], sharedCache, []));
        Assert.That(b[0], Is.Empty, "no logit rows, no LM head");
        sharedCache.Link(0, 0, L - 1); sharedCache.Link(1, 0, L - 1);
        b[0] = m.ForwardRows([prompt[^1], prompt[^1]], [0, 1], [L - 1, L - 1], sharedCache, [0, 1]);
        for (int step = 0; step < 4; step++)
        {
            int[] toks = [next[0][step], next[1][step]], at = [L + step, L + step];
            a.Add(m.ForwardRows(toks, [0, 1], at, plain, [0, 1]));
            b.Add(m.ForwardRows(toks, [0, 1], at, sharedCache, [0, 1]));
        }
        for (int i = 0; i < a.Count; i++)
            if (kernels) TestUtil.Close(b[i], a[i], 1e-5f, 1e-4f, $"step {i}");
            else Assert.That(b[i], Is.EqualTo(a[i]), $"step {i}");
        Assert.That(sharedCache.Layout.Rows, Is.LessThan(plain.Layout.Rows));
        // a linked slot must not write into its shared prompt, and a prompt slot holds only its positions
        var ex = Assert.Throws<ArgumentException>(() => m.ForwardRows([1], [0], [3], sharedCache, [0]));
        Assert.That(ex!.Message, Does.Contain("row 0: position 3 of slot 0 lies in its shared prompt"));
        ex = Assert.Throws<ArgumentException>(() => m.ForwardRows([1], [2], [L - 1], sharedCache, [0]));
        Assert.That(ex!.Message, Does.Contain("outside prompt slot 0's 8"));
    }

    /// <summary>The sampler with shared prompts (2 prompt slots for 4 requests × 3 samples, so requests wait for
    /// one; 4 rows per step, so prompts prefill across steps) draws the candidates of the unshared sampler with
    /// the same seeds: tokens, stop reasons and lengths equal, log-probabilities to 1e-5 (the row count of each
    /// forward differs, and the GEMM's path with it). It forwards fewer prompt rows: each prompt but its last
    /// token once.</summary>
    [Test]
    public void Sampler_SharedPrompts_DrawTheUnsharedCandidates([Values(0, 4)] int maxRows)
    {
        var ops = new CpuBackend();
        using var m = TinyModel(ops, lora: true);
        var plain = RunSampler(m, 3, maxRows, out var s1);
        var shared = RunSampler(m, 3, maxRows, out var s2, sharedPrompts: 2);
        Assert.That(shared.Select(x => (x.RequestId, x.Index)), Is.EqualTo(plain.Select(x => (x.RequestId, x.Index))));
        for (int i = 0; i < plain.Count; i++)
        {
            Assert.That(shared[i].Tokens, Is.EqualTo(plain[i].Tokens), $"sample {i}");
            Assert.That((shared[i].StopReason, shared[i].TokenCount), Is.EqualTo((plain[i].StopReason, plain[i].TokenCount)), $"sample {i}");
            Assert.That(shared[i].LogProb, Is.EqualTo(plain[i].LogProb).Within(1e-5), $"sample {i}");
        }
        var prompts = Prompts(m.Config.Vocab);
        Assert.That(s1.PromptTokens, Is.EqualTo(3 * prompts.Sum(p => p.Length)));
        Assert.That(s2.PromptTokens, Is.EqualTo(prompts.Sum(p => p.Length - 1) + 3 * prompts.Count));
        Assert.That(s2.Rows, Is.LessThan(s1.Rows));
        Assert.That(s2.GeneratedTokens, Is.EqualTo(s1.GeneratedTokens));
    }

    /// <summary>On the kernels the shared-prompt sampler draws what it draws on the twin (BF16 cache: version 2).</summary>
    [Test]
    public void Sampler_SharedPrompts_OnKernels_EqualsCpuTwin()
    {
        var a = RunOn(new CpuBackend());
        var b = RunOn(TestUtil.Ilgpu);
        Assert.That(b.Select(x => x.Tokens), Is.EqualTo(a.Select(x => x.Tokens)));
        for (int i = 0; i < a.Count; i++) Assert.That(b[i].LogProb, Is.EqualTo(a[i].LogProb).Within(1e-4));

        static IReadOnlyList<Sample> RunOn(IBackend ops)
        {
            using var m = TinyModel(ops, lora: true);
            return RunSampler(m, 2, 0, out _, requests: 2, n: 2, maxNew: 8, cache: DType.BF16, sharedPrompts: 1);
        }
    }

    /// <summary>Decoding through a BF16 cache stays close to decoding through the F32 cache: the logits of
    /// every step of a greedy run (tiny model, outputs O(1)) within 0.05 absolute, what BF16's 2⁻⁸ relative
    /// rounding of K and V allows after a few layers; and the F32 cache's logits differ (the BF16 path is taken).</summary>
    [Test]
    public void Sampler_Bf16Cache_LogitsCloseToF32Cache()
    {
        var ops = new CpuBackend();
        using var m = TinyModel(ops, lora: false);
        int v = m.Config.Vocab;
        var prompt = Tokens(6, 5, v);
        float[] Steps(DType cache)
        {
            using var kv = new KvCache(m, slots: 1, maxSeq: 16, maxRows: 8, cache);
            var all = new List<float>();
            var logits = m.ForwardRows(prompt, new int[prompt.Length], Enumerable.Range(0, prompt.Length).ToArray(), kv, [prompt.Length - 1]);
            all.AddRange(logits);
            for (int p = prompt.Length; p < 12; p++)
            {
                logits = m.ForwardRows([3 + p], [0], [p], kv, [0]);
                all.AddRange(logits);
            }
            return [.. all];
        }
        var f32 = Steps(DType.F32); var bf = Steps(DType.BF16);
        TestUtil.Close(bf, f32, 5e-2f, 0f, "logits");
        Assert.That(bf, Is.Not.EqualTo(f32));
    }

    /// <summary>Stop strings end a sample once the decoded continuation contains them (tokens kept), and
    /// a slot whose cache is full stops with <see cref="StopReason.CacheFull"/>.</summary>
    [Test]
    public void Sampler_StopStringAndCacheFull()
    {
        var ops = new CpuBackend();
        using var m = TinyModel(ops, lora: false);
        static string Decode(IReadOnlyList<int> t) => new(t.Select(x => (char)('a' + x % 26)).ToArray());
        var prompt = Tokens(6, 5, m.Config.Vocab);
        using (var free = new Sampler(m, new SamplerSettings { MaxNewTokens = 20, Eos = -1, Slots = 2, MaxSeq = 40, Seed = 3 }))
        {
            var plain = free.Run([new SampleRequest(1, prompt, 4)]);
            // stop at the second character each sample produced, so every sample stops early
            var stops = plain.Select(s => Decode(s.Tokens)[1].ToString()).Distinct().ToArray();
            using var stopping = new Sampler(m, new SamplerSettings
            {
                MaxNewTokens = 20, Eos = -1, Slots = 2, MaxSeq = 40, Seed = 3, StopStrings = stops, Decode = Decode,
            });
            var cut = stopping.Run([new SampleRequest(1, prompt, 4)]);
            for (int i = 0; i < 4; i++)
            {
                Assert.That(cut[i].StopReason, Is.EqualTo(StopReason.StopString));
                string text = Decode(cut[i].Tokens);
                Assert.That(stops.Any(text.EndsWith), Is.True, text);
                Assert.That(stops.Any(s => text[..^1].Contains(s)), Is.False, "stops at the first occurrence");
                Assert.That(plain[i].Tokens.Take(cut[i].Tokens.Length), Is.EqualTo(cut[i].Tokens), "same stream until the stop");
            }
        }
        using var small = new Sampler(m, new SamplerSettings { MaxNewTokens = 20, Eos = -1, Slots = 1, MaxSeq = 10 });
        var full = small.Run([new SampleRequest(1, prompt, 1)]);
        Assert.That(full[0].StopReason, Is.EqualTo(StopReason.CacheFull));
        Assert.That(full[0].Tokens.Length, Is.EqualTo(4), "6 prompt + 4 generated fill the 10 positions");
    }

    [Test]
    public void InferenceTimings_GroupTheProfilersOps_OnlyWhileMeasuring()
    {
        var profiler = new ProfilingBackend(new CpuBackend()) { Enabled = false };
        using var m = new LlamaModel(profiler, LlamaConfig.Tiny, DType.F32, seed: 1);
        using var s = new Sampler(m, new SamplerSettings { Temperature = 1f, MaxNewTokens = 5, Slots = 2, MaxSeq = 16, Seed = 2 });
        void Run() => s.Run([new SampleRequest(0, [1, 2, 3], 2)]);
        Run();
        Assert.That(profiler.Report(), Is.Empty, "disabled: nothing timed");
        var t = InferenceTimings.Measure(profiler, Run);
        Assert.That(t.Matmul, Is.GreaterThan(TimeSpan.Zero));
        Assert.That(t.Attention, Is.GreaterThan(TimeSpan.Zero));
        Assert.That(t.Sampling, Is.GreaterThan(TimeSpan.Zero));
        Assert.That(t.Other, Is.GreaterThan(TimeSpan.Zero));
        var calls = profiler.Report().ToDictionary(r => r.Op, r => r.Calls);
        Assert.That(calls["SampleRows"], Is.EqualTo(5), "one sampling call per decode step of the 2 slots");
        Assert.That(profiler.Enabled, Is.False, "Measure restores the switch");
        Assert.That(InferenceTimings.PhaseOf("CachedAttention"), Is.EqualTo(InferencePhase.Attention));
    }
}
