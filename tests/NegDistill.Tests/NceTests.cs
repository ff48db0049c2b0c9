using NegDistill.Model;
using NegDistill.Ops;
using NegDistill.Runtime;
using NegDistill.Train;

namespace NegDistill.Tests;

/// <summary>
/// Negative Calibrated Enhancement (method.md, Step 2): the fused ops against finite differences and
/// against a plain op-by-op fp64 computation, the kernels against the CPU twin, β's properties, the
/// reduction to cross-entropy at a = 0, and <see cref="NceHead"/> in whole-model steps and training.
/// </summary>
[TestFixture]
public class NceTests
{
    // ------------------------------------------------------------------ plain fp64 reference

    static double[] Softmax(ReadOnlySpan<double> z, double tau)
    {
        double max = double.NegativeInfinity;
        foreach (double x in z) max = Math.Max(max, x / tau);
        var p = new double[z.Length];
        double s = 0;
        for (int i = 0; i < z.Length; i++) { p[i] = Math.Exp(z[i] / tau - max); s += p[i]; }
        for (int i = 0; i < z.Length; i++) p[i] /= s;
        return p;
    }

    static double[] LogSoftmax(ReadOnlySpan<double> z, double tau)
    {
        double max = double.NegativeInfinity;
        foreach (double x in z) max = Math.Max(max, x / tau);
        double s = 0;
        foreach (double x in z) s += Math.Exp(x / tau - max);
        double lse = max + Math.Log(s);
        var r = new double[z.Length];
        for (int i = 0; i < z.Length; i++) r[i] = z[i] / tau - lse;
        return r;
    }

    sealed record Ref(double[] Kl, double[] Beta, double[] W, double[] Ce, double[] Kd, double[] Grad, double Loss);

    /// <summary>method.md's formulas written out one by one: three softmaxes, KL with log(p + 1e-7),
    /// β = tanh of the masked mean, the cross term, and the derived gradient.</summary>
    static Ref Reference(double[] zs, double[] zNat, double[] zNeg, int[] y, float[] mask, int b, int t, int v,
        double tau, double a, double ceScale, double kdScale)
    {
        int n = b * t;
        var kl = new double[n];
        for (int i = 0; i < n; i++)
        {
            var pNeg = Softmax(zNeg.AsSpan(i * v, v), tau);
            var pNat = Softmax(zNat.AsSpan(i * v, v), tau);
            for (int k = 0; k < v; k++) kl[i] += pNeg[k] * (Math.Log(pNeg[k] + 1e-7) - Math.Log(pNat[k] + 1e-7));
        }
        var beta = new double[b];
        for (int s = 0; s < b; s++)
        {
            double num = 0, den = 0;
            for (int j = 0; j < t; j++) { num += mask[s * t + j] * kl[s * t + j]; den += mask[s * t + j]; }
            beta[s] = Math.Tanh(num / den);
        }
        var w = new double[n]; var ce = new double[n]; var kd = new double[n]; var grad = new double[n * v];
        double loss = 0;
        for (int i = 0; i < n; i++)
        {
            w[i] = mask[i] * (0.5 + beta[i / t]);                     // KD over the attention mask
            if (mask[i] == 0) continue;
            var row = zs.AsSpan(i * v, v);
            var p = Softmax(row, 1); var q = Softmax(row, tau); var logQ = LogSoftmax(row, tau);
            var pNat = Softmax(zNat.AsSpan(i * v, v), tau);
            bool hasTarget = y[i] >= 0;                                // CE over the rows with a target
            ce[i] = hasTarget ? -LogSoftmax(row, 1)[y[i]] : 0;
            double cross = 0;
            for (int k = 0; k < v; k++) cross += pNat[k] * logQ[k];
            kd[i] = -tau * tau * cross * w[i];
            for (int k = 0; k < v; k++)
                grad[i * v + k] = (hasTarget ? (1 - a) * ceScale * (p[k] - (k == y[i] ? 1 : 0)) : 0) + a * kdScale * tau * w[i] * (q[k] - pNat[k]);
            loss += (1 - a) * ceScale * ce[i] + a * kdScale * kd[i];
        }
        return new Ref(kl, beta, w, ce, kd, grad, loss);
    }

    // ------------------------------------------------------------------ op-level tests

