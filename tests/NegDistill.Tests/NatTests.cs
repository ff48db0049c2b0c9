using NegDistill.Checkpoints;
using NegDistill.Model;
using NegDistill.Ops;
using NegDistill.Runtime;
using NegDistill.Train;

namespace NegDistill.Tests;

/// <summary>
/// NAT's dynamic integration unit (method.md Step 1.2): the GELU, the fused op against finite
/// differences in fp64 and against the ILGPU kernels, the whole <see cref="NatAdapter"/> against
/// finite differences, the model-level promises (starts as the base model exactly, α ∈ [−β, β],
/// NegOnly is base + LoRA_neg), training, and the PEFT round trip.
/// </summary>
[TestFixture]
public class NatTests
{
    // Central differences in fp64, as OpGradientTests: h = 1e-6 gives truncation O(h²·f''') ≈ 1e-12
    // and rounding O(ε·|L|/h) ≈ 1e-9 for |L| ≲ 10, so 1e-7 absolute + 1e-6 relative has headroom.
    const double H = 1e-6, Atol = 1e-7, Rtol = 1e-6;

    static double[] Fd(double[] x, Func<double> loss) => TestUtil.FiniteDiff(x, loss, H);

    static double Dot(double[] a, double[] b) => TestUtil.Dot(a, b);

    // ------------------------------------------------------------------ GELU

    [Test]
    public void Gelu_MatchesPublishedValues()
    {
        // Reference values from the C library's erf/erfc (CPython math.erf, math.erfc; < 1 ulp).
        // Cody's approximation is accurate to ~1e-16 relative in double, so 1e-14 relative; in the far
        // tail the reference's own argument rounding (x/√2 is rounded, and d ln erfc/dz = −2z) allows
        // ~2z²·2⁻⁵³ ≈ 1e-14 at x = −10, hence 5e-14 there.
        (double got, double want, double rtol, string what)[] cases =
        [
            (Gelu.Erf(0.5), 0.5204998778130465, 1e-14, "erf(0.5)"),
            (Gelu.Erf(1.0), 0.8427007929497149, 1e-14, "erf(1)"),
            (Gelu.Erf(2.0), 0.9953222650189527, 1e-14, "erf(2)"),
            (Gelu.Phi(-3.0 * Math.Sqrt(2.0)) * 2, 2.2090496998585438e-05, 1e-14, "erfc(3)"),
            (Gelu.Phi(-5.0), 2.866515718791946e-07, 1e-14, "Φ(−5)"),
            (Gelu.Phi(-10.0), 7.619853024160593e-24, 5e-14, "Φ(−10)"),
            (Gelu.Forward(1.0), 0.8413447460685429, 1e-14, "GELU(1)"),
            (Gelu.Forward(-1.0), -0.15865525393145707, 1e-14, "GELU(−1)"),
            (Gelu.Forward(0.3), 0.18537342665668577, 1e-14, "GELU(0.3)"),
        ];
        foreach (var (got, want, rtol, what) in cases)
            Assert.That(got, Is.EqualTo(want).Within(rtol * Math.Abs(want)), what);
        Assert.That(Gelu.Forward(0.0), Is.EqualTo(0.0));
    }

    [Test]
    public void Gelu_FloatMatchesDouble_AndGradIsTheDerivative()
    {
        // the float version (kernels + fp32 twin) is within a few float ulps of the double one;
        // the analytic derivative matches central differences of the double function, across the
        // approximation's breakpoints |x|/√2 = 0.46875 and 4 as well.
        for (double x = -12; x <= 12; x += 0.0123)
        {
            double phi = Gelu.Phi(x);
            float pf = Gelu.PhiF((float)x);
            double phiAtF = Gelu.Phi((double)(float)x);
            Assert.That(pf, Is.EqualTo(phiAtF).Within(2e-7 + 1e-5 * phiAtF), $"Φ_f({x})");
            Assert.That(Gelu.GradF((float)x), Is.EqualTo(Gelu.Grad((double)(float)x)).Within(4e-7), $"GELU'_f({x})");
            Assert.That(phi, Is.InRange(0.0, 1.0));
        }
        foreach (double x in new[] { -7.5, -5.66, -5.6569, -3, -0.663, -0.6629, -0.1, 0, 0.1, 0.6629, 0.663, 2, 5.6569, 5.66, 9 })
        {
            double fd = (Gelu.Forward(x + H) - Gelu.Forward(x - H)) / (2 * H);
            Assert.That(Gelu.Grad(x), Is.EqualTo(fd).Within(1e-8), $"GELU'({x})");
        }
    }

    // ------------------------------------------------------------------ the fused op

