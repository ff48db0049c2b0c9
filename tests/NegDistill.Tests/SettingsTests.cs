using System.Reflection;
using System.Text.Json;
using NegDistill.Method;
using NegDistill.Method.Settings;

namespace NegDistill.Tests;

/// <summary>Settings are declared once: each key's config field is the JSON name of the property it is
/// declared beside, and a problem is reported under the name the user typed.</summary>
[TestFixture]
public class SettingsTests
{
    static IEnumerable<(Type Record, string Section, FieldInfo Key)> Keys() =>
        new (Type, string)[] { (typeof(TrainSettings), "train."), (typeof(LoraSettings), "lora."), (typeof(EvalSettings), "eval."), (typeof(RunSettings), ""), (typeof(DeviceSettings), "") }
            .SelectMany(x => x.Item1.GetNestedType("Keys")!.GetFields(BindingFlags.Public | BindingFlags.Static).Select(f => (x.Item1, x.Item2, f)));

    [Test]
    public void EveryConfigField_IsTheJsonNameOfItsProperty_AndBindsIt()
    {
        foreach (var (record, section, key) in Keys())
        {
            var info = (SettingInfo)key.GetValue(null)!;
            Assert.That(record.GetProperty(key.Name), Is.Not.Null, $"{record.Name}.Keys.{key.Name} has no property");
            if (info.Field == null) continue;
            Assert.That(info.Field, Is.EqualTo(section + JsonNamingPolicy.SnakeCaseLower.ConvertName(key.Name)), $"{record.Name}.{key.Name}");
        }
        // the fields bind through the pipeline config's own reader
        string path = Path.Combine(FrontEndTests.TempDir(), "c.json");
        File.WriteAllText(path, """{ "train": { "micro_batch": 3, "warmup_steps": 7, "augment_max_new_tokens": 9 }, "lora": { "target_modules": ["k_proj"] }, "memory_limit_gb": 2.5, "eval": { "max_new_tokens": 5 } }""");
        var c = JsonSerializer.Deserialize(File.ReadAllText(path), MethodJson.Default.PipelineConfig)!;
        Assert.That((c.Train.MicroBatch, c.Train.WarmupSteps, c.Train.AugmentMaxNewTokens, c.Lora.TargetModules[0], c.MemoryLimitGb, c.Eval!.MaxNewTokens),
            Is.EqualTo((3, 7, 9, "k_proj", 2.5, 5)));
        Assert.That((c.Train.Steps, c.Out, c.Eval.N), Is.EqualTo((new TrainSettings().Steps, "runs/pipeline", 16)), "fields left out keep their defaults");
    }

    [Test]
    public void AProblemIsNamedAsTyped_OnTheCommandLineOrInTheConfig()
    {
        var bad = new TrainSettings { MicroBatch = 0 };
        var cli = new SettingsCheck(SettingSource.CommandLine);
        bad.Check(cli);
        Assert.That(cli.Errors, Has.Some.StartsWith("--micro-batch: must be positive (got 0)"));
        var config = new SettingsCheck(SettingSource.Config, "p.json");
        bad.Check(config);
        Assert.That(config.Errors, Has.Some.StartsWith("train.micro_batch: must be positive (got 0)"));
        var ex = Assert.Throws<SettingsException>(config.ThrowIfAny);
        Assert.That(ex!.Message, Does.StartWith("p.json: invalid config\n  train.micro_batch:"));
        Assert.That(new TrainSettings().Steps, Is.EqualTo(new Train.TrainConfig().Steps), "one default for the steps");
        var kv = new SettingsCheck(SettingSource.Config, "p.json");
        new EvalSettings { Data = "x", KvCache = "int8" }.Check(kv, data: false);
        Assert.That(kv.Errors, Has.Some.StartsWith("eval.kv_cache: 'int8' is not auto, f32, bf16 or f16"));
    }

    [Test]
    public void KvCacheAuto_IsBf16OnAGpu_AndF32OnTheCpuTwin()
    {
        Assert.That(new EvalSettings().KvCacheType(new Runtime.CpuBackend()), Is.EqualTo(Runtime.DType.F32));
        Assert.That(new EvalSettings { KvCache = "f16" }.KvCacheType(new Runtime.CpuBackend()), Is.EqualTo(Runtime.DType.F16));
        Assert.That(TestUtil.Ilgpu.IsCuda ? Runtime.DType.BF16 : Runtime.DType.F32, Is.EqualTo(new EvalSettings().KvCacheType(TestUtil.Ilgpu)));
    }

    [Test]
    public void EveryStageAndBaseline_IsFoundAsAType()
    {
        Assert.That(StageCatalog.Names, Is.EqualTo(new[] { "neg", "nat", "nce", "rank", "nat-noneg", "nat-fixed", "nce-beta0", "kd", "mix", "ul", "nt", "cl" }));
        Assert.That(StageCatalog.Find("nat-noneg")!.Requires, Is.Empty, "the ablation without LoRA_neg needs no neg stage");
        Assert.That(StageCatalog.Find("nce-beta0")!.Requires, Is.EqualTo(new[] { "neg", "nat" }));
        Assert.That(StageCatalog.Find("nce")!.Requires, Is.EqualTo(new[] { "neg", "nat" }));
        var c = new SettingsCheck(SettingSource.Config);
        StageCatalog.Parse(["nce", "neg", "cl", "cl", "xyz"], Path.Combine(FrontEndTests.TempDir(), "empty"), c, RunSettings.Keys.Stages);
        Assert.That(c.Errors, Has.Some.StartsWith("stages: nce needs neg before it"));
        Assert.That(c.Errors, Has.Some.StartsWith("stages: nce needs nat before it"));
        Assert.That(c.Errors, Has.Some.EqualTo("stages: 'cl' is named twice"));
        Assert.That(c.Errors, Has.Some.StartsWith("stages: unknown stage 'xyz'"));
    }
}
