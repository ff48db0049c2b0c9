using NegDistill.Method;
using NegDistill.Method.Settings;
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
        var ex = Assert.Throws<SettingsException>(() => PipelineConfig.Load(path));
        foreach (var field in new[] { "base:", "teacher_data:", "stages: unknown stage 'foo'", "stages: nce needs nat", "train.effective_batch:", "train.lr:", "lora.dropout:" })
            Assert.That(ex!.Message, Does.Contain(field));
        File.WriteAllText(path, """{ "base": "x", "trian": {} }""");
        ex = Assert.Throws<SettingsException>(() => PipelineConfig.Load(path));
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
              "train": { "steps": 2, "micro_batch": 4, "effective_batch": 4, "lr": 0.001, "cutoff": 128, "augment_questions": 2, "augment_max_new_tokens": 8 },
              "eval": { "data": "{{FrontEndTests.WriteGsm8k(dir, 2)}}", "task": "gsm8k", "student": "nat", "n": 2, "max_new_tokens": 4 } }
            """);
        var log = new StringWriter();
        var quiet = new TextReporter(log);
        Assert.That(Pipeline.FromConfig(cfg, quiet, CancellationToken.None), Does.Contain("nat greedy"));
        Assert.That(log.ToString(), Does.Contain($"adapter: NAT (LoRA_neg + LoRA_pos + integration unit) from {Path.Combine(dir, "out", "nat", "adapter")}"),
            "eval.student nat is evaluated with its integration unit");
        Assert.That(log.ToString(), Does.Contain("ranker: ranking model"));
        foreach (var s in new[] { "neg", "nat", "nce", "kd", "ul", "rank" })
            Assert.That(File.Exists(Path.Combine(dir, "out", s, "adapter", "adapter_config.json")), Is.True, s);
        var stamp = File.GetLastWriteTimeUtc(Path.Combine(dir, "out", "nce", "adapter", "adapter_model.safetensors"));
        var lines = File.ReadAllLines(Path.Combine(dir, "out", "nce", "metrics.jsonl")).Length;
        Pipeline.FromConfig(cfg, quiet, CancellationToken.None);
        Assert.That(File.GetLastWriteTimeUtc(Path.Combine(dir, "out", "nce", "adapter", "adapter_model.safetensors")), Is.EqualTo(stamp), "nce was not retrained");
        Assert.That(File.ReadAllLines(Path.Combine(dir, "out", "nce", "metrics.jsonl")), Has.Length.EqualTo(lines), "no new training steps");
    }
}
