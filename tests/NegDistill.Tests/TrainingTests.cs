using NegDistill.Checkpoints;
using NegDistill.Model;
using NegDistill.Runtime;
using NegDistill.Train;

namespace NegDistill.Tests;

/// <summary>The shared training loop: overfitting, exact resume, clipping, NaN detection.</summary>
[TestFixture]
public class TrainingTests
{
    sealed class FixedBatches(params ModelBatch[] batches) : IBatchSource
    {
        public ModelBatch Get(long index) => batches[index % batches.Length];
        public long Count => batches.Length;
    }

    static string TempDir() { var d = Path.Combine(Path.GetTempPath(), "nd-" + Guid.NewGuid().ToString("N")[..8]); Directory.CreateDirectory(d); return d; }

    [Test]
    public void TinyModelFromScratch_OverfitsOneBatch()
    {
        var ops = new CpuBackend();
        var cfg = LlamaConfig.Tiny;
        using var m = new LlamaModel(ops, cfg, DType.F32, trainBase: true, seed: 1);
        var batch = ModelParityTests.TinyBatch(cfg, b: 2, t: 12);
        var tr = new Trainer(m, new CrossEntropyHead(), new TrainConfig { Steps = 120, MicroBatch = 2, EffectiveBatch = 2, LearningRate = 1e-2f, WarmupSteps = 5, ClipNorm = 1f }, TempDir());
        tr.Run(new FixedBatches(batch));
        double first = tr.History[0].Loss, last = tr.History[^1].Loss;
        TestContext.Out.WriteLine($"loss {first:F4} → {last:F4}");
        Assert.That(last, Is.LessThan(0.05 * first));
    }

    [Test]
    public void TinyModelOnKernels_OverfitsOneBatch()
    {
        var ops = TestUtil.Ilgpu;
        var cfg = LlamaConfig.Tiny;
        using var m = new LlamaModel(ops, cfg, DType.F32, trainBase: true, seed: 1);
        var batch = ModelParityTests.TinyBatch(cfg, b: 1, t: 8, pad: false);
        var tr = new Trainer(m, new CrossEntropyHead(), new TrainConfig { Steps = 30, MicroBatch = 1, EffectiveBatch = 1, LearningRate = 3e-2f, ClipNorm = 1f }, TempDir());
        tr.Run(new FixedBatches(batch));
        double first = tr.History[0].Loss, last = tr.History[^1].Loss;
        TestContext.Out.WriteLine($"loss {first:F4} → {last:F4}");
        Assert.That(last, Is.LessThan(0.05 * first));
    }

    static float[][] TrainLora(string dir, int steps, int cancelAfter = -1, ulong seed = 9)
    {
        var ops = new CpuBackend();
        var cfg = LlamaConfig.Tiny;
        using var m = new LlamaModel(ops, cfg, DType.F32, seed: 1);
        m.AddLora(new LoraConfig { Dropout = 0.1f }, seed: 2);
        var data = new FixedBatches(ModelParityTests.TinyBatch(cfg, seed: 1), ModelParityTests.TinyBatch(cfg, seed: 2), ModelParityTests.TinyBatch(cfg, seed: 3));
        var tc = new TrainConfig { Steps = steps, MicroBatch = 2, EffectiveBatch = 4, LearningRate = 1e-2f, WarmupSteps = 2, CheckpointEvery = 2, Seed = seed };
        var tr = new Trainer(m, new CrossEntropyHead(), tc, dir);
        using var cts = new CancellationTokenSource();
        if (cancelAfter > 0) tr.StepDone += s => { if (s.Step == cancelAfter) cts.Cancel(); };
        bool done = tr.Run(data, cancel: cts.Token);
        Assert.That(done, Is.EqualTo(cancelAfter < 0));
        return m.TrainableParameters.Select(p => TestUtil.Get(ops, p.W)).ToArray();
    }

    [Test]
    public void InterruptedAndResumed_IsBitIdenticalToUninterrupted()
    {
        var full = TrainLora(TempDir(), 7);
        var dir = TempDir();
        TrainLora(dir, 7, cancelAfter: 3);            // stops after step 3, checkpoint written on cancel
        var resumed = TrainLora(dir, 7);              // picks up at step 4
        for (int i = 0; i < full.Length; i++) Assert.That(resumed[i], Is.EqualTo(full[i]), $"parameter {i}");
        var different = TrainLora(TempDir(), 7, seed: 10);
        Assert.That(different.Zip(full).Any(p => !p.First.SequenceEqual(p.Second)), Is.True, "a different seed changes dropout and so the result");
    }

    [Test]
    public void ResumeFromACheckpointOfOtherParameters_FailsNamingTheTensor()
    {
        var dir = TempDir();
        TrainLora(dir, 2);
        var ops = new CpuBackend();
        using var m = new LlamaModel(ops, LlamaConfig.Tiny, DType.F32, seed: 1);
        m.AddLora(new LoraConfig { Targets = [Proj.k_proj] }, seed: 2);
        var tr = new Trainer(m, new CrossEntropyHead(), new TrainConfig { Steps = 3, MicroBatch = 2, EffectiveBatch = 2 }, dir);
        var ex = Assert.Throws<CheckpointFormatException>(() => tr.Run(new FixedBatches(ModelParityTests.TinyBatch(LlamaConfig.Tiny))));
        Assert.That(ex!.Message, Does.Contain("k_proj").And.Contain(Trainer.StateFile));
    }

    [Test]
    public void NonFiniteLoss_StopsNamingTheStep()
    {
        var ops = new CpuBackend();
        using var m = new LlamaModel(ops, LlamaConfig.Tiny, DType.F32, seed: 1);
        m.AddLora(new LoraConfig(), seed: 2);
        var w = TestUtil.Get(ops, m.LmHead.W); w[5] = float.NaN; ops.Upload(m.LmHead.W, w);
        var tr = new Trainer(m, new CrossEntropyHead(), new TrainConfig { Steps = 3, MicroBatch = 2, EffectiveBatch = 2 }, TempDir());
        var ex = Assert.Throws<NonFiniteException>(() => tr.Run(new FixedBatches(ModelParityTests.TinyBatch(LlamaConfig.Tiny))));
        Assert.That(ex!.Message, Does.Contain("step 1").And.Contain("micro-batch 0"));
    }

    [Test]
    public void LearningRateSchedule_WarmsUpThenDecays()
    {
        var c = new TrainConfig { Steps = 10, LearningRate = 1f, WarmupSteps = 2, MinLrRatio = 0.1f };
        Assert.That(c.LrAt(1), Is.EqualTo(0.5f));
        Assert.That(c.LrAt(2), Is.EqualTo(1f));
        Assert.That(c.LrAt(10), Is.EqualTo(0.1f).Within(1e-6));
        Assert.That(c.LrAt(6), Is.LessThan(1f).And.GreaterThan(0.1f));
        Assert.Throws<ArgumentException>(() => new TrainConfig { MicroBatch = 3, EffectiveBatch = 4 }.Validate());
    }
}