    [TestCase(0.5, 1.0)]
    [TestCase(0.3, 0.7)]
    public void IntegrationOp_BackwardMatchesFiniteDifferences_Fp64(double beta, double temperature)
    {
        int n = 3, d = 7;
        double invT = 1 / temperature;
        var q = TestUtil.RandD(n * d, 1); var kp = TestUtil.RandD(n * d, 2); var kn = TestUtil.RandD(n * d, 3);
        var up = TestUtil.RandD(n * d, 4, 3); var un = TestUtil.RandD(n * d, 5, 3);
        var r = TestUtil.RandD(n * d, 6);
        double L() { var m = new double[n * d]; var a = new double[n]; Integration.Forward<double>(m, a, q, kp, kn, up, un, n, d, beta, invT); return Dot(m, r); }
        var mix = new double[n * d]; var aNeg = new double[n];
        Integration.Forward<double>(mix, aNeg, q, kp, kn, up, un, n, d, beta, invT);
        var g = Enumerable.Range(0, 5).Select(_ => new double[n * d]).ToArray();
        Integration.Backward<double>(g[0], g[1], g[2], g[3], g[4], r, q, kp, kn, up, un, aNeg, n, d, beta, invT);
        TestUtil.Close(Fd(q, L), g[0], Atol, Rtol, "dq");
        TestUtil.Close(Fd(kp, L), g[1], Atol, Rtol, "dk_pos");
        TestUtil.Close(Fd(kn, L), g[2], Atol, Rtol, "dk_neg");
        TestUtil.Close(Fd(up, L), g[3], Atol, Rtol, "du_pos");
        TestUtil.Close(Fd(un, L), g[4], Atol, Rtol, "du_neg");
        // a_neg is the softmax weight of the negative score
        for (int i = 0; i < n; i++)
        {
            double sp = 0, sn = 0;
            for (int j = 0; j < d; j++) { sp += q[i * d + j] * kp[i * d + j]; sn += q[i * d + j] * kn[i * d + j]; }
            Assert.That(aNeg[i], Is.EqualTo(Math.Exp(sn * invT) / (Math.Exp(sp * invT) + Math.Exp(sn * invT))).Within(1e-15));
        }
    }

    /// <summary>A seed per tensor name, the same in every run.</summary>
    static ulong Seed(string s) => s.Aggregate(17UL, (h, c) => h * 31 + c);

    /// <summary>Runs forward + backward of the op on one backend with uploaded inputs; returns every output.</summary>
    static Dictionary<string, float[]> RunOp(IBackend ops, int n, int d, float beta, float invT, Func<string, float[]> data)
    {
        string[] names = ["q", "kp", "kn", "up", "un", "dmix", "dq", "dkp", "dkn", "dup", "dun"];
        var t = names.ToDictionary(s => s, s => { var x = ops.Alloc(s, DType.F32, n, d); ops.Upload(x, data(s)); return x; });
        t["mix"] = ops.Alloc("mix", DType.F32, n, d);
        t["a"] = ops.Alloc("a", DType.F32, n);
        ops.IntegrationForward(t["mix"], t["a"], t["q"], t["kp"], t["kn"], t["up"], t["un"], n, d, beta, invT);
        ops.IntegrationBackward(t["dq"], t["dkp"], t["dkn"], t["dup"], t["dun"], t["dmix"], t["q"], t["kp"], t["kn"], t["up"], t["un"], t["a"], n, d, beta, invT);
        ops.Synchronize();
        var r = new[] { "mix", "a", "dq", "dkp", "dkn", "dup", "dun" }.ToDictionary(s => s, s => TestUtil.Get(ops, t[s]));
        foreach (var x in t.Values) x.Dispose();
        return r;
    }

    [Test]
    public void IntegrationKernels_MatchCpuTwin([Values(5, 37, 128)] int d)
    {
        // Kernels on ILGPU's CPU accelerator vs the fp32 twin. Both fp32; they differ in summation
        // order (tree vs sequential over d ≤ 128) and exp implementation, so as KernelParityTests:
        // 1e-5 absolute + 1e-4 relative for O(1) values. u spans all three erf regions (|u|/√2 up to 5.7).
        int n = 6;
        float Scale(string s) => s switch { "q" or "kp" or "kn" => 0.5f, "up" => 8f, "un" => 2f, _ => 1f };
        float[] Data(string s) => TestUtil.Rand(n * d, Seed(s), Scale(s));
        var cache = new Dictionary<string, float[]>();
        float[] Cached(string s) => cache.TryGetValue(s, out var v) ? v : cache[s] = Data(s);
        var cpu = RunOp(new CpuBackend(), n, d, 0.5f, 1f, Cached);
        var ker = RunOp(TestUtil.Ilgpu, n, d, 0.5f, 1f, Cached);
        foreach (var (name, v) in cpu) TestUtil.Close(v, ker[name], 1e-5f, 1e-4f, name);
        Assert.That(cpu["a"].Distinct().Count(), Is.EqualTo(n), "every row has its own weight");
    }

