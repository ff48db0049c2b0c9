// Parity of NegDistill's two method-specific pieces with their TorchSharp versions:
//   nat: the NAT adapter on one projection (src/NegDistill.Core/Model/NatAdapter.cs + Ops/Integration.cs)
//        against benchmarks/NegDistill.TorchReference/TorchNat.cs (method.md's literal form, autograd);
//   nce: the NCE loss and its gradient w.r.t. the student logits (Ops/Nce.cs through IBackend, with the
//        glue of Model/NceHead.cs: β per sequence, weights 0.5 + β, averages over the loss tokens)
//        against TorchNce.cs.
// Inputs are fp32-representable values written as F64 with the engine's SafeTensors writer; the fp64
// engine and the fp32 engine see exactly the same numbers.
//
// Tolerances, normwise relative per tensor (see Comparer):
//   fp64 engine vs torch float64: 1e-10, as for the whole model (double on both sides; observed ~1e-15).
//     Exception: the engine hands α out only as float (NatAdapter.Alphas), so α is held to 1e-7.
//   fp32 engine vs torch float64: 5e-5 (one op deep; observed 1e-7 to 3e-6, the largest on KL_t, a sum of
//     p·(log p − log p') terms that cancel in fp32).
// Scalars the engine takes as float (β, the temperature's reciprocal in NAT, the loss scale 1/count in
// NCE) are chosen exactly representable (β = 0.3f is passed to torch as the same double, T = 0.5,
// 16 loss tokens), so the fp64 check measures the math and not fp32 rounding of those scalars.
using System.Text.Json;
using NegDistill.Checkpoints;
using NegDistill.Model;
using NegDistill.Ops;
using NegDistill.Runtime;

namespace NegDistill.TorchParity.Tests;

[TestFixture]
public class UnitParityTests
{
    const double Fp64Tol = LlamaParityTests.Fp64Tol;
    const double AlphaTol = 1e-7;
    const double Fp32Tol = 5e-5;

    static float[] Uniform(long n, ulong seed, float scale)
    {
        var r = new float[n];
        for (long i = 0; i < n; i++) r[i] = (2 * CounterRng.Uniform(seed, (ulong)i) - 1) * scale;
        return r;
    }

    static double[] Wide(float[] f) => f.Select(v => (double)v).ToArray();

    static double[] Read(IBackend ops, Tensor t)
    {
        if (ops is CpuBackend<double> d) return d.Read(t);
        var f = new float[t.Length];
        ops.Download(t, f);
        return Wide(f);
    }

    // ------------------------------------------------------------------ NAT

    sealed record NatInputs(int N, int In, int Out, int D, bool TrainBase, float Beta, float Temperature, LoraConfig Pos, LoraConfig Neg, string Prefix,
        Dictionary<string, float[]> Values);

    static NatInputs MakeNat(bool trainBase, float beta, float temperature, int d, int inF, int outF)
    {
        int n = 6;
        var pos = new LoraConfig { Rank = 4, Alpha = 8, Dropout = 0f };       // s_pos = 2
        var neg = new LoraConfig { Rank = 2, Alpha = 6, Dropout = 0.3f };     // s_neg = 3; its dropout must be ignored (LoRA_neg runs without)
        string prefix = "base_model.model.model.layers.0.self_attn.q_proj";
        string u = prefix + ".integration.";
        float si = 1f / MathF.Sqrt(inF), so = 1f / MathF.Sqrt(outF);
        var v = new Dictionary<string, float[]>
        {
            ["x"] = Uniform(n * inF, 1, 1f),
            ["dy"] = Uniform(n * outF, 2, 1f),
            ["base.weight"] = Uniform(outF * inF, 3, 1.5f * si),
            ["neg/" + prefix + ".lora_A.weight"] = Uniform(neg.Rank * inF, 4, si),
            ["neg/" + prefix + ".lora_B.weight"] = Uniform(outF * neg.Rank, 5, 0.5f),
            [prefix + ".lora_A.weight"] = Uniform(pos.Rank * inF, 6, si),
            [prefix + ".lora_B.weight"] = Uniform(outF * pos.Rank, 7, 0.5f),
            [u + "Q.weight"] = Uniform(d * inF, 8, 1.5f * si),
            [u + "K.weight"] = Uniform(d * outF, 9, 1.5f * so),
            [u + "U1.weight"] = Uniform(d * outF, 10, 1.5f * so),
            [u + "U2.weight"] = Uniform(outF * d, 11, 1f / MathF.Sqrt(d)),     // non-zero (the engine starts it at 0)
        };
        return new NatInputs(n, inF, outF, d, trainBase, beta, temperature, pos, neg, prefix, v);
    }