    /// <summary>Central differences of L = (1−a)·ceScale·Σ ce + a·kdScale·Σ kd (the op's own losses) against
    /// the op's gradient, fp64. h = 1e-6: truncation O(h²) ≈ 1e-12, rounding O(eps·|L|/h) ≈ 1e-10 for
    /// |L| ~ 1, so 1e-7 absolute + 1e-6 relative (as OpGradientTests) cannot hide a wrong term, whose
    /// size here is O(1e-2).</summary>
    [Test]
    public void DistillFused_GradientMatchesFiniteDifferences([Values(1f, 2f)] float tau, [Values(0f, 0.5f, 1f)] float a)
    {
        const double h = 1e-6;
        int n = 5, v = 7;
        var z = TestUtil.RandD(n * v, 21, 3);
        var zNat = TestUtil.RandD(n * v, 22, 3);
        var w = TestUtil.RandD(n, 23, 0.4).Select(x => 1 + x).ToArray();     // row weights 0.5 + β in [0.6, 1.4]
        int[] y = [3, -1, 0, 6, -1];
        w[1] = 0;                // row 1: padding (outside the attention mask); row 4: a last real token, KD only
        const float ceScale = 0.25f, kdScale = 0.3f;
        double Loss(double[] zz)
        {
            var copy = (double[])zz.Clone(); var ce = new double[n]; var kd = new double[n];
            Nce.DistillFused<double>(copy, zNat, y, w, ce, kd, n, v, tau, a, ceScale, kdScale, false);
            return (1 - (double)a) * ceScale * ce.Sum() + a * (double)kdScale * kd.Sum();
        }
        var g = (double[])z.Clone(); var lce = new double[n]; var lkd = new double[n];
        Nce.DistillFused<double>(g, zNat, y, w, lce, lkd, n, v, tau, a, ceScale, kdScale, true);
        var fd = new double[z.Length];
        for (int i = 0; i < z.Length; i++)
        {
            double o = z[i];
            z[i] = o + h; double lp = Loss(z);
            z[i] = o - h; double lm = Loss(z);
            z[i] = o;
            fd[i] = (lp - lm) / (2 * h);
        }
        TestUtil.Close(fd, g, 1e-7, 1e-6, "dz_s");
        Assert.That(lce[1], Is.EqualTo(0.0), "padding: no CE");
        Assert.That(lkd[1], Is.EqualTo(0.0), "padding: no KD");
        Assert.That(g.AsSpan(v, v).ToArray(), Is.All.EqualTo(0.0), "padding: no gradient");
        Assert.That(lce[4], Is.EqualTo(0.0), "no target: no CE");
        if (a > 0) Assert.That(g.AsSpan(4 * v, v).ToArray().Max(Math.Abs), Is.GreaterThan(1e-3), "no target, in the mask: a KD gradient");
        Assert.That(Math.Abs(lkd[4]), Is.GreaterThan(1e-3), "no target, in the mask: a KD term");
        Assert.That(g.Max(x => Math.Abs(x)), Is.GreaterThan(1e-3), "the gradient is not trivially zero");
        // each row's gradient sums to 0 (both p − onehot and q − p_nat do)
        for (int i = 0; i < n; i++) Assert.That(g.AsSpan(i * v, v).ToArray().Sum(), Is.EqualTo(0.0).Within(1e-12), $"row {i}");
    }