    [Test]
    public void Alpha_StaysWithinBeta_ForAnyInput([Values] bool kernels, [Values(1f, 1e2f, 1e4f)] float scale)
    {
        // ±1e4 entries give scores ~1e9: exp saturates to 0 or ∞ and a_neg to exactly 0 or 1 — no NaN
        IBackend ops = kernels ? TestUtil.Ilgpu : new CpuBackend();
        int n = 64, d = 16;
        var r = RunOp(ops, n, d, 0.5f, 1f, s => TestUtil.Rand(n * d, Seed(s) + 7, s.StartsWith('d') ? 1f : scale));
        foreach (var a in r["a"])
        {
            Assert.That(a, Is.InRange(0f, 1f));
            Assert.That(2f * 0.5f * a - 0.5f, Is.InRange(-0.5f, 0.5f));
        }
        foreach (var (name, v) in r) Assert.That(v.All(float.IsFinite), Is.True, name);
        if (scale >= 1e4f) Assert.That(r["a"].All(a => a == 0f || a == 1f), Is.True, "saturated rows give α = ±β exactly");
    }

    // ------------------------------------------------------------------ the adapter

    [TestCase(false, 0.5f, 1f)]
    [TestCase(true, 0.3f, 0.7f)]
    public void Adapter_EveryGradientMatchesFiniteDifferences_Fp64(bool trainableW, float beta, float temperature)
    {
        // The adapter class on the fp64 CPU twin, with the model's part of a projection done here as
        // LlamaModel.Linear/LinearBackward do it (y = x·Wᵀ before, dx = dy·W and dW before the adapter).
        var ops = new CpuBackend<double>();
        int n = 4, inF = 6, outF = 7, d = 5;
        var negCfg = new LoraConfig { Rank = 3, Alpha = 6, Dropout = 0.3f };      // its dropout must be ignored
        var posCfg = new LoraConfig { Rank = 2, Alpha = 4, Dropout = 0.2f };
        using var w = new Param(ops, "w", DType.F32, trainableW, outF, inF);
        ops.Write(w.W, TestUtil.RandD(outF * inF, 40, 0.5));
        using var nat = new NatAdapter(ops, "m", w, negCfg, posCfg, seed: 1, id: 0, new NatOptions { UnitDim = d, Beta = beta, Temperature = temperature });
        ops.Write(nat.Neg.B.W, TestUtil.RandD(outF * 3, 41, 0.5));
        ops.Write(nat.Pos.B.W, TestUtil.RandD(outF * 2, 42, 0.5));
        ops.Write(nat.U2.W, TestUtil.RandD(outF * d, 43, 0.5));              // non-zero, so every path carries gradient
        var ctx = new PassContext { Training = true, StepSeed = 5 };
        using var x = ops.Alloc("x", DType.F32, n, inF); using var y = ops.Alloc("y", DType.F32, n, outF);
        using var dy = ops.Alloc("dy", DType.F32, n, outF); using var dx = ops.Alloc("dx", DType.F32, n, inF);
        var xs = TestUtil.RandD(n * inF, 44); var r = TestUtil.RandD(n * outF, 45);
        var all = new[] { w, nat.Neg.A, nat.Neg.B }.Concat(nat.Parameters).ToList();
        var vals = all.ToDictionary(p => p, p => ops.Read(p.W));
        double L()
        {
            ops.Write(x, xs);
            foreach (var (p, v) in vals) ops.Write(p.W, v);
            ops.MatMul(y, x, w.W, n, outF, inF, false, true);
            nat.Forward(ctx, x, y, n);
            return Dot(ops.Read(y), r);
        }
        L();
        var alphas = nat.Alphas();
        Assert.That(alphas.Distinct().Count(), Is.EqualTo(n), "rows get their own α");
        Assert.That(alphas.All(a => Math.Abs(a) < beta * 0.999), Is.True, $"unsaturated α keeps the score path live: [{string.Join(", ", alphas)}]");
        ops.Write(dy, r);
        ops.MatMul(dx, dy, w.W, n, inF, outF, false, false);
        if (trainableW) ops.MatMul(w.Grad!, dy, x, outF, inF, n, true, false, 1f, 1f);
        nat.Backward(ctx, x, dy, dx, n);
        TestUtil.Close(Fd(xs, L), ops.Read(dx), Atol, Rtol, "dx");
        foreach (var p in nat.Parameters.Append(w).Where(p => p.Trainable))
            TestUtil.Close(Fd(vals[p], L), ops.Read(p.Grad!), Atol, Rtol, "d" + p.Name);
        Assert.That(nat.Parameters.Select(p => p.Name), Is.EqualTo(new[]
        {
            "m.lora_A.weight", "m.lora_B.weight", "m.integration.Q.weight", "m.integration.K.weight", "m.integration.U1.weight", "m.integration.U2.weight",
        }));
        Assert.That(nat.Parameters.Select(p => p.Shape), Is.EqualTo(new int[][] { [2, inF], [outF, 2], [d, inF], [d, outF], [d, outF], [outF, d] }));
        Assert.That(nat.Neg.A.Trainable || nat.Neg.B.Trainable, Is.False, "LoRA_neg gets no gradient");
        Assert.That(nat.Parameters, Has.None.SameAs(nat.Neg.A).And.None.SameAs(nat.Neg.B));
        Assert.That(w.Trainable, Is.EqualTo(trainableW));

        // LoRA_neg has no dropout: NegOnly gives the same output in training and in evaluation
        nat.Mode = NatMode.NegOnly;
        double train = L();
        ctx.Training = false;
        Assert.That(L(), Is.EqualTo(train));
    }

