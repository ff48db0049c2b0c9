using NegDistill.Checkpoints;
using NegDistill.Model;
using NegDistill.Runtime;

namespace NegDistill.Tests;

[TestFixture]
public class ModelIOTests
{
    static string TempDir() { var d = Path.Combine(Path.GetTempPath(), "nd-" + Guid.NewGuid().ToString("N")[..8]); Directory.CreateDirectory(d); return d; }

    [TestCase(DType.F32)]
    [TestCase(DType.F16)]
    [TestCase(DType.BF16)]
    public void BaseCheckpoint_ShardedRoundTrip_GivesTheSameLogits(DType dt)
    {
        var ops = new CpuBackend();
        var cfg = LlamaConfig.Tiny;
        var batch = ModelParityTests.TinyBatch(cfg);
        using var a = new LlamaModel(ops, cfg, dt, seed: 5);
        var dir = TempDir();
        ModelIO.SaveBase(a, dir, maxShardBytes: 20_000);                // forces several shards
        Assert.That(File.Exists(Path.Combine(dir, ShardedCheckpoint.IndexFileName)), Is.True);
        var cfg2 = ModelIO.ReadConfig(dir);
        Assert.That(cfg2 with { MaxSeq = cfg.MaxSeq }, Is.EqualTo(cfg));
        using var b = new LlamaModel(ops, cfg2, dt, seed: 77);           // different random init, then loaded over
        ModelIO.LoadBase(b, dir);
        Assert.That(b.Logits(batch), Is.EqualTo(a.Logits(batch)));
    }

    [Test]
    public void BaseCheckpoint_MismatchesAreNamed()
    {
        var ops = new CpuBackend();
        var cfg = LlamaConfig.Tiny;
        using var a = new LlamaModel(ops, cfg, DType.F32, seed: 5);
        var dir = TempDir();
        ModelIO.SaveBase(a, dir);
        using var wider = new LlamaModel(ops, cfg with { FfnDim = 96 }, DType.F32);
        var ex = Assert.Throws<CheckpointFormatException>(() => ModelIO.LoadBase(wider, dir));
        Assert.That(ex!.Message, Does.Contain("model.layers.0.mlp.gate_proj.weight").And.Contain("config.json"));
        using var deeper = new LlamaModel(ops, cfg with { Layers = 3 }, DType.F32);
        ex = Assert.Throws<CheckpointFormatException>(() => ModelIO.LoadBase(deeper, dir));
        Assert.That(ex!.Message, Does.Contain("model.layers.2."));
    }

    [Test]
    public void LoraAdapter_PeftRoundTrip()
    {
        var ops = new CpuBackend();
        var cfg = LlamaConfig.Tiny;
        var batch = ModelParityTests.TinyBatch(cfg);
        using var a = new LlamaModel(ops, cfg, DType.F32, seed: 5);
        var lc = new LoraConfig { Targets = [Proj.q_proj, Proj.v_proj, Proj.down_proj] };
        foreach (var ad in a.AddLora(lc, seed: 3)) ops.Upload(ad.B.W, TestUtil.Rand((int)ad.B.Length, 4, 0.2f));
        var dir = TempDir();
        ModelIO.SaveLora(a, dir, lc);
        Assert.That(File.ReadAllText(Path.Combine(dir, "adapter_config.json")), Does.Contain("\"peft_type\": \"LORA\""));
        using (var f = SafeTensors.Open(Path.Combine(dir, "adapter_model.safetensors")))
            Assert.That(f.Names, Does.Contain("base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"));
        using var b = new LlamaModel(ops, cfg, DType.F32, seed: 5);
        var (lc2, extra) = ModelIO.LoadLora(b, dir);
        Assert.That(lc2.Targets, Is.EqualTo(lc.Targets));
        Assert.That(extra, Is.Empty);
        Assert.That(b.Logits(batch), Is.EqualTo(a.Logits(batch)));
    }
}