    /// <summary>The CPU twin in fp64 (through CpuBackend&lt;double&gt;, so the row-parallel split is used too)
    /// against the plain op-by-op formulas. Both sides are fp64 with different exp/log implementations
    /// (TensorPrimitives' vectorised ones vs Math) and summation orders over V = 11: agreement to
    /// 1e-12 absolute + 1e-10 relative, ~1e4 ulps of slack for O(1) values.</summary>
    [Test]
    public void Fused_EqualsOpByOpComputation_Fp64([Values(1f, 2f)] float tau)
    {
        int b = 2, t = 3, n = b * t, v = 11;
        var zs = TestUtil.RandD(n * v, 31, 3); var zNat = TestUtil.RandD(n * v, 32, 3); var zNeg = TestUtil.RandD(n * v, 33, 3);
        float[] mask = [1, 1, 1, 1, 1, 0];
        int[] y = [4, 0, 10, 7, -1, -1];
        const float a = 0.5f, ceScale = 1f / 4, kdScale = 1f / 5;     // 4 targets; 5 real tokens (row 4 has KD only)
        var r = Reference(zs, zNat, zNeg, y, mask, b, t, v, tau, a, ceScale, kdScale);

        var ops = new CpuBackend<double>();
        Tensor T(double[] d, params int[] shape) { var x = ops.Alloc("x", DType.F32, shape); ops.Write(x, d); return x; }
        var tNat = T(zNat, n, v); var tNeg = T(zNeg, n, v); var tKl = ops.Alloc("kl", DType.F32, n);
        ops.NceKl(tNat, tNeg, tKl, n, v, tau);
        var kl = ops.Read(tKl);
        TestUtil.Close(r.Kl, kl, 1e-12, 1e-10, "KL");
        var beta = Nce.SequenceBeta<double>(kl, mask, b, t);
        TestUtil.Close(r.Beta, beta, 1e-12, 1e-10, "β");
        var rw = Nce.RowWeights(beta, t, mask);
        for (int i = 0; i < n; i++) Assert.That(rw[i], Is.EqualTo(mask[i] * (float)(0.5 + beta[i / t])), $"row weight {i}");

        var tZs = T(zs, n, v); var tW = T(r.W, n); var tY = ops.Alloc("y", DType.I32, n); ops.Upload(tY, y);
        var tCe = ops.Alloc("ce", DType.F32, n); var tKd = ops.Alloc("kd", DType.F32, n);
        ops.NceDistillFused(tZs, tNat, tY, tW, tCe, tKd, n, v, tau, a, ceScale, kdScale, true);
        var ce = ops.Read(tCe); var kd = ops.Read(tKd);
        TestUtil.Close(r.Ce, ce, 1e-12, 1e-10, "CE");
        TestUtil.Close(r.Kd, kd, 1e-12, 1e-10, "KD");
        TestUtil.Close(r.Grad, ops.Read(tZs), 1e-12, 1e-10, "dz_s");
        double loss = (1 - a) * ceScale * ce.Sum() + a * kdScale * kd.Sum();
        Assert.That(loss, Is.EqualTo(r.Loss).Within(1e-12));
        Assert.That(r.Beta[0], Is.Not.EqualTo(r.Beta[1]), "the two sequences get different weights");
    }

    /// <summary>The fp32 CPU twin (the fused 512-bit loops where the hardware has them) against the fp64
    /// oracle on the same inputs, V = 37 (a vector tail) and 300. fp32 rounding over V ≤ 300 terms with
    /// O(1) values: 1e-5 absolute + 1e-4 relative on losses, KL and gradients of O(0.1).</summary>
    [Test]
    public void Fp32Twin_MatchesFp64Oracle([Values(1f, 2f)] float tau, [Values(37, 300)] int v)
    {
        int n = 4;
        var zs = TestUtil.RandD(n * v, 81, 5); var zNat = TestUtil.RandD(n * v, 82, 5); var zNeg = TestUtil.RandD(n * v, 83, 5);
        double[] w = [0.7, 1.3, 0.5, 1.1];
        int[] y = [0, -1, v - 1, 17];
        float[] F(double[] d) => d.Select(x => (float)x).ToArray();
        double[] D(float[] f) => f.Select(x => (double)x).ToArray();
        // the fp64 side starts from the fp32-rounded inputs, so only the arithmetic differs
        zs = D(F(zs)); zNat = D(F(zNat)); zNeg = D(F(zNeg));
        var klD = new double[n]; var klF = new float[n];
        Nce.Kl<double>(zNat, zNeg, klD, n, v, tau);
        Nce.Kl<float>(F(zNat), F(zNeg), klF, n, v, tau);
        TestUtil.Close(klD, D(klF), 1e-5, 1e-4, "KL");
        var gD = (double[])zs.Clone(); var gF = F(zs);
        var ceD = new double[n]; var kdD = new double[n]; var ceF = new float[n]; var kdF = new float[n];
        Nce.DistillFused<double>(gD, zNat, y, w, ceD, kdD, n, v, tau, 0.5f, 0.5f, 0.5f, true);
        Nce.DistillFused<float>(gF, F(zNat), y, F(w), ceF, kdF, n, v, tau, 0.5f, 0.5f, 0.5f, true);
        TestUtil.Close(ceD, D(ceF), 1e-5, 1e-4, "CE");
        TestUtil.Close(kdD, D(kdF), 1e-5, 1e-4, "KD");
        TestUtil.Close(gD, D(gF), 1e-5, 1e-4, "dz_s");
        TestContext.Out.WriteLine($"fp32 path: {(System.Runtime.Intrinsics.Vector512.IsHardwareAccelerated ? "fused 512-bit loops" : "TensorPrimitives")}");
    }

    // ------------------------------------------------------------------ kernels vs CPU twin