    [Test]
    public void AlphaStats_AreTheMeanAndStdOfTheRowAlphas_MaskedOrNot()
    {
        var ops = new CpuBackend();
        int n = 9, inF = 8, outF = 8;
        using var w = new Param(ops, "w", DType.F32, false, outF, inF);
        ops.Upload(w.W, TestUtil.Rand(outF * inF, 1));
        using var nat = new NatAdapter(ops, "m", w, new LoraConfig { Rank = 2 }, new LoraConfig { Rank = 2 }, 1, 0, new NatOptions { UnitDim = 16 });
        ops.Upload(nat.Neg.B.W, TestUtil.Rand(outF * 2, 2));
        Assert.Throws<InvalidOperationException>(() => nat.AlphaStats());
        using var x = ops.Alloc("x", DType.F32, n, inF); using var y = ops.Alloc("y", DType.F32, n, outF);
        ops.Upload(x, TestUtil.Rand(n * inF, 3, 3));
        nat.Forward(new PassContext(), x, y, n);
        var a = nat.Alphas().Select(v => (double)v).ToArray();
        // Alphas() rounds each α to float (|error| ≤ 3e-8 for |α| ≤ 0.5); the stats are computed from
        // a_neg in double, so they agree with ones recomputed here to 1e-7.
        const double tol = 1e-7;
        double mean = a.Average(), std = Math.Sqrt(a.Select(v => (v - mean) * (v - mean)).Average());
        var (m, s) = nat.AlphaStats();
        Assert.That(m, Is.EqualTo(mean).Within(tol));
        Assert.That(s, Is.EqualTo(std).Within(tol));
        Assert.That(s, Is.GreaterThan(0.01), "rows differ");
        var mask = new float[n]; mask[1] = mask[4] = 1; mask[7] = 2;
        var (mm, ms) = nat.AlphaStats(mask);
        double m3 = (a[1] + a[4] + 2 * a[7]) / 4;
        Assert.That(mm, Is.EqualTo(m3).Within(tol));
        Assert.That(ms, Is.EqualTo(Math.Sqrt(((a[1] - m3) * (a[1] - m3) + (a[4] - m3) * (a[4] - m3) + 2 * (a[7] - m3) * (a[7] - m3)) / 4)).Within(tol));
        Assert.Throws<ArgumentException>(() => nat.AlphaStats(new float[n + 1]));
    }

    // ------------------------------------------------------------------ the model

    static readonly LoraConfig NegCfg = new() { Rank = 8, Alpha = 16, Dropout = 0.05f, Targets = [Proj.q_proj, Proj.v_proj] };
    static readonly LoraConfig PosCfg = new() { Rank = 4, Alpha = 8, Dropout = 0.1f, Targets = [Proj.q_proj, Proj.v_proj] };

    /// <summary>Base model + a LoRA_neg with non-zero B (so h_neg ≠ Wx).</summary>
    static LlamaModel WithNeg(IBackend ops, LlamaConfig cfg, ulong seed = 3)
    {
        var m = new LlamaModel(ops, cfg, DType.F32, seed: seed);
        foreach (var a in m.AddLora(NegCfg, seed: 5, trainable: false)) ops.Upload(a.B.W, TestUtil.Rand((int)a.B.Length, 11, 0.3f));
        return m;
    }