    static long[] NatShape(NatInputs c, string name) => name switch
    {
        "x" => [c.N, c.In],
        "dy" => [c.N, c.Out],
        "base.weight" => [c.Out, c.In],
        _ when name.StartsWith("neg/") && name.EndsWith("lora_A.weight") => [c.Neg.Rank, c.In],
        _ when name.StartsWith("neg/") && name.EndsWith("lora_B.weight") => [c.Out, c.Neg.Rank],
        _ when name.EndsWith("lora_A.weight") => [c.Pos.Rank, c.In],
        _ when name.EndsWith("lora_B.weight") => [c.Out, c.Pos.Rank],
        _ when name.EndsWith("Q.weight") => [c.D, c.In],
        _ when name.EndsWith("U2.weight") => [c.Out, c.D],
        _ => [c.D, c.Out],                                                     // K, U1
    };

    static void WriteNat(string dir, NatInputs c)
    {
        SafeTensors.Write(Path.Combine(dir, "nat.safetensors"), c.Values.Select(kv => TorchWorker.F64(kv.Key, NatShape(c, kv.Key), Wide(kv.Value))));
        File.WriteAllText(Path.Combine(dir, "nat.json"), JsonSerializer.Serialize(new Dictionary<string, object>
        {
            ["prefix"] = c.Prefix, ["r_pos"] = c.Pos.Rank, ["alpha_pos"] = (double)c.Pos.Alpha, ["r_neg"] = c.Neg.Rank, ["alpha_neg"] = (double)c.Neg.Alpha,
            ["beta"] = (double)c.Beta, ["temperature"] = (double)c.Temperature, ["train_base"] = c.TrainBase,
        }));
    }

    /// <summary>The engine's NAT adapter on one projection, the model's part (y = x·Wᵀ, dx = dy·W, dW) done
    /// here as LlamaModel.Linear / LinearBackward do it. Returns y, α, dx and the gradients by name.</summary>
    static (double[] Y, double[] Alpha, double[] Dx, Dictionary<string, double[]> Grads) RunNat(IBackend ops, NatInputs c)
    {
        var v = c.Values;
        using var w = new Param(ops, "base.weight", DType.F32, c.TrainBase, c.Out, c.In);
        using var nat = new NatAdapter(ops, c.Prefix, w, c.Neg, c.Pos, seed: 1, id: 0,
            new NatOptions { UnitDim = c.D, Beta = c.Beta, Temperature = c.Temperature });
        string u = c.Prefix + ".integration.";
        ops.Upload(w.W, v["base.weight"]);
        ops.Upload(nat.Neg.A.W, v["neg/" + c.Prefix + ".lora_A.weight"]); ops.Upload(nat.Neg.B.W, v["neg/" + c.Prefix + ".lora_B.weight"]);
        ops.Upload(nat.Pos.A.W, v[c.Prefix + ".lora_A.weight"]); ops.Upload(nat.Pos.B.W, v[c.Prefix + ".lora_B.weight"]);
        ops.Upload(nat.Q.W, v[u + "Q.weight"]); ops.Upload(nat.K.W, v[u + "K.weight"]);
        ops.Upload(nat.U1.W, v[u + "U1.weight"]); ops.Upload(nat.U2.W, v[u + "U2.weight"]);
        var ctx = new PassContext { Training = true, StepSeed = 5 };         // training on: LoRA_neg must still run without dropout
        using var x = ops.Alloc("x", DType.F32, c.N, c.In); using var y = ops.Alloc("y", DType.F32, c.N, c.Out);
        using var dy = ops.Alloc("dy", DType.F32, c.N, c.Out); using var dx = ops.Alloc("dx", DType.F32, c.N, c.In);
        ops.Upload(x, v["x"]); ops.Upload(dy, v["dy"]);
        ops.MatMul(y, x, w.W, c.N, c.Out, c.In, false, true);                                  // y = x·Wᵀ
        nat.Forward(ctx, x, y, c.N);
        var alpha = Wide(nat.Alphas());
        ops.MatMul(dx, dy, w.W, c.N, c.In, c.Out, false, false);                               // dx = dy·W
        if (c.TrainBase) ops.MatMul(w.Grad!, dy, x, c.Out, c.In, c.N, true, false, 1f, 1f);    // dW += dyᵀ·x
        nat.Backward(ctx, x, dy, dx, c.N);
        var grads = nat.Parameters.Append(w).Where(p => p.Trainable).ToDictionary(p => p.Name, p => Read(ops, p.Grad!));
        return (Read(ops, y), alpha, Read(ops, dx), grads);
    }