    /// <summary>Both backends through IBackend on the same inputs. Tolerance as KernelParityTests: fp32 on
    /// both sides with different summation orders (online per-thread sums and trees vs sequential SIMD)
    /// and exp/log implementations: 1e-5 absolute + 1e-4 relative for O(1) values and V ≤ 300.</summary>
    static Dictionary<string, float[]> RunBoth(Func<IBackend, Dictionary<string, float[]>> run, string what)
    {
        var cpu = run(new CpuBackend());
        var ker = run(TestUtil.Ilgpu);
        foreach (var (k, e) in cpu) TestUtil.Close(e, ker[k], 1e-5f, 1e-4f, $"{what} {k}");
        return cpu;
    }

    [Test]
    public void Kl_KernelMatchesCpuTwin([Values(1f, 2f)] float tau, [Values(5, 300)] int v)
    {
        int n = 5;
        var zNat = TestUtil.Rand(n * v, 41, 4); var zNeg = TestUtil.Rand(n * v, 42, 4);
        Array.Copy(zNat, 2 * v, zNeg, 2 * v, v);                                   // row 2: teachers agree, KL = 0
        var r = RunBoth(ops =>
        {
            using var a = ops.Alloc("nat", DType.F32, n, v); using var b = ops.Alloc("neg", DType.F32, n, v); using var kl = ops.Alloc("kl", DType.F32, n);
            ops.Upload(a, zNat); ops.Upload(b, zNeg);
            ops.NceKl(a, b, kl, n, v, tau);
            var k = TestUtil.Get(ops, kl);
            Assert.That(k[2], Is.EqualTo(0f), $"{ops.Name}: identical rows have KL exactly 0");
            return new() { ["kl"] = k };
        }, "NceKl");
        Assert.That(r["kl"].Where((_, i) => i != 2), Is.All.GreaterThan(1e-3f), "different rows have a clearly positive KL");
    }

    [Test]
    public void DistillFused_KernelMatchesCpuTwin([Values] bool grad, [Values(1f, 2f)] float tau, [Values(5, 300)] int v)
    {
        int n = 5;
        var zs = TestUtil.Rand(n * v, 51, 5); var zNat = TestUtil.Rand(n * v, 52, 5);
        var w = new float[] { 0.7f, 0f, 0.5f, 1.1f, 1.3f };               // row 1 padding; row 4 KD only
        int[] y = [0, -1, v - 1, 2, -1];
        RunBoth(ops =>
        {
            using var z = ops.Alloc("zs", DType.F32, n, v); using var zn = ops.Alloc("nat", DType.F32, n, v);
            using var ty = ops.Alloc("y", DType.I32, n); using var tw = ops.Alloc("w", DType.F32, n);
            using var ce = ops.Alloc("ce", DType.F32, n); using var kd = ops.Alloc("kd", DType.F32, n);
            ops.Upload(z, zs); ops.Upload(zn, zNat); ops.Upload(ty, y); ops.Upload(tw, w);
            ops.Fill(ce, 9f); ops.Fill(kd, 9f);                                 // the ignored row must be overwritten with 0
            ops.NceDistillFused(z, zn, ty, tw, ce, kd, n, v, tau, 0.5f, 0.25f, 0.2f, grad);
            var r = new Dictionary<string, float[]> { ["zs"] = TestUtil.Get(ops, z), ["ce"] = TestUtil.Get(ops, ce), ["kd"] = TestUtil.Get(ops, kd) };
            Assert.That(r["ce"][1], Is.EqualTo(0f), ops.Name);
            Assert.That(r["kd"][1], Is.EqualTo(0f), ops.Name);
            Assert.That(r["ce"][4], Is.EqualTo(0f), $"{ops.Name}: no target, no CE");
            Assert.That(r["kd"][4], Is.Not.EqualTo(0f), $"{ops.Name}: in the mask, a KD term");
            if (grad) Assert.That(r["zs"].AsSpan(v, v).ToArray(), Is.All.EqualTo(0f), $"{ops.Name}: ignored row");
            else Assert.That(r["zs"], Is.EqualTo(zs), $"{ops.Name}: logits untouched without gradient");
            return r;
        }, "NceDistillFused");
    }

    // ------------------------------------------------------------------ β and the a = 0 limit