    /// <summary>LoRA_pos B and U2 non-zero: every branch of the unit contributes.</summary>
    static void Randomise(IBackend ops, IEnumerable<NatAdapter> nats)
    {
        ulong s = 20;
        foreach (var n in nats)
        {
            ops.Upload(n.Pos.B.W, TestUtil.Rand((int)n.Pos.B.Length, s++, 0.2f));
            ops.Upload(n.U2.W, TestUtil.Rand((int)n.U2.Length, s++, 0.2f));
        }
    }

    [Test]
    public void FreshNat_LogitsEqualTheBaseModelExactly_AndNegOnlyIsBasePlusLoraNeg([Values] bool kernels)
    {
        IBackend ops = kernels ? TestUtil.Ilgpu : new CpuBackend();
        var cfg = LlamaConfig.Tiny;
        var batch = ModelParityTests.TinyBatch(cfg);
        using var m = WithNeg(ops, cfg);
        var negLogits = m.Logits(batch);
        int count = m.Adapters.Count;
        m.ClearAdapters();
        var baseLogits = m.Logits(batch);
        Assert.That(negLogits, Is.Not.EqualTo(baseLogits), "LoRA_neg changes the model");

        using var m2 = WithNeg(ops, cfg);
        var nats = NatAdapter.Attach(m2, NegCfg, PosCfg, seed: 7);
        Assert.That(nats.Count, Is.EqualTo(count));
        Assert.That(m2.Logits(batch), Is.EqualTo(baseLogits), "U2 = 0: y = Wx exactly");
        Assert.That(NatAdapter.AlphaStatsByModule(m2).Select(s => s.Std), Has.All.GreaterThan(0.0), "α varies by row even at the start");
        Assert.That(NatAdapter.AlphaStatsByModule(m2).Select(s => Math.Abs(s.Mean)), Has.All.LessThanOrEqualTo(0.5));
        NatAdapter.SetMode(m2, NatMode.NegOnly);
        Assert.That(m2.Logits(batch), Is.EqualTo(negLogits), "NegOnly is the negative model");
        NatAdapter.SetMode(m2, NatMode.PosOnly);
        Assert.That(m2.Logits(batch), Is.EqualTo(baseLogits), "B_pos = 0");
        NatAdapter.SetMode(m2, NatMode.Integrated);
        Randomise(ops, nats);
        Assert.That(m2.Logits(batch), Is.Not.EqualTo(baseLogits));
    }

    [Test]
    public void ModelWithLargeActivations_AlphaStaysWithinBeta()
    {
        // the projections' inputs are RMS-normed, so scale the norm weights: xn ≈ 1e3
        var ops = new CpuBackend();
        var cfg = LlamaConfig.Tiny;
        using var m = WithNeg(ops, cfg);
        foreach (var l in m.Layers) ops.Fill(l.AttnNorm.W, 1e3f);
        var nats = NatAdapter.Attach(m, NegCfg, PosCfg, seed: 7);
        Randomise(ops, nats);
        var logits = m.Logits(ModelParityTests.TinyBatch(cfg));
        Assert.That(logits.All(float.IsFinite), Is.True);
        foreach (var nat in nats) Assert.That(nat.Alphas(), Has.All.InRange(-0.5f, 0.5f), nat.Prefix);
    }

    static (double Loss, Dictionary<string, float[]> Grads) RunModel(IBackend ops, bool recompute = false)
    {
        var cfg = LlamaConfig.Tiny;
        using var m = WithNeg(ops, cfg);
        m.Recompute = recompute;
        Randomise(ops, NatAdapter.Attach(m, NegCfg, PosCfg, seed: 7));
        m.Pass.StepSeed = 99;
        double loss = m.Step(ModelParityTests.TinyBatch(cfg), new CrossEntropyHead(), backward: true);
        return (loss, m.TrainableParameters.ToDictionary(p => p.Name, p => TestUtil.Get(ops, p.Grad!)));
    }

    [Test]
    public void WholeTinyModel_KernelsMatchCpuTwin_LossAndEveryGradient()
    {
        var (lc, gc) = RunModel(new CpuBackend());
        var (lk, gk) = RunModel(TestUtil.Ilgpu);
        // as ModelParityTests: fp32 both sides, different summation orders
        Assert.That(lk, Is.EqualTo(lc).Within(1e-5).Percent.Or.EqualTo(lc).Within(1e-6));
        Assert.That(gc.Keys, Has.Some.Contains("integration.U1"));
        Assert.That(gk.Keys, Is.EquivalentTo(gc.Keys));
        Assert.That(gc.Count, Is.EqualTo(2 * 2 * 6), "2 layers × 2 targets × (A, B, Q, K, U1, U2)");
        foreach (var (name, g) in gc)
        {
            Assert.That(g.Any(v => v != 0), Is.True, $"{name} gets gradient");
            TestUtil.Close(g, gk[name], 2e-5f, 2e-3f, name);
        }
    }