    [TestCase(false, 0.5f, 1f, 128, 32, 48, TestName = "Nat_MethodSettings_FrozenW_D128")]
    [TestCase(true, 0.3f, 0.5f, 16, 48, 32, TestName = "Nat_TrainableW_Beta03_T05_D16")]
    public void Nat(bool trainBase, float beta, float temperature, int d, int inF, int outF)
    {
        string dir = TorchWorker.NewDir("nat");
        try
        {
            var c = MakeNat(trainBase, beta, temperature, d, inF, outF);
            WriteNat(dir, c);
            var e64 = RunNat(new CpuBackend<double>(), c);
            var e32 = RunNat(new CpuBackend(), c);
            var t = TorchWorker.Run("nat", dir);

            TestContext.Out.WriteLine($"[nat] α: [{string.Join(", ", e64.Alpha.Select(a => a.ToString("F4")))}]");
            Assert.That(e64.Alpha.All(a => Math.Abs(a) < 0.95 * beta) && e64.Alpha.Distinct().Count() == c.N, Is.True,
                "unsaturated, distinct α per row (otherwise the score path would carry no gradient and prove little)");
            var names = t.Keys.Except(["y", "alpha", "dx"]).ToHashSet();
            Assert.That(names, Is.EquivalentTo(e64.Grads.Keys), "torch differentiates exactly the engine's trainable parameters (LoRA_neg frozen)");

            var c64 = new Comparer("fp64");
            c64.Check("y", e64.Y, t["y"].Data, Fp64Tol);
            c64.Check("alpha (engine gives float)", e64.Alpha, t["alpha"].Data, AlphaTol);
            c64.Check("dx", e64.Dx, t["dx"].Data, Fp64Tol);
            foreach (var (n, g) in e64.Grads) c64.Check(n, g, t[n].Data, Fp64Tol);
            var c32 = new Comparer("fp32");
            c32.Check("y", e32.Y, t["y"].Data, Fp32Tol);
            c32.Check("alpha", e32.Alpha, t["alpha"].Data, Fp32Tol);
            c32.Check("dx", e32.Dx, t["dx"].Data, Fp32Tol);
            foreach (var (n, g) in e32.Grads) c32.Check(n, g, t[n].Data, Fp32Tol);
            c64.AssertAll();
            c32.AssertAll();
        }
        finally { TorchWorker.Cleanup(dir); }
    }

    // ------------------------------------------------------------------ NCE

    sealed record NceInputs(int B, int T, int V, float Tau, float A, float[] Zs, float[] ZNat, float[] ZNeg, int[] Targets, float[] Mask);

    static NceInputs MakeNce(float tau, float a, bool everyRealTokenHasTarget)
    {
        int v = 40;                                                     // not a multiple of 16: the fp32 SIMD path's tail runs too
        // every-token case: 8 + 5 + 3 = 16 real tokens, all with a target (16: see LlamaParityTests.Batch)
        var batch = LlamaParityTests.Batch(v, seed: 21, everyRealTokenHasTarget ? [(0, 8), (0, 5), (2, 5)] : null);
        int n = batch.B * batch.T;
        var zNat = Uniform(n * v, 31, 3f);
        var noise = Uniform(n * v, 32, 1.5f);
        var zNeg = zNat.Select((z, i) => z + noise[i]).ToArray();      // related teachers: moderate KL, β well inside tanh's range
        var zs = Uniform(n * v, 33, 3f);
        var targets = batch.Targets.ToArray();
        if (everyRealTokenHasTarget)
            for (int i = 0; i < n; i++) if (batch.Mask[i] != 0 && targets[i] < 0) targets[i] = i % v;
        return new NceInputs(batch.B, batch.T, v, tau, a, zs, zNat, zNeg, targets, batch.Mask);
    }

    static void WriteNce(string dir, NceInputs c)
    {
        long[] s3 = [c.B, c.T, c.V], s2 = [c.B, c.T];
        SafeTensors.Write(Path.Combine(dir, "nce.safetensors"),
        [
            TorchWorker.F64("z_s", s3, Wide(c.Zs)), TorchWorker.F64("z_nat", s3, Wide(c.ZNat)), TorchWorker.F64("z_neg", s3, Wide(c.ZNeg)),
            TorchWorker.I32("targets", s2, c.Targets), TorchWorker.F64("mask", s2, Wide(c.Mask)),
        ]);
        File.WriteAllText(Path.Combine(dir, "nce.json"), JsonSerializer.Serialize(new Dictionary<string, object>
        {
            ["a"] = (double)c.A, ["temperature"] = (double)c.Tau,
        }));
    }