    /// <summary>β_seq = 0 exactly when the teachers agree, and grows strictly with their disagreement
    /// along z_neg = z_nat + s·D: d/ds KL(p_s ‖ p_0) = s·Var_{p_s}(D/τ)/τ ≥ 0 for an exponential family,
    /// and 1e-7 inside the logs is far below the smallest probability here (V = 50, |z| ≤ 8), so the
    /// ordering is strict. Padded positions (mask 0) carry a huge disagreement that must not count.</summary>
    [Test]
    public void Beta_IsZeroForAgreeingTeachers_AndGrowsWithDisagreement([Values] bool kernels)
    {
        IBackend ops = kernels ? TestUtil.Ilgpu : new CpuBackend();
        int b = 1, t = 4, n = b * t, v = 50;
        float[] mask = [1, 1, 1, 0];
        var zNat = TestUtil.Rand(n * v, 61, 2); var dir = TestUtil.Rand(n * v, 62, 2);
        using var tNat = ops.Alloc("nat", DType.F32, n, v); using var tNeg = ops.Alloc("neg", DType.F32, n, v); using var tKl = ops.Alloc("kl", DType.F32, n);
        ops.Upload(tNat, zNat);
        double BetaAt(float s)
        {
            var zNeg = zNat.Select((x, i) => x + s * dir[i]).ToArray();
            for (int k = 3 * v; k < 4 * v; k++) zNeg[k] = 40f * dir[k];       // the pad row disagrees wildly
            ops.Upload(tNeg, zNeg);
            ops.NceKl(tNat, tNeg, tKl, n, v, 1f);
            return Nce.SequenceBeta<float>(TestUtil.Get(ops, tKl), mask, b, t)[0];
        }
        Assert.That(BetaAt(0f), Is.EqualTo(0.0), "teachers agree on every real token");
        double prev = 0;
        foreach (float s in new[] { 0.1f, 0.25f, 0.5f, 1f, 2f, 3f })
        {
            double beta = BetaAt(s);
            Assert.That(beta, Is.GreaterThan(prev).And.LessThan(1.0), $"β at scale {s}");
            prev = beta;
        }
        Assert.That(Nce.SequenceBeta<float>([5f, 5f], [0f, 0f], 1, 2)[0], Is.EqualTo(0.0), "a sequence without real tokens gets β = 0");
    }

    /// <summary>a = 0 leaves only the CE term: the fused op's CE losses and gradient equal the
    /// CrossEntropyFused op's with weight = ceScale. Same backend, same fp32 formulas, different exp
    /// routine or summation order: 1e-6 absolute (gradients are ≤ 0.25, losses ~3).</summary>
    [Test]
    public void WithAZero_EqualsCrossEntropy([Values] bool kernels)
    {
        IBackend ops = kernels ? TestUtil.Ilgpu : new CpuBackend();
        int n = 4, v = 37;
        var zs = TestUtil.Rand(n * v, 71, 4); var zNat = TestUtil.Rand(n * v, 72, 4);
        int[] y = [5, -1, 0, 36];
        using var z1 = ops.Alloc("z1", DType.F32, n, v); using var z2 = ops.Alloc("z2", DType.F32, n, v); using var zn = ops.Alloc("nat", DType.F32, n, v);
        using var ty = ops.Alloc("y", DType.I32, n); using var tw = ops.Alloc("w", DType.F32, n);
        using var l1 = ops.Alloc("l1", DType.F32, n); using var ce = ops.Alloc("ce", DType.F32, n); using var kd = ops.Alloc("kd", DType.F32, n);
        ops.Upload(z1, zs); ops.Upload(z2, zs); ops.Upload(zn, zNat); ops.Upload(ty, y); ops.Fill(tw, 1.2f);
        ops.CrossEntropyFused(z1, l1, ty, n, v, 0.25f, true);
        ops.NceDistillFused(z2, zn, ty, tw, ce, kd, n, v, 1f, 0f, 0.25f, 0.25f, true);
        TestUtil.Close(TestUtil.Get(ops, l1), TestUtil.Get(ops, ce), 1e-6f, 0f, "CE loss");
        TestUtil.Close(TestUtil.Get(ops, z1), TestUtil.Get(ops, z2), 1e-6f, 0f, "gradient");
    }

    // ------------------------------------------------------------------ the head in whole-model steps

    sealed class Setup : IDisposable
    {
        public required LlamaModel Student, Nat, Neg;
        public required ModelBatch Batch;
        public required Tensor HNat, HNeg;
        public void Dispose() { HNat.Dispose(); HNeg.Dispose(); Student.Dispose(); Nat.Dispose(); Neg.Dispose(); }
    }

