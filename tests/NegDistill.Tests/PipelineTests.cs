using NegDistill.Cli;
using NegDistill.Data.Synthetic;
using NegDistill.Model;
using NegDistill.Runtime;

namespace NegDistill.Tests;

/// <summary>The front end's `pipeline`: config validation naming fields, a tiny end-to-end run, and a
/// second run that skips every completed stage.</summary>
[TestFixture]
public class PipelineTests
{
    static string TempDir() { var d = Path.Combine(Path.GetTempPath(), "nd-pipe-" + Guid.NewGuid().ToString("N")[..8]); Directory.CreateDirectory(d); return d; }

    [Test]
    public void InvalidConfig_EveryErrorNamesItsField()
    {
        var dir = TempDir();
        string path = Path.Combine(dir, "bad.json");
        File.WriteAllText(path, """{ "base": "/nope", "stages": ["nce", "foo"], "train": { "micro_batch": 3, "effective_batch": 4, "lr": -1 }, "lora": { "dropout": 1.5 } }""");
        var ex = Assert.Throws<InvalidDataException>(() => PipelineConfig.Load(path));
        foreach (var field in new[] { "base:", "teacher_data:", "stages: unknown stage 'foo'", "stages: nce needs nat", "train.effective_batch:", "train.lr:", "lora.dropout:" })
            Assert.That(ex!.Message, Does.Contain(field));
        File.WriteAllText(path, """{ "base": "x", "trian": {} }""");
        ex = Assert.Throws<InvalidDataException>(() => PipelineConfig.Load(path));
        Assert.That(ex!.Message, Does.Contain("trian"));
    }

    [Test]
    public void TinyPipeline_RunsEveryStage_AndASecondRunSkipsThem()
    {
        var dir = TempDir();
        // a tiny byte-level base and the synthetic teacher's data
        string baseDir = Path.Combine(dir, "base");
        using (var m = new LlamaModel(new CpuBackend(), LlamaConfig.Tiny with { Vocab = 259, MaxSeq = 192 }, DType.F32, seed: 1))
            ModelIO.SaveBase(m, baseDir);
        string data = Path.Combine(dir, "teacher.jsonl");
        ArithmeticWorld.WriteTeacherJsonl(data, seed: 3, from: 0, count: 12);
        string cfg = Path.Combine(dir, "pipeline.json");
        File.WriteAllText(cfg, $$"""
            { "base": "{{baseDir}}", "teacher_data": "{{data}}", "out": "{{Path.Combine(dir, "out")}}",
              "stages": ["neg", "nat", "nce", "kd", "ul", "rank"],
              "train": { "steps": 2, "micro_batch": 4, "effective_batch": 4, "lr": 0.001, "cutoff": 128, "augment_questions": 2, "augment_max_new_tokens": 8 } }
            """);
        Assert.That(PipelineVerb.Run(cfg, CancellationToken.None), Is.EqualTo(0));
        foreach (var s in new[] { "neg", "nat", "nce", "kd", "ul", "rank" })
            Assert.That(File.Exists(Path.Combine(dir, "out", s, "adapter", "adapter_config.json")), Is.True, s);
        var stamp = File.GetLastWriteTimeUtc(Path.Combine(dir, "out", "nce", "adapter", "adapter_model.safetensors"));
        var lines = File.ReadAllLines(Path.Combine(dir, "out", "nce", "metrics.jsonl")).Length;
        Assert.That(PipelineVerb.Run(cfg, CancellationToken.None), Is.EqualTo(0));
        Assert.That(File.GetLastWriteTimeUtc(Path.Combine(dir, "out", "nce", "adapter", "adapter_model.safetensors")), Is.EqualTo(stamp), "nce was not retrained");
        Assert.That(File.ReadAllLines(Path.Combine(dir, "out", "nce", "metrics.jsonl")), Has.Length.EqualTo(lines), "no new training steps");
    }
}