    /// <summary>The engine's NCE: IBackend.NceKl → Nce.SequenceBeta → row weights → IBackend.NceDistillFused,
    /// then L = (1 − a)·Σce/count + a·Σkd/Σm, as NceHead.Begin/Chunk/End do. Row weights: in fp64 the
    /// exact m·(0.5 + β) (NceHead would round them to float through Nce.RowWeights; that path is what the
    /// fp32 run uses).</summary>
    static (double Loss, double Ce, double Kd, double[] Kl, double[] Beta, double[] Dz) RunNce(IBackend ops, NceInputs c)
    {
        int n = c.B * c.T, v = c.V;
        using var zs = ops.Alloc("zs", DType.F32, n, v); using var zNat = ops.Alloc("znat", DType.F32, n, v); using var zNeg = ops.Alloc("zneg", DType.F32, n, v);
        using var kl = ops.Alloc("kl", DType.F32, n); using var w = ops.Alloc("w", DType.F32, n);
        using var ce = ops.Alloc("ce", DType.F32, n); using var kd = ops.Alloc("kd", DType.F32, n);
        using var targets = ops.Alloc("targets", DType.I32, n);
        ops.Upload(zs, c.Zs); ops.Upload(zNat, c.ZNat); ops.Upload(zNeg, c.ZNeg); ops.Upload(targets, c.Targets);
        ops.NceKl(zNat, zNeg, kl, n, v, c.Tau);
        var klv = Read(ops, kl);
        var beta = NegDistill.Ops.Nce.SequenceBeta<double>(klv, c.Mask, c.B, c.T);
        if (ops is CpuBackend<double> d) d.Write(w, Enumerable.Range(0, n).Select(i => c.Mask[i] * (0.5 + beta[i / c.T])).ToArray());
        else ops.Upload(w, NegDistill.Ops.Nce.RowWeights(beta, c.T, c.Mask));
        int count = c.Targets.Count(y => y >= 0);
        double real = c.Mask.Sum();                                     // L_kd averages over the attention mask
        ops.NceDistillFused(zs, zNat, targets, w, ce, kd, n, v, c.Tau, c.A, 1.0 / count, 1.0 / real, computeGrad: true);
        double ceMean = ops.Sum(ce, n) / count, kdMean = ops.Sum(kd, n) / real;
        return ((1 - c.A) * ceMean + c.A * kdMean, ceMean, kdMean, klv, beta, Read(ops, zs));
    }

    [TestCase(1f, 0.5f, false, TestName = "Nce_MethodSettings_T1_a05")]
    [TestCase(2f, 0.3f, false, TestName = "Nce_T2_a03")]
    [TestCase(1f, 0.5f, true, TestName = "Nce_EveryRealTokenHasATarget")]
    public void Nce(float tau, float a, bool everyRealTokenHasTarget)
    {
        // method.md: CE over the tokens with a target, L_kd (and β) over the attention mask, so each
        // sequence's last real token has a KD term and no CE term (the first two cases have such rows).
        string dir = TorchWorker.NewDir("nce");
        try
        {
            var c = MakeNce(tau, a, everyRealTokenHasTarget);
            Assert.That(c.Targets.Count(y => y >= 0), Is.EqualTo(16), "loss tokens");
            WriteNce(dir, c);
            var e64 = RunNce(new CpuBackend<double>(), c);
            var e32 = RunNce(new CpuBackend(), c);
            var t = TorchWorker.Run("nce", dir);

            TestContext.Out.WriteLine($"[nce] β per sequence: [{string.Join(", ", e64.Beta.Select(b => b.ToString("F4")))}]; fp32 SIMD path: {System.Runtime.Intrinsics.Vector512.IsHardwareAccelerated}");
            Assert.That(e64.Beta.All(b => b > 0.05 && b < 0.95), Is.True, "β inside tanh's responsive range");
            var c64 = new Comparer("fp64");
            foreach (var (name, ev, tol) in new[] { ("loss", e64.Loss, Fp64Tol), ("ce", e64.Ce, Fp64Tol), ("kd", e64.Kd, Fp64Tol) })
                c64.Check(name, [ev], t[name].Data, tol);
            c64.Check("kl", e64.Kl, t["kl"].Data, Fp64Tol);
            c64.Check("beta", e64.Beta, t["beta"].Data, Fp64Tol);
            c64.Check("dz_s", e64.Dz, t["dz_s"].Data, Fp64Tol);
            var c32 = new Comparer("fp32");
            c32.Check("loss", [e32.Loss], t["loss"].Data, Fp32Tol);
            c32.Check("kl", e32.Kl, t["kl"].Data, Fp32Tol);
            c32.Check("beta", e32.Beta, t["beta"].Data, Fp32Tol);
            c32.Check("dz_s", e32.Dz, t["dz_s"].Data, Fp32Tol);
            c64.AssertAll();
            c32.AssertAll();
        }
        finally { TorchWorker.Cleanup(dir); }
    }
}