    /// <summary>Student: the tiny base with a trainable LoRA (non-zero B, so A gets gradients too).
    /// Teachers: the same base with a frozen random LoRA (NAT) and without one (neg).</summary>
    static Setup Build(IBackend ops, float dropout = 0.1f, long? logitsBudget = null, ModelBatch? batch = null)
    {
        var cfg = LlamaConfig.Tiny;
        var lora = new LoraConfig { Dropout = dropout, Targets = [Proj.q_proj, Proj.v_proj, Proj.down_proj] };
        var student = new LlamaModel(ops, cfg, DType.F32, seed: 3);
        if (logitsBudget is { } lb) student.LogitsBudget = lb;
        foreach (var ad in student.AddLora(lora, seed: 5)) ops.Upload(ad.B.W, TestUtil.Rand((int)ad.B.Length, 11, 0.1f));
        var nat = new LlamaModel(ops, cfg, DType.F32, seed: 3);
        foreach (var ad in nat.AddLora(lora, seed: 8, trainable: false)) ops.Upload(ad.B.W, TestUtil.Rand((int)ad.B.Length, 13, 0.5f));
        var neg = new LlamaModel(ops, cfg, DType.F32, seed: 3);
        batch ??= ModelParityTests.TinyBatch(cfg);
        return new Setup
        {
            Student = student, Nat = nat, Neg = neg, Batch = batch,
            HNat = TeacherHidden.Capture(nat, batch), HNeg = TeacherHidden.Capture(neg, batch),
        };
    }

    static (double loss, double ce, double kd, double[] beta, Dictionary<string, float[]> grads) StepWithNce(IBackend ops, long? logitsBudget = null)
    {
        using var s = Build(ops, logitsBudget: logitsBudget);
        using var head = new NceHead(s.HNat, s.HNeg);
        s.Student.Pass.StepSeed = 99;
        double loss = s.Student.Step(s.Batch, head, backward: true);
        var grads = s.Student.TrainableParameters.ToDictionary(p => p.Name, p => TestUtil.Get(ops, p.Grad!));
        return (loss, head.LastCe, head.LastKd, head.Beta, grads);
    }

    /// <summary>A whole tiny-model step with the NCE head on the kernels vs the CPU twin (logits in
    /// chunks of 5 rows over 16, so the last chunk is partial). Tolerances as ModelParityTests: fp32 on
    /// both sides with different summation orders; 1e-5 relative on the CE part, 1e-6 relative on the
    /// KD part and the total (its cross term Σ p_nat·(z − max) − log Σ exp cancels a little more), 1e-4
    /// relative on β (a tanh of a KL of O(1e-2) whose terms cancel), and 2e-5 absolute + 2e-3 relative
    /// on LoRA gradients of O(1e-2).</summary>
    [Test]
    public void NceHeadStep_KernelsMatchCpuTwin_LossBetaAndLoraGradients()
    {
        long budget = 5L * LlamaConfig.Tiny.Vocab;
        var (lc, cc, kc, bc, gc) = StepWithNce(new CpuBackend(), budget);
        var (lk, ck, kk, bk, gk) = StepWithNce(TestUtil.Ilgpu, budget);
        TestContext.Out.WriteLine($"loss {lc:F6} (ce {cc:F6}, kd {kc:F6}), β = [{string.Join(", ", bc.Select(x => x.ToString("F5")))}]");
        Assert.That(lk, Is.EqualTo(lc).Within(1e-4).Percent);
        Assert.That(ck, Is.EqualTo(cc).Within(1e-5).Percent);
        Assert.That(kk, Is.EqualTo(kc).Within(1e-4).Percent);
        Assert.That(lc, Is.EqualTo(0.5 * cc + 0.5 * kc).Within(1e-12));
        TestUtil.Close(bc, bk, 1e-6, 1e-4, "β");
        Assert.That(bc, Is.All.GreaterThan(1e-4), "the NAT and neg teachers differ, so β > 0");
        Assert.That(gk.Keys, Is.EquivalentTo(gc.Keys));
        Assert.That(gc.Keys.Count(k => k.Contains("lora_A")), Is.GreaterThan(0));
        foreach (var (name, g) in gc)
        {
            TestUtil.Close(g, gk[name], 2e-5f, 2e-3f, name);
            Assert.That(g.Any(x => x != 0), Is.True, $"{name} receives a gradient");
        }
    }

