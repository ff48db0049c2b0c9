using NegDistill.Model;
using NegDistill.Runtime;
using NegDistill.Train;

namespace NegDistill.Tests;

/// <summary>UL and NT baselines: gradients against finite differences (fp64) and training behaviour.</summary>
[TestFixture]
public class BaselineHeadTests
{
    static ModelBatch Mixed(LlamaConfig cfg) => ModelParityTests.TinyBatch(cfg, b: 2, t: 6) with { Labels = [1f, 0f] };

    [TestCase(NegativeObjective.Unlikelihood)]
    [TestCase(NegativeObjective.NegativeTraining)]
    public void Gradients_MatchFiniteDifferences_Fp64(NegativeObjective obj) => CheckGradients(new PolarityHead(obj, tau: 2.3f), obj.ToString());

    [TestCase(0.5f)]
    [TestCase(-5f)]   // hinge inactive: only the positives' cross-entropy remains
    public void Contrastive_Gradients_MatchFiniteDifferences_Fp64(float margin) => CheckGradients(new ContrastiveHead(margin), $"CL m={margin}");

    static void CheckGradients(ILossHead head, string what)
    {
        var ops = new CpuBackend<double>();
        var cfg = LlamaConfig.Tiny with { Dim = 8, Heads = 2, FfnDim = 12, Vocab = 11 };
        using var m = new LlamaModel(ops, cfg, DType.F32, seed: 3);
        foreach (var a in m.AddLora(new LoraConfig { Rank = 2, Dropout = 0 }, seed: 4)) ops.Write(a.B.W, TestUtil.RandD((int)a.B.Length, 5, 0.5));
        // for NT, tau = 2.3 puts some negative tokens on each side of the bound
        var batch = Mixed(cfg);
        m.Step(batch, head, backward: true);
        const double h = 1e-6;
        foreach (var p in m.TrainableParameters)
        {
            var w = ops.Read(p.W); var g = ops.Read(p.Grad!);
            for (int i = 0; i < w.Length; i += Math.Max(1, w.Length / 4))
            {
                double o = w[i];
                w[i] = o + h; ops.Write(p.W, w); double lp = m.Step(batch, head, backward: false);
                w[i] = o - h; ops.Write(p.W, w); double lm = m.Step(batch, head, backward: false);
                w[i] = o; ops.Write(p.W, w);
                double fd = (lp - lm) / (2 * h);
                Assert.That(g[i], Is.EqualTo(fd).Within(1e-7 + 1e-5 * Math.Abs(fd)), $"{what} {p.Name}[{i}]");
            }
        }
    }

    [TestCase(NegativeObjective.Unlikelihood)]
    [TestCase(NegativeObjective.NegativeTraining)]
    public void Training_LowersPositiveLossAndNegativeLikelihood(NegativeObjective obj)
    {
        var ops = new CpuBackend();
        var cfg = LlamaConfig.Tiny;
        using var m = new LlamaModel(ops, cfg, DType.F32, seed: 1);
        m.AddLora(new LoraConfig { Dropout = 0, Targets = [Proj.q_proj, Proj.v_proj, Proj.down_proj] }, seed: 2);
        var pos = ModelParityTests.TinyBatch(cfg, b: 1, t: 8, seed: 11, pad: false) with { Labels = [1f] };
        var neg = ModelParityTests.TinyBatch(cfg, b: 1, t: 8, seed: 12, pad: false) with { Labels = [0f] };
        var ce = new CrossEntropyHead();
        double pos0 = m.Step(pos, ce, false, false), neg0 = m.Step(neg, ce, false, false);
        var both = new ModelBatch(2, 8, pos.Tokens.Concat(neg.Tokens).ToArray(), pos.Targets.Concat(neg.Targets).ToArray(), pos.Mask.Concat(neg.Mask).ToArray()) { Labels = [1f, 0f] };
        var tr = new Trainer(m, new PolarityHead(obj), new TrainConfig { Steps = 30, MicroBatch = 2, EffectiveBatch = 2, LearningRate = 1e-2f },
            Path.Combine(Path.GetTempPath(), "nd-ul-" + Guid.NewGuid().ToString("N")[..8]));
        tr.Run(new FixedSource(both));
        double pos1 = m.Step(pos, ce, false, false), neg1 = m.Step(neg, ce, false, false);
        TestContext.Out.WriteLine($"{obj}: positive CE {pos0:F3} → {pos1:F3}, negative CE {neg0:F3} → {neg1:F3}");
        Assert.That(pos1, Is.LessThan(pos0), "positives become more likely");
        Assert.That(neg1, Is.GreaterThan(neg0), "negatives become less likely");
        Assert.That(tr.History.All(s => double.IsFinite(s.Loss)), Is.True);
    }

    [Test]
    public void Contrastive_Training_RanksThePositiveAboveTheNegative()
    {
        var ops = new CpuBackend();
        var cfg = LlamaConfig.Tiny;
        using var m = new LlamaModel(ops, cfg, DType.F32, seed: 1);
        m.AddLora(new LoraConfig { Dropout = 0, Targets = [Proj.q_proj, Proj.v_proj, Proj.down_proj] }, seed: 2);
        var pos = ModelParityTests.TinyBatch(cfg, b: 1, t: 8, seed: 21, pad: false);
        var neg = ModelParityTests.TinyBatch(cfg, b: 1, t: 8, seed: 22, pad: false);
        var pair = new ModelBatch(2, 8, pos.Tokens.Concat(neg.Tokens).ToArray(), pos.Targets.Concat(neg.Targets).ToArray(), pos.Mask.Concat(neg.Mask).ToArray()) { Labels = [1f, 0f] };
        var ce = new CrossEntropyHead();
        double gap0 = m.Step(neg, ce, false, false) - m.Step(pos, ce, false, false);
        var tr = new Trainer(m, new ContrastiveHead(margin: 1f), new TrainConfig { Steps = 30, MicroBatch = 2, EffectiveBatch = 2, LearningRate = 1e-2f },
            Path.Combine(Path.GetTempPath(), "nd-cl-" + Guid.NewGuid().ToString("N")[..8]));
        tr.Run(new FixedSource(pair));
        double gap1 = m.Step(neg, ce, false, false) - m.Step(pos, ce, false, false);
        TestContext.Out.WriteLine($"CL: mean-token NLL gap (negative − positive) {gap0:F3} → {gap1:F3}; loss {tr.History[0].Loss:F3} → {tr.History[^1].Loss:F3}");
        Assert.That(gap1, Is.GreaterThan(gap0 + 0.5));
        Assert.That(tr.History[^1].Loss, Is.LessThan(tr.History[0].Loss));
    }

    sealed class FixedSource(ModelBatch b) : IBatchSource
    {
        public ModelBatch Get(long index) => b;
        public long Count => 1;
    }
}
