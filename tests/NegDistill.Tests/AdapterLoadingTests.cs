using NegDistill.Checkpoints;
using NegDistill.Method;
using NegDistill.Method.Settings;
using NegDistill.Method.Stages;
using NegDistill.Data.Synthetic;
using NegDistill.Infer;
using NegDistill.Model;
using NegDistill.Runtime;
using NegDistill.Train;

namespace NegDistill.Tests;

/// <summary>`sample`, `eval` and `pipeline` load the adapter kind a folder holds: the NAT model as eval
/// loads it is the NAT model training ended with (LoRA_neg + LoRA_pos + integration unit); they say
/// what they loaded, and refuse a folder that is no adapter or the wrong kind.</summary>
[TestFixture]
public class AdapterLoadingTests
{
    string _dir = "", _baseDir = "";
    StageContext _ctx = null!;
    readonly LoraConfig _lora = new() { Rank = 4, Alpha = 8, Dropout = 0f };

    [OneTimeSetUp]
    public void TrainNegNatRank()
    {
        _dir = FrontEndTests.TempDir();
        _baseDir = Path.Combine(_dir, "base");
        using (var b = new LlamaModel(new CpuBackend(), FrontEndTests.ByteTiny, DType.F32, seed: 1)) ModelIO.SaveBase(b, _baseDir);
        string teacher = Path.Combine(_dir, "teacher.jsonl");
        ArithmeticWorld.WriteTeacherJsonl(teacher, seed: 3, from: 0, count: 8);
        var split = new Data.DatasetSplitter().SplitPath(teacher);
        var tok = new Data.ByteTokenizer();
        _ctx = new StageContext
        {
            Ops = new CpuBackend(), Base = new BaseModel(_baseDir, FrontEndTests.ByteTiny, tok, DType.F32), OutDir = Path.Combine(_dir, "out"),
            Batcher = new Data.Batcher(tok, new Data.BatchingOptions { CutoffLength = 64, BatchSize = 2, Seed = 1 }),
            Loop = new TrainConfig { Steps = 6, MicroBatch = 2, EffectiveBatch = 2, LearningRate = 1e-2f, WarmupSteps = 0, CheckpointEvery = 0, Seed = 1 },
            Lora = _lora, Positives = split.Positives, Negatives = split.Negatives, CheckPlans = false,
        };
        Pipeline.Run(_ctx, [new NegStage(), new NatStage(), new RankStage(new RankStage.HeldOut(split.Positives.Take(2).ToList(), split.Negatives.Take(2).ToList(), "rationales"))]);
    }

    ModelBatch Batch()
    {
        var p = _ctx.Positives[0];
        var text = _ctx.Tokenizer.Encode(p.Question + "\n" + p.Rationale, true, true).Take(40).ToArray();
        return new ModelBatch(1, text.Length, text, Enumerable.Repeat(-1, text.Length).ToArray(), Enumerable.Repeat(1f, text.Length).ToArray());
    }

    [Test]
    public void NatAsEvalLoadsIt_GivesTheLogitsOfTheNatModelAtTheEndOfTraining()
    {
        var ops = _ctx.Ops;
        // The NAT model training ended with: LoRA_neg from the neg stage, and LoRA_pos + the integration
        // units exactly as the trainer's final checkpoint holds them (not through the adapter writer).
        using var trained = new LlamaModel(ops, _ctx.Config, DType.F32, seed: 1);
        ModelIO.LoadBase(trained, _baseDir);
        var nats = NatAdapter.AttachFromPeft(trained, _ctx.AdapterDir("neg"), _lora, seed: 99, trainable: false).Adapters;
        using (var state = SafeTensors.Open(Path.Combine(_ctx.Dir("nat"), Trainer.StateFile)))
            foreach (var p in nats.SelectMany(n => n.Parameters))
                ops.Upload(p.W, state.ReadFloat32("param." + p.Name));
        var batch = Batch();
        float[] atEnd = trained.Logits(batch);
        NatAdapter.SetMode(trained, NatMode.PosOnly);
        Assert.That(trained.Logits(batch), Is.Not.EqualTo(atEnd), "the integration unit changes the logits (else this test could not tell NAT from LoRA_pos)");

        var folder = Evaluation.StudentFolder(_ctx.AdapterDir("nat"), new SettingInfo("--adapter", "eval.student", ""), SettingSource.CommandLine);
        using var loaded = Evaluation.LoadStudent(ops, _ctx.Base, folder, seed: 5);
        Assert.That(loaded.Logits(batch), Is.EqualTo(atEnd), "eval's NAT model is not the trained NAT model");
    }