    /// <summary>The head end to end in fp64 (CpuBackend&lt;double&gt;): its loss equals the op-by-op
    /// reference over the full logits of the three models, for one chunk and for chunks of 3 rows
    /// (1e-10 relative: the same fp64 GEMMs, different exp/log), and its LoRA gradients equal central
    /// differences of that loss (h = 1e-6 on weights of O(0.1): truncation ≈ 1e-12, rounding ≈ 1e-10
    /// relative to |L| ~ 4, so 1e-8 absolute + 1e-5 relative). The head keeps β and the row weights
    /// 0.5 + β in fp32 (KL is downloaded and w uploaded through float), which moves the KD part by up to
    /// ~6e-8 relative: 1e-7 relative on the KD part and the total, 1e-10 on CE.</summary>
    [Test]
    public void NceHead_Fp64_EqualsReferenceAndFiniteDifferences()
    {
        var ops = new CpuBackend<double>();
        var cfg = LlamaConfig.Tiny;
        int v = cfg.Vocab;
        foreach (long? budget in new long?[] { null, 3L * v })
        {
            using var s = Build(ops, dropout: 0f, logitsBudget: budget);
            using var head = new NceHead(s.HNat, s.HNeg);
            var batch = s.Batch;
            // LlamaModel.Logits() downloads through float; the reference takes the fp64 logits instead
            double[] Logits(LlamaModel m)
            {
                m.ForwardHidden(batch, false);
                using var full = ops.Alloc("full", DType.F32, m.Rows, v);
                ops.MatMul(full, m.Hidden, m.LmHead.W, m.Rows, v, cfg.Dim, false, true);
                return ops.Read(full);
            }
            var zs = Logits(s.Student); var zNat = Logits(s.Nat); var zNeg = Logits(s.Neg);
            int count = batch.LossTokens;
            double real = batch.Mask.Sum();                            // KD averages over the attention mask
            Assert.That(real, Is.GreaterThan(count), "the batch has last tokens without a target");
            var r = Reference(zs, zNat, zNeg, batch.Targets, batch.Mask, batch.B, batch.T, v, 1, 0.5, 1.0 / count, 1.0 / real);

            double loss = s.Student.Step(batch, head, backward: true, training: false);
            Assert.That(loss, Is.EqualTo(r.Loss).Within(1e-5).Percent, $"chunk budget {budget}");
            Assert.That(head.LastCe, Is.EqualTo(r.Ce.Sum() / count).Within(1e-8).Percent);
            Assert.That(head.LastKd, Is.EqualTo(r.Kd.Sum() / real).Within(1e-5).Percent);
            TestUtil.Close(r.Beta, head.Beta, 1e-6, 1e-5, "β (KL downloaded through float)");
            if (budget != null) continue;

            // finite differences on a few entries of every LoRA matrix
            const double h = 1e-6;
            foreach (var p in s.Student.TrainableParameters)
            {
                var grad = ops.Read(p.Grad!);
                var wts = ops.Read(p.W);
                foreach (int i in new[] { 0, wts.Length / 2, wts.Length - 1 })
                {
                    double o = wts[i];
                    wts[i] = o + h; ops.Write(p.W, wts); double lp = s.Student.Step(batch, head, backward: false, training: false);
                    wts[i] = o - h; ops.Write(p.W, wts); double lm = s.Student.Step(batch, head, backward: false, training: false);
                    wts[i] = o; ops.Write(p.W, wts);
                    double fd = (lp - lm) / (2 * h);
                    Assert.That(grad[i], Is.EqualTo(fd).Within(1e-8 + 1e-5 * Math.Abs(fd)), $"{p.Name}[{i}]");
                }
            }
        }
    }

    /// <summary>With a = 0 the NCE head is the cross-entropy head: same loss, same gradients, up to
    /// the fused ops' fp32 differences (1e-6 on the loss, 1e-6 absolute + 1e-4 relative on gradients).</summary>
    [Test]
    public void NceHeadWithAZero_EqualsCrossEntropyHead()
    {
        var ops = new CpuBackend();
        using var s = Build(ops);
        using var nce = new NceHead(s.HNat, s.HNeg, a: 0f);
        s.Student.Pass.StepSeed = 7;
        double ln = s.Student.Step(s.Batch, nce, backward: true);
        var gn = s.Student.TrainableParameters.Select(p => TestUtil.Get(ops, p.Grad!)).ToArray();
        foreach (var p in s.Student.TrainableParameters) ops.Fill(p.Grad!, 0f);
        double lce = s.Student.Step(s.Batch, new CrossEntropyHead(), backward: true);
        var gce = s.Student.TrainableParameters.Select(p => TestUtil.Get(ops, p.Grad!)).ToArray();
        Assert.That(ln, Is.EqualTo(lce).Within(1e-6));
        for (int i = 0; i < gn.Length; i++) TestUtil.Close(gce[i], gn[i], 1e-6f, 1e-4f, $"gradient {i}");
    }

