using NegDistill.Model;
using NegDistill.Runtime;

namespace NegDistill.Tests;

/// <summary>The whole tiny model on the kernels (ILGPU CPU accelerator) against the CPU twin, and
/// the model-level properties the engine promises.</summary>
[TestFixture]
public class ModelParityTests
{
    internal static ModelBatch TinyBatch(LlamaConfig cfg, int b = 2, int t = 8, ulong seed = 7, bool pad = true)
    {
        var tok = new int[b * t]; var tgt = new int[b * t]; var mask = new float[b * t];
        for (int i = 0; i < b; i++)
        {
            int len = pad ? t - i * 2 : t;                     // row i has i·2 pad positions on the right
            for (int j = 0; j < t; j++)
            {
                int k = i * t + j;
                tok[k] = (int)(CounterRng.Hash(seed, (ulong)k) % (ulong)cfg.Vocab);
                mask[k] = j < len ? 1 : 0;
            }
            for (int j = 0; j < t; j++) tgt[i * t + j] = j + 1 < len ? tok[i * t + j + 1] : -1;
        }
        return new ModelBatch(b, t, tok, tgt, mask);
    }

    static (double loss, Dictionary<string, float[]> grads) Run(IBackend ops, bool lora, bool trainBase, bool recompute = false)
    {
        var cfg = LlamaConfig.Tiny;
        using var m = new LlamaModel(ops, cfg, DType.F32, trainBase, seed: 3) { Recompute = recompute };
        if (lora)
        {
            var ads = m.AddLora(new LoraConfig { Dropout = 0.1f, Targets = [Proj.q_proj, Proj.v_proj, Proj.down_proj] }, seed: 5);
            foreach (var a in ads) ops.Upload(a.B.W, TestUtil.Rand((int)a.B.Length, 11, 0.1f)); // non-zero B so every path is exercised
        }
        m.Pass.StepSeed = 99;
        double loss = m.Step(TinyBatch(cfg), new CrossEntropyHead(), backward: true);
        var grads = m.TrainableParameters.ToDictionary(p => p.Name, p => TestUtil.Get(ops, p.Grad!));
        return (loss, grads);
    }

    [TestCase(true, false)]
    [TestCase(false, true)]
    public void KernelsMatchCpuTwin_LossAndEveryGradient(bool lora, bool trainBase)
    {
        var (lc, gc) = Run(new CpuBackend(), lora, trainBase);
        var (lk, gk) = Run(TestUtil.Ilgpu, lora, trainBase);
        // fp32 on both sides, different summation orders (tiled vs packed GEMM, tree reductions):
        // agreement to ~1e-5 relative on the loss, 1e-4 on gradients of O(1e-2) magnitude.
        Assert.That(lk, Is.EqualTo(lc).Within(1e-5).Percent.Or.EqualTo(lc).Within(1e-6));
        Assert.That(gk.Keys, Is.EquivalentTo(gc.Keys));
        foreach (var (name, g) in gc) TestUtil.Close(g, gk[name], 2e-5f, 2e-3f, name);
    }

    [Test]
    public void RecomputeGivesTheSameGradients()
    {
        var (l0, g0) = Run(new CpuBackend(), lora: true, trainBase: false);
        var (l1, g1) = Run(new CpuBackend(), lora: true, trainBase: false, recompute: true);
        Assert.That(l1, Is.EqualTo(l0));
        foreach (var (name, g) in g0) Assert.That(g1[name], Is.EqualTo(g), name);
    }

    [Test]
    public void LoraWithZeroB_LogitsEqualTheBaseModelExactly([Values] bool kernels)
    {
        IBackend ops = kernels ? TestUtil.Ilgpu : new CpuBackend();
        var cfg = LlamaConfig.Tiny;
        var batch = TinyBatch(cfg);
        using var m = new LlamaModel(ops, cfg, DType.F32, seed: 3);
        var baseLogits = m.Logits(batch);
        m.AddLora(new LoraConfig(), seed: 1);
        var loraLogits = m.Logits(batch);
        Assert.That(loraLogits, Is.EqualTo(baseLogits));
    }
}