    [Test]
    public void EachFolderIsFoundAsTheKindItIs_AndANatWhoseLoraNegChangedIsRefused()
    {
        Assert.That(AdapterFolder.Inspect(_ctx.AdapterDir("neg")).Kind, Is.EqualTo(AdapterKind.Lora));
        var nat = AdapterFolder.Inspect(_ctx.AdapterDir("nat"));
        Assert.That(nat.Kind, Is.EqualTo(AdapterKind.Nat));
        Assert.That(nat.NegativeDir, Is.EqualTo(Path.GetFullPath(_ctx.AdapterDir("neg"))));
        Assert.That(AdapterFolder.Inspect(_ctx.AdapterDir("rank")).Kind, Is.EqualTo(AdapterKind.Ranker));
        Assert.That(() => AdapterFolder.Inspect(_baseDir), Throws.InstanceOf<InvalidDataException>().With.Message.Contains("is not an adapter folder: it has no adapter_config.json"));
        Assert.That(() => AdapterFolder.Inspect(Path.Combine(_dir, "nowhere")), Throws.InstanceOf<DirectoryNotFoundException>());

        // a copy of the NAT run whose LoRA_neg was retrained since
        string copy = Path.Combine(_dir, "copy");
        foreach (var stage in new[] { "neg", "nat" })
        {
            Directory.CreateDirectory(Path.Combine(copy, stage, "adapter"));
            foreach (var f in Directory.GetFiles(_ctx.AdapterDir(stage))) File.Copy(f, Path.Combine(copy, stage, "adapter", Path.GetFileName(f)));
        }
        Assert.That(AdapterFolder.Inspect(Path.Combine(copy, "nat", "adapter")).Kind, Is.EqualTo(AdapterKind.Nat), "the relative path to LoRA_neg travels with the run");
        using (var m = new LlamaModel(_ctx.Ops, _ctx.Config, DType.F32, seed: 1))
        {
            m.AddLora(_lora, seed: 77);
            ModelIO.SaveLora(m, Path.Combine(copy, "neg", "adapter"), _lora);
        }
        Assert.That(() => AdapterFolder.Inspect(Path.Combine(copy, "nat", "adapter")),
            Throws.InstanceOf<InvalidDataException>().With.Message.Contains("is not the one this NAT was trained with"));
        Directory.Delete(Path.Combine(copy, "neg"), recursive: true);
        Assert.That(() => AdapterFolder.Inspect(Path.Combine(copy, "nat", "adapter")),
            Throws.InstanceOf<InvalidDataException>().With.Message.Contains("its LoRA_neg is missing"));
    }

    [Test]
    public void SampleSaysWhatItLoaded_AndRefusesFoldersOfTheWrongKind()
    {
        string data = FrontEndTests.WriteGsm8k(_dir, 2);
        string[] Args(string outName, params string[] more) =>
            ["sample", "--base", _baseDir, "--data", data, "--task", "gsm8k", "--n", "2", "--max-new", "4", "--out", Path.Combine(_dir, outName), .. more];
        var (rc, _, log) = FrontEndTests.RunCli(Args("s-nat", "--adapter", _ctx.AdapterDir("nat"), "--rank", _ctx.AdapterDir("rank")), killWhen: null);
        Assert.That(rc, Is.EqualTo(0), log);
        Assert.That(log, Does.Contain($"adapter: NAT (LoRA_neg + LoRA_pos + integration unit) from {_ctx.AdapterDir("nat")}"));
        Assert.That(log, Does.Contain("memory plan: sampling 2 questions × 2 candidates").And.Contain("NAT row buffers"));
        (rc, _, log) = FrontEndTests.RunCli(Args("s-neg", "--adapter", _ctx.AdapterDir("neg")), killWhen: null);
        Assert.That(rc, Is.EqualTo(0), log);
        Assert.That(log, Does.Contain($"adapter: LoRA (r 4, alpha 8, on q_proj/v_proj) from {_ctx.AdapterDir("neg")}"));

        foreach (var (args, culprit) in new[]
        {
            (Args("s1", "--adapter", _baseDir), "is not an adapter folder"),
            (Args("s2", "--adapter", _ctx.AdapterDir("rank")), "is a ranking model"),
            (Args("s3", "--adapter", _ctx.AdapterDir("neg"), "--rank", _ctx.AdapterDir("nat")), "--rank: " + _ctx.AdapterDir("nat") + " holds a Nat adapter, not a ranking model"),
        })
        {
            (rc, _, log) = FrontEndTests.RunCli(args, killWhen: null);
            Assert.That(rc, Is.EqualTo(2), log);
            Assert.That(log, Does.Contain(culprit));
            Assert.That(log, Does.Not.Contain("Unhandled exception"));
            Assert.That(log, Does.Not.Contain("memory plan"), "refused before any work");
        }
    }

    [Test]
    public void NatSamplingPlan_EqualsWhatTheSamplerAllocates()
    {
        var ops = new CpuBackend();
        var folder = AdapterFolder.Inspect(_ctx.AdapterDir("nat"));
        using (var m = new LlamaModel(ops, _ctx.Config, DType.BF16, seed: 1))
        {
            folder.LoadInto(m);
            var settings = new SamplerSettings { Temperature = 1f, MaxNewTokens = 6, Slots = 3, MaxSeq = 48, MaxRowsPerStep = 20, Seed = 3 };
            using var sampler = new Sampler(m, settings);
            var got = sampler.Run(Enumerable.Range(0, 4).Select(i => new SampleRequest(i, Enumerable.Range(1, 5 + 3 * i).ToArray(), 2)));
            Assert.That(got, Has.Count.EqualTo(8));
        }
        var plan = MemoryPlan.ForSampling(_ctx.Config, DType.BF16, null, 3, 48, 20, folder.NatPlan);
        Assert.That(plan.Total, Is.EqualTo(ops.PeakBytes), plan.Render("NAT sampling"));
    }
}