    [Test]
    public void WholeTinyModel_RecomputeGivesTheSameGradients()
    {
        var (l0, g0) = RunModel(new CpuBackend());
        var (l1, g1) = RunModel(new CpuBackend(), recompute: true);
        Assert.That(l1, Is.EqualTo(l0));
        foreach (var (name, g) in g0) Assert.That(g1[name], Is.EqualTo(g), name);
    }

    [Test]
    public void WholeTinyModel_GradientsMatchFiniteDifferences_Fp64()
    {
        var ops = new CpuBackend<double>();
        var cfg = LlamaConfig.Tiny with { Dim = 8, Heads = 2, FfnDim = 12, Vocab = 11, Layers = 2 };
        using var m = WithNeg(ops, cfg, seed: 4);
        var nats = NatAdapter.Attach(m, NegCfg, PosCfg, seed: 2, new NatOptions { UnitDim = 6 });
        foreach (var n in nats)
        {
            ops.Write(n.Pos.B.W, TestUtil.RandD((int)n.Pos.B.Length, 30, 0.5));
            ops.Write(n.U2.W, TestUtil.RandD((int)n.U2.Length, 31, 0.5));
        }
        var batch = ModelParityTests.TinyBatch(cfg, b: 2, t: 4);
        m.Pass.StepSeed = 3;
        var head = new CrossEntropyHead();
        m.Step(batch, head, backward: true);
        CheckEveryTrainableGradient(ops, m, batch, head);
    }

    /// <summary>Central finite differences (fp64) at five entries of every trainable parameter against the
    /// model's gradient from the last backward. As OpGradientTests' whole-model check: the loss is O(1), so
    /// the FD error is ≲ 1e-9 and 1e-6 + 1e-5·|fd| leaves room only for rounding.</summary>
    static void CheckEveryTrainableGradient(CpuBackend<double> ops, LlamaModel m, ModelBatch batch, CrossEntropyHead head)
    {
        foreach (var p in m.TrainableParameters)
        {
            var w = ops.Read(p.W); var g = ops.Read(p.Grad!);
            for (int i = 0; i < w.Length; i += Math.Max(1, w.Length / 5))
            {
                double o = w[i];
                w[i] = o + H; ops.Write(p.W, w); double lp = m.Step(batch, head, backward: false);
                w[i] = o - H; ops.Write(p.W, w); double lm = m.Step(batch, head, backward: false);
                w[i] = o; ops.Write(p.W, w);
                double fd = (lp - lm) / (2 * H);
                Assert.That(g[i], Is.EqualTo(fd).Within(1e-6 + 1e-5 * Math.Abs(fd)), $"{p.Name}[{i}]");
            }
        }
    }

    [Test]
    public void FixedAlpha_HoldsAlphaOnEveryRow_LeavesQAndKOut_AndItsGradientsMatchFiniteDifferences_Fp64()
    {
        // the ablation "NAT without attention": α = 0.25 on every row whatever the input, Q and K neither
        // trained nor saved, and the backward of what remains (LoRA_pos, U1, U2, dx) still exact
        var ops = new CpuBackend<double>();
        var cfg = LlamaConfig.Tiny with { Dim = 8, Heads = 2, FfnDim = 12, Vocab = 11, Layers = 2 };
        using var m = WithNeg(ops, cfg, seed: 4);
        var nats = NatAdapter.Attach(m, NegCfg, PosCfg, seed: 2, new NatOptions { UnitDim = 6, FixedAlpha = 0.25f });
        foreach (var n in nats)
        {
            ops.Write(n.Pos.B.W, TestUtil.RandD((int)n.Pos.B.Length, 30, 0.5));
            ops.Write(n.U2.W, TestUtil.RandD((int)n.U2.Length, 31, 0.5));
            Assert.That(n.Parameters, Does.Not.Contain(n.Q).And.Not.Contain(n.K));
            Assert.That(n.Parameters.Count(), Is.EqualTo(4));
        }
        var batch = ModelParityTests.TinyBatch(cfg, b: 2, t: 4);
        m.Pass.StepSeed = 3;
        var head = new CrossEntropyHead();
        m.Step(batch, head, backward: true);
        foreach (var n in nats) Assert.That(n.Alphas(), Has.All.EqualTo(0.25f).Within(1e-6f), n.Prefix);
        Assert.That(m.TrainableParameters.Any(p => p.Name.EndsWith(".Q.weight") || p.Name.EndsWith(".K.weight")), Is.False);
        CheckEveryTrainableGradient(ops, m, batch, head);
        Assert.Throws<ArgumentException>(() => new NatOptions { FixedAlpha = 0.5f }.Validate(), "α = β needs an infinite score");
    }