    /// <summary>The ablation "NCE with β = 0": without calibration the head is the calibrated head whose two
    /// teachers agree (KL = 0, so β = tanh 0 = 0 and every sequence weighs 0.5): the same loss and gradients,
    /// and different from the calibrated head with a LoRA_neg teacher that disagrees.</summary>
    [Test]
    public void NceHeadWithoutCalibration_IsTheHeadWithAgreeingTeachers()
    {
        var ops = new CpuBackend();
        using var s = Build(ops);
        double Run(NceHead head, out float[][] grads, out double[] beta)
        {
            foreach (var p in s.Student.TrainableParameters) ops.Fill(p.Grad!, 0f);
            s.Student.Pass.StepSeed = 7;
            double l = s.Student.Step(s.Batch, head, backward: true);
            grads = s.Student.TrainableParameters.Select(p => TestUtil.Get(ops, p.Grad!)).ToArray();
            beta = head.Beta;
            return l;
        }
        using var plain = new NceHead(s.HNat, s.HNeg, calibrate: false);
        using var agree = new NceHead(s.HNat, s.HNat);
        using var calibrated = new NceHead(s.HNat, s.HNeg);
        double lp = Run(plain, out var gp, out var bp), la = Run(agree, out var ga, out var ba), lc = Run(calibrated, out _, out var bc);
        Assert.That(bp, Has.All.EqualTo(0.0));
        Assert.That(ba, Has.All.EqualTo(0.0).Within(1e-6), "identical teachers: KL = 0 up to the 1e-7 added to p");
        Assert.That(lp, Is.EqualTo(la).Within(1e-6));
        for (int i = 0; i < gp.Length; i++) TestUtil.Close(ga[i], gp[i], 1e-7f, 1e-5f, $"gradient {i}");
        Assert.That(bc, Has.All.GreaterThan(1e-4));
        Assert.That(lc, Is.Not.EqualTo(lp).Within(1e-6), "calibration changes the loss");
    }

    sealed class Batches(params ModelBatch[] batches) : IBatchSource
    {
        public ModelBatch Get(long index) => batches[index % batches.Length];   // the trainer passes a global index
        public long Count => batches.Length;
    }

    /// <summary>Training the student LoRA with the NCE head on the CPU twin: every loss finite, β
    /// logged per sequence, and the loss falls (two batches, teachers captured per batch).</summary>
    [Test]
    public void NceHead_TrainerLossIsFiniteAndFalls()
    {
        var ops = new CpuBackend();
        var cfg = LlamaConfig.Tiny;
        var b1 = ModelParityTests.TinyBatch(cfg, seed: 1); var b2 = ModelParityTests.TinyBatch(cfg, seed: 2);
        using var s = Build(ops, batch: b1);
        using var h2Nat = TeacherHidden.Capture(s.Nat, b2); using var h2Neg = TeacherHidden.Capture(s.Neg, b2);
        var teachers = new Dictionary<ModelBatch, (Tensor, Tensor)> { [b1] = (s.HNat, s.HNeg), [b2] = (h2Nat, h2Neg) };
        using var head = new NceHead(b => teachers[b]);
        var betas = new List<double[]>();
        var dir = Path.Combine(Path.GetTempPath(), "nd-nce-" + Guid.NewGuid().ToString("N")[..8]);
        var tr = new Trainer(s.Student, head, new TrainConfig { Steps = 12, MicroBatch = 2, EffectiveBatch = 4, LearningRate = 1e-2f }, dir);
        tr.StepDone += _ => betas.Add(head.Beta);
        tr.Run(new Batches(b1, b2));
        var losses = tr.History.Select(m => m.Loss).ToArray();
        TestContext.Out.WriteLine($"NCE loss: {string.Join(" ", losses.Select(l => l.ToString("F4")))}");
        Assert.That(losses, Is.All.Matches<double>(double.IsFinite));
        Assert.That(betas, Is.All.Matches<double[]>(x => x.Length == 2 && x.All(bb => bb > 0 && bb < 1)));
        Assert.That(losses[^1], Is.LessThan(losses[0] - 0.05), "the loss falls");
    }
}
