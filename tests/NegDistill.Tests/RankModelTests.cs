using NegDistill.Model;
using NegDistill.Runtime;
using NegDistill.Train;

namespace NegDistill.Tests;

/// <summary>The ranking model M_rank: LLaMA backbone + LoRA + scalar head with binary cross-entropy.</summary>
[TestFixture]
public class RankModelTests
{
    /// <summary>Label 1 iff token 7 occurs in the sequence: separable, but only by attending over it.</summary>
    static ModelBatch Labeled(int b, int t, ulong seed, int vocab)
    {
        var tok = new int[b * t]; var mask = new float[b * t]; var labels = new float[b];
        var tgt = Enumerable.Repeat(-1, b * t).ToArray();
        for (int i = 0; i < b; i++)
        {
            bool pos = i % 2 == 0;                                 // balanced per batch
            int len = t - (int)(CounterRng.Hash(seed, (ulong)(1000 + i)) % 3);
            for (int j = 0; j < t; j++)
            {
                int x = 8 + (int)(CounterRng.Hash(seed, (ulong)(i * t + j)) % (ulong)(vocab - 8));
                tok[i * t + j] = x; mask[i * t + j] = j < len ? 1 : 0;
            }
            if (pos) tok[i * t + (int)(CounterRng.Hash(seed, (ulong)(5000 + i)) % (ulong)len)] = 7;
            labels[i] = pos ? 1 : 0;
        }
        return new ModelBatch(b, t, tok, tgt, mask) { Labels = labels };
    }

    sealed class Source(int vocab, ulong baseSeed) : IBatchSource
    {
        public ModelBatch Get(long index) => Labeled(8, 10, baseSeed + (ulong)index, vocab);
        public long Count => 4;
    }

    [Test]
    public void HeadAndLoraGradients_MatchFiniteDifferences_Fp64([Values] RankPooling pooling, [Values] bool likelihood)
    {
        var ops = new CpuBackend<double>();
        var cfg = LlamaConfig.Tiny with { Dim = 8, Heads = 2, FfnDim = 12, Vocab = 16 };
        using var m = new LlamaModel(ops, cfg, DType.F32, seed: 3);
        foreach (var a in m.AddLora(new LoraConfig { Rank = 2, Dropout = 0 }, seed: 4)) ops.Write(a.B.W, TestUtil.RandD((int)a.B.Length, 5, 0.5));
        using var head = new RankHead(ops, cfg.Dim, seed: 6, pooling, likelihood);
        var batch = Labeled(4, 5, 9, cfg.Vocab);
        if (likelihood)
        {
            // next-token targets on the real rows but the first (as a batcher marks a rationale), and non-zero λ,
            // so the gradient also flows through the LM head into the LoRA
            var tgt = batch.Targets.ToArray();
            for (int r = 0; r < 4; r++)
                for (int j = 1; j + 1 < 5; j++)
                    if (batch.Mask[r * 5 + j + 1] != 0) tgt[r * 5 + j] = batch.Tokens[r * 5 + j + 1];
            batch = batch with { Targets = tgt };
            ops.Write(head.Lambda.W, [0.7, -0.4]);
        }
        m.StepHidden(batch, head, backward: true);
        const double h = 1e-6;
        foreach (var p in m.TrainableParameters.Concat(head.Parameters))
        {
            var w = ops.Read(p.W); var g = ops.Read(p.Grad!);
            for (int i = 0; i < w.Length; i += Math.Max(1, w.Length / 4))
            {
                double o = w[i];
                w[i] = o + h; ops.Write(p.W, w); double lp = m.StepHidden(batch, head, backward: false);
                w[i] = o - h; ops.Write(p.W, w); double lm = m.StepHidden(batch, head, backward: false);
                w[i] = o; ops.Write(p.W, w);
                double fd = (lp - lm) / (2 * h);
                Assert.That(g[i], Is.EqualTo(fd).Within(1e-7 + 1e-5 * Math.Abs(fd)), $"{p.Name}[{i}]");
            }
        }
    }