    [Test]
    public void FixedAlpha_FolderRecordsIt_AndLoadsBackWithTheSameLogits()
    {
        var ops = new CpuBackend();
        var cfg = LlamaConfig.Tiny;
        var batch = ModelParityTests.TinyBatch(cfg);
        string root = TempDir(), negDir = Path.Combine(root, "neg"), natDir = Path.Combine(root, "nat");
        using var a = WithNeg(ops, cfg, seed: 5);
        ModelIO.SaveLora(a, negDir, NegCfg);
        var nats = NatAdapter.Attach(a, NegCfg, PosCfg, seed: 7, new NatOptions { FixedAlpha = -0.1f });
        Randomise(ops, nats);
        var want = a.Logits(batch);
        AdapterFolder.SaveNat(a, natDir, PosCfg, negDir, baseModel: null);
        var folder = AdapterFolder.Inspect(natDir);
        Assert.That((folder.Kind, folder.Nat!.FixedAlpha), Is.EqualTo((AdapterKind.Nat, (float?)-0.1f)));
        using var b = new LlamaModel(ops, cfg, DType.F32, seed: 5);
        folder.LoadInto(b);
        Assert.That(b.Logits(batch), Is.EqualTo(want));
        Assert.That(b.Adapters.Values.OfType<NatAdapter>().SelectMany(n => n.Alphas()), Has.All.EqualTo(-0.1f).Within(1e-6f));
        // a NAT with attention writes no fixed_alpha field (its nat_config.json is as before)
        using var c = WithNeg(ops, cfg, seed: 5);
        NatAdapter.Attach(c, NegCfg, PosCfg, seed: 7);
        string plain = Path.Combine(root, "plain");
        AdapterFolder.SaveNat(c, plain, PosCfg, negDir, baseModel: null);
        Assert.That(File.ReadAllText(Path.Combine(plain, AdapterFolder.NatConfigFile)), Does.Not.Contain("fixed_alpha"));
        Assert.That(AdapterFolder.Inspect(plain).Nat!.FixedAlpha, Is.Null);
    }

    sealed class FixedBatches(params ModelBatch[] batches) : IBatchSource
    {
        public ModelBatch Get(long index) => batches[index % batches.Length];
        public long Count => batches.Length;
    }

    static string TempDir() { var d = Path.Combine(Path.GetTempPath(), "nd-nat-" + Guid.NewGuid().ToString("N")[..8]); Directory.CreateDirectory(d); return d; }

    [Test]
    public void TrainerSteps_ReduceTheLoss_OnlyNatParametersMove()
    {
        var ops = new CpuBackend();
        var cfg = LlamaConfig.Tiny;
        using var m = WithNeg(ops, cfg);
        var nats = NatAdapter.Attach(m, NegCfg, PosCfg, seed: 7);
        var frozen = nats.SelectMany(n => new[] { n.Neg.A, n.Neg.B }).Concat(m.BaseParameters).Select(p => TestUtil.Get(ops, p.W)).ToList();
        var batch = ModelParityTests.TinyBatch(cfg, b: 2, t: 12);
        var tr = new Trainer(m, new CrossEntropyHead(), new TrainConfig { Steps = 25, MicroBatch = 2, EffectiveBatch = 2, LearningRate = 1e-2f, ClipNorm = 1f }, TempDir());
        tr.Run(new FixedBatches(batch));
        double first = tr.History[0].Loss, last = tr.History[^1].Loss;
        TestContext.Out.WriteLine($"loss {first:F4} → {last:F4}; α by module: " +
            string.Join("; ", NatAdapter.AlphaStatsByModule(m).Select(s => $"{s.Layer}.{s.Proj} {s.Mean:F3}±{s.Std:F3}")));
        Assert.That(last, Is.LessThan(first - 0.2), "25 steps on one batch (observed 4.19 → 3.83)");
        var after = nats.SelectMany(n => new[] { n.Neg.A, n.Neg.B }).Concat(m.BaseParameters).Select(p => TestUtil.Get(ops, p.W)).ToList();
        for (int i = 0; i < frozen.Count; i++) Assert.That(after[i], Is.EqualTo(frozen[i]), "frozen weights stay");
        Assert.That(nats.All(n => TestUtil.Get(ops, n.U2.W).Any(v => v != 0)), Is.True, "U2 left zero");
    }

    [Test]
    public void PeftRoundTrip_NegFolderPlusNatFolder_GivesTheSameLogits()
    {
        var ops = new CpuBackend();
        var cfg = LlamaConfig.Tiny;
        var batch = ModelParityTests.TinyBatch(cfg);
        string negDir = TempDir(), natDir = TempDir();
        using var a = WithNeg(ops, cfg, seed: 5);
        ModelIO.SaveLora(a, negDir, NegCfg);                         // the negative stage's output
        var nats = NatAdapter.Attach(a, NegCfg, PosCfg, seed: 7);
        Randomise(ops, nats);
        foreach (var n in nats) ops.Upload(n.Q.W, TestUtil.Rand((int)n.Q.Length, 50, 0.3f));
        ModelIO.SaveLora(a, natDir, PosCfg);                         // NAT stage: LoRA_pos + the unit
        var want = a.Logits(batch);
        NatAdapter.SetMode(a, NatMode.NegOnly);
        var wantNeg = a.Logits(batch);

        using (var f = SafeTensors.Open(Path.Combine(natDir, AdapterCheckpoint.WeightsFileName)))
        {
            Assert.That(f.Names.Count(), Is.EqualTo(2 * 2 * 6));
            Assert.That(f.Names, Does.Contain("base_model.model.model.layers.1.self_attn.v_proj.integration.U2.weight")
                .And.Contain("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"));
            Assert.That(f.Info("base_model.model.model.layers.0.self_attn.q_proj.integration.Q.weight").Shape, Is.EqualTo(new long[] { 128, cfg.Dim }));
            Assert.That(f.Info("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight").Shape, Is.EqualTo(new long[] { PosCfg.Rank, cfg.Dim }));
        }

        using var b = new LlamaModel(ops, cfg, DType.F32, seed: 5);
        var (negCfg, _) = NatAdapter.AttachFromPeft(b, negDir, PosCfg, seed: 99);
        Assert.That(negCfg.Rank, Is.EqualTo(NegCfg.Rank));
        Assert.That(b.Logits(batch), Is.Not.EqualTo(want), "fresh units differ before loading");
        NatAdapter.LoadTrained(b, natDir);
        Assert.That(b.Logits(batch), Is.EqualTo(want));
        NatAdapter.SetMode(b, NatMode.NegOnly);
        Assert.That(b.Logits(batch), Is.EqualTo(wantNeg));

        // the NAT folder is a valid PEFT LoRA (LoRA_pos) whose unit tensors pass through by name
        using var c = new LlamaModel(ops, cfg, DType.F32, seed: 5);
        var (posCfg, extra) = ModelIO.LoadLora(c, natDir);
        Assert.That(posCfg.Rank, Is.EqualTo(PosCfg.Rank));
        Assert.That(extra.Select(t => t.Name).ToList(), Has.Count.EqualTo(2 * 2 * 4).And.All.Contains(".integration."));
        // and a NAT folder is refused where LoRA_neg is expected
        using var d = new LlamaModel(ops, cfg, DType.F32, seed: 5);
        var ex = Assert.Throws<CheckpointFormatException>(() => NatAdapter.AttachFromPeft(d, natDir, PosCfg, seed: 1));
        Assert.That(ex!.Message, Does.Contain("integration"));
        Assert.That(d.Adapters, Is.Empty);
    }

    [Test]
    public void Attach_RefusesWhatItCannotUse()
    {
        var ops = new CpuBackend();
        var cfg = LlamaConfig.Tiny;
        using var bare = new LlamaModel(ops, cfg, DType.F32, seed: 5);
        Assert.That(Assert.Throws<ArgumentException>(() => NatAdapter.Attach(bare, NegCfg, PosCfg, 1))!.Message, Does.Contain("layer 0 q_proj"));
        using var m = WithNeg(ops, cfg);
        Assert.That(Assert.Throws<ArgumentException>(() => NatAdapter.Attach(m, NegCfg with { Rank = 4 }, PosCfg, 1))!.Message, Does.Contain("rank 8"));
        Assert.That(Assert.Throws<ArgumentException>(() => NatAdapter.Attach(m, NegCfg, PosCfg with { Targets = [Proj.q_proj] }, 1))!.Message, Does.Contain("v_proj"));
        Assert.That(m.Adapters.Values, Has.All.InstanceOf<LoraAdapter>(), "nothing changed");
        NatAdapter.Attach(m, NegCfg, PosCfg, 1);
        Assert.That(Assert.Throws<ArgumentException>(() => NatAdapter.Attach(m, NegCfg, PosCfg, 1))!.Message, Does.Contain("already"));
    }
}