    /// <summary>Mean pooling scores the mean of a sequence's real hidden states (pads ignored), last-token pooling
    /// the last real one; the head's file records which, and a file without the record (written before pooling
    /// was a choice) loads as last-token.</summary>
    [Test]
    public void Pooling_IsTheMaskedMeanOrTheLastRow_AndTheFileRecordsIt()
    {
        var ops = new CpuBackend();
        var cfg = LlamaConfig.Tiny;
        using var m = new LlamaModel(ops, cfg, DType.F32, seed: 3);
        var batch = Labeled(3, 6, 9, cfg.Vocab);
        var mask = batch.Mask.ToArray();
        mask[5] = 0; mask[4] = 0;                                   // row 0 is 4 tokens long
        batch = batch with { Mask = mask };
        using var mean = new RankHead(ops, cfg.Dim, seed: 6);
        using var last = new RankHead(ops, cfg.Dim, seed: 6, RankPooling.Last);
        Assert.That(mean.Pooling, Is.EqualTo(RankPooling.Mean), "the authors' avg pooling is the default");
        var sMean = mean.Score(m, batch);
        var sLast = last.Score(m, batch);
        m.ForwardHidden(batch, training: false);
        var h = TestUtil.Get(ops, m.Hidden);
        var w = TestUtil.Get(ops, mean.W.W);
        double Sigmoid(double z) => 1 / (1 + Math.Exp(-z));
        for (int b = 0; b < batch.B; b++)
        {
            var rows = Enumerable.Range(0, batch.T).Where(t => batch.Mask[b * batch.T + t] != 0).Select(t => b * batch.T + t).ToList();
            double zMean = Enumerable.Range(0, cfg.Dim).Sum(j => w[j] * rows.Average(r => h[r * cfg.Dim + j]));
            double zLast = Enumerable.Range(0, cfg.Dim).Sum(j => w[j] * h[rows[^1] * cfg.Dim + j]);
            Assert.That(sMean[b], Is.EqualTo(Sigmoid(zMean)).Within(1e-5), $"mean, row {b}");
            Assert.That(sLast[b], Is.EqualTo(Sigmoid(zLast)).Within(1e-5), $"last, row {b}");
        }
        string dir = Path.Combine(Path.GetTempPath(), "nd-rankhead-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(dir);
        string file = Path.Combine(dir, RankHead.FileName);
        mean.Save(file);
        using (var f = NegDistill.Checkpoints.SafeTensors.Open(file)) Assert.That(f.Metadata[RankHead.PoolingKey], Is.EqualTo("mean"));
        using var back = new RankHead(ops, cfg.Dim, seed: 99, RankPooling.Last);
        back.Load(file);
        Assert.That((back.Pooling, back.Score(m, batch)), Is.EqualTo((RankPooling.Mean, sMean)));
        NegDistill.Checkpoints.SafeTensors.Write(file, [
            NegDistill.Checkpoints.StoredTensor.FromFloat32("score.weight", [1, cfg.Dim], w),
            NegDistill.Checkpoints.StoredTensor.FromFloat32("score.bias", [1], [0f])]);
        back.Load(file);
        Assert.That(back.Pooling, Is.EqualTo(RankPooling.Last), "a head file without the record pools the last token");
    }

    [Test]
    public void LearnsASeparableSet_HeldOutAccuracyWellAboveChance()
    {
        var ops = new CpuBackend();
        var cfg = LlamaConfig.Tiny;
        using var m = new LlamaModel(ops, cfg, DType.F32, seed: 1);
        m.AddLora(new LoraConfig { Rank = 8, Dropout = 0, Targets = [Proj.q_proj, Proj.k_proj, Proj.v_proj, Proj.o_proj] }, seed: 2);
        using var head = new RankHead(ops, cfg.Dim, seed: 3);
        var dir = Path.Combine(Path.GetTempPath(), "nd-rank-" + Guid.NewGuid().ToString("N")[..8]);
        var tr = new Trainer(m, head, new TrainConfig { Steps = 150, MicroBatch = 8, EffectiveBatch = 8, LearningRate = 1e-2f, WarmupSteps = 10 }, dir);
        tr.Run(new Source(cfg.Vocab, 100));
        var scores = new List<float>(); var labels = new List<float>();
        for (int i = 0; i < 8; i++)
        {
            var b = Labeled(8, 10, 90_000 + (ulong)i, cfg.Vocab);     // held-out sequences
            scores.AddRange(head.Score(m, b)); labels.AddRange(b.Labels!);
        }
        double acc = scores.Zip(labels).Count(p => (p.First > 0.5f) == (p.Second > 0.5f)) / (double)scores.Count;
        double auc = RankHead.Auc(scores, labels);
        TestContext.Out.WriteLine($"held-out accuracy {acc:P1}, AUC {auc:F3}, final train loss {tr.History[^1].Loss:F3}");
        Assert.That(acc, Is.GreaterThan(0.8));
        Assert.That(auc, Is.GreaterThan(0.85));
    }

    [Test]
    public void Auc_HandWorked()
    {
        Assert.That(RankHead.Auc([0.9f, 0.8f, 0.3f, 0.1f], [1, 0, 1, 0]), Is.EqualTo(0.75));
        Assert.That(RankHead.Auc([0.5f, 0.5f], [1, 0]), Is.EqualTo(0.5));
    }
}
