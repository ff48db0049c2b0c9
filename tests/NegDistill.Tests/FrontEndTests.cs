using System.Diagnostics;
using System.Text.Json;
using NegDistill.Checkpoints;
using NegDistill.Cli;
using NegDistill.Cli.Pipeline;
using NegDistill.Data.Synthetic;
using NegDistill.Model;
using NegDistill.Runtime;

namespace NegDistill.Tests;

/// <summary>The front end beyond `pipeline`: `sample` then `vote` agree with `eval`; checkpoints load in
/// their storage precision; plans that do not fit are refused naming what to lower; a pipeline killed
/// mid-stage and rerun ends with the same adapters as one never interrupted.</summary>
[TestFixture]
public class FrontEndTests
{
    internal static string TempDir() { var d = Path.Combine(Path.GetTempPath(), "nd-fe-" + Guid.NewGuid().ToString("N")[..8]); Directory.CreateDirectory(d); return d; }

    internal static readonly LlamaConfig ByteTiny = LlamaConfig.Tiny with { Vocab = 259, MaxSeq = 192 };

    static string WriteBase(string dir, DType weights)
    {
        string baseDir = Path.Combine(dir, $"base-{weights}");
        using var m = new LlamaModel(new CpuBackend(), ByteTiny, weights, seed: 1);
        ModelIO.SaveBase(m, baseDir);
        return baseDir;
    }

    /// <summary>GSM8K-format test questions from the synthetic world (answer after "####").</summary>
    internal static string WriteGsm8k(string dir, int count)
    {
        string path = Path.Combine(dir, "test.jsonl");
        File.WriteAllLines(path, Enumerable.Range(0, count).Select(i =>
        {
            var p = ArithmeticWorld.Problem(seed: 77, index: i);
            return JsonSerializer.Serialize(new { question = p.Question, answer = $"{p.GoldSolution}\n#### {p.Answer}" });
        }));
        return path;
    }

    static (int Rc, string Out) Capture(Func<int> body)
    {
        var old = Console.Out;
        var sw = new StringWriter();
        Console.SetOut(sw);
        try { return (body(), sw.ToString()); }
        finally { Console.SetOut(old); }
    }

    [Test]
    public void SampleThenVote_GivesEvalsTable_AndCheckpointsLoadInTheirStoragePrecision()
    {
        var dir = TempDir();
        string data = WriteGsm8k(dir, 5);
        foreach (var dt in new[] { DType.BF16, DType.F16 })
        {
            string baseDir = WriteBase(dir, dt);
            Assert.That(ModelIO.StorageDType(baseDir), Is.EqualTo(dt));
            var o = new EvalOptions { Base = baseDir, Data = data, Task = "gsm8k", N = 4, MaxNew = 12, Out = Path.Combine(dir, $"sample-{dt}"), Seed = 5 };
            var (rc, text) = Capture(() => Eval.Sample(o));
            Assert.That(rc, Is.EqualTo(0));
            Assert.That(text, Does.Contain($"memory plan: sampling 5 questions × 4 candidates, {dt} weights"));
            Assert.That(text, Does.Contain("KV cache (20 slots × "));
            string cands = Asc.CandidatesPath(o.Out, "base");
            Assert.That(File.ReadAllLines(cands), Has.Length.EqualTo(20));

            // eval on the same options samples nothing new and votes on the same file
            var (rc2, evalText) = Capture(() => Eval.Run(o));
            Assert.That(rc2, Is.EqualTo(0));
            Assert.That(evalText, Does.Contain("all 20 candidates already in"));
            Assert.That(File.ReadAllLines(cands), Has.Length.EqualTo(20));

            var (rc3, sc) = Capture(() => Eval.Vote("sc", cands, o));
            Assert.That(rc3, Is.EqualTo(0));
            Assert.That(sc, Does.Contain("SC voting on 5 questions (20 candidates"));
            foreach (int n in new[] { 1, 2, 4 }) Assert.That(sc, Does.Contain($"\n| {n} | "));
            Assert.That(sc, Does.Not.Contain("\n| 8 | "));
            // ASC without M_rank scores is refused with the reason
            var ex = Assert.Throws<InvalidDataException>(() => Eval.Vote("asc", cands, o));
            Assert.That(ex!.Message, Does.Contain("ASC needs every candidate scored by M_rank"));
            Assert.Throws<ArgumentException>(() => Eval.Vote("majority", cands, o));
        }
    }

    [Test]
    public void PlansThatDoNotFit_AreRefusedBeforeLoading_NamingWhatToLower()
    {
        var dir = TempDir();
        string baseDir = WriteBase(dir, DType.BF16), data = WriteGsm8k(dir, 3);
        var o = new EvalOptions { Base = baseDir, Data = data, Task = "gsm8k", N = 2, MaxNew = 8, Out = Path.Combine(dir, "s"), MemoryLimitGb = 1e-4 };
        var ex = Assert.Throws<PlanDoesNotFitException>(() => Capture(() => Eval.Sample(o)));
        Assert.That(ex!.Message, Does.Contain("lower --slots, --max-new"));
        Assert.That(File.Exists(Asc.CandidatesPath(o.Out, "base")), Is.False, "nothing sampled");

        string teacher = Path.Combine(dir, "teacher.jsonl");
        ArithmeticWorld.WriteTeacherJsonl(teacher, seed: 3, from: 0, count: 6);
        var t = new TrainOptions { Stage = "neg", Base = baseDir, Data = teacher, Out = Path.Combine(dir, "t"), Steps = 1, MicroBatch = 4, EffectiveBatch = 4, Cutoff = 128, MemoryLimitGb = 1e-4 };
        var ex2 = Assert.Throws<PlanDoesNotFitException>(() => Capture(() => TrainVerb.Run(t, CancellationToken.None)));
        Assert.That(ex2!.Message, Does.Contain("lower --micro-batch"));
        Assert.That(Directory.Exists(Path.Combine(dir, "t", "neg")), Is.False, "nothing trained");
        // the process exits with 3 (out of memory / does not fit), the plan on stdout, the reason on stderr
        var (code, _, log) = RunCli(["train", "neg", "--base", baseDir, "--data", teacher, "--out", Path.Combine(dir, "t"), "--steps", "1",
            "--micro-batch", "4", "--effective-batch", "4", "--cutoff", "128", "--memory-limit", "0.0001"], killWhen: null);
        Assert.That(code, Is.EqualTo(3), log);
        Assert.That(log, Does.Contain("does not fit: the plan needs").And.Contain("lower --micro-batch"));
        // with room it trains, printing the plan first
        var (rc, text) = Capture(() => TrainVerb.Run(t with { MemoryLimitGb = 0 }, CancellationToken.None));
        Assert.That(rc, Is.EqualTo(0));
        Assert.That(text, Does.Contain("memory plan: neg: LoRA training, BF16 weights, micro-batch 4 × 128 tokens"));
    }

    /// <summary>Runs `negdistill pipeline` as a child process (the CLI's dll sits beside the tests), kills it
    /// (SIGKILL, no chance to checkpoint) once the given stage has written a checkpoint and before it
    /// finishes, reruns it to the end, and compares every final adapter with an uninterrupted run's.</summary>
    [Test]
    public void PipelineKilledMidStage_AndRerun_EndsWithTheSameAdapters()
    {
        var dir = TempDir();
        string baseDir = WriteBase(dir, DType.F32);
        string teacher = Path.Combine(dir, "teacher.jsonl");
        ArithmeticWorld.WriteTeacherJsonl(teacher, seed: 3, from: 0, count: 12);
        string Config(string name)
        {
            string path = Path.Combine(dir, name + ".json");
            File.WriteAllText(path, $$"""
                { "base": "{{baseDir}}", "teacher_data": "{{teacher}}", "out": "{{Path.Combine(dir, name)}}", "stages": ["neg", "nat"],
                  "train": { "steps": 24, "micro_batch": 2, "effective_batch": 4, "lr": 0.001, "cutoff": 96, "checkpoint_every": 2 } }
                """);
            return path;
        }
        string whole = Config("whole"), killed = Config("killed");
        Assert.That(RunCli(whole, killWhen: null).Rc, Is.EqualTo(0));

        // kill inside "nat": its checkpoint exists, its adapter does not
        string natState = Path.Combine(dir, "killed", "nat", Train.Trainer.StateFile), natAdapter = Path.Combine(dir, "killed", "nat", "adapter", "adapter_config.json");
        var first = RunCli(killed, killWhen: () => File.Exists(natState) && !File.Exists(natAdapter));
        Assert.That(first.Killed, Is.True, $"the run ended (rc {first.Rc}) before it could be killed mid-stage:\n{first.Log}");
        Assert.That(File.Exists(natAdapter), Is.False);
        var second = RunCli(killed, killWhen: null);
        Assert.That(second.Rc, Is.EqualTo(0), second.Log);
        Assert.That(second.Log, Does.Contain("neg: complete, skipped"));

        foreach (var stage in new[] { "neg", "nat" })
        {
            using var a = SafeTensors.Open(Path.Combine(dir, "whole", stage, "adapter", AdapterCheckpoint.WeightsFileName));
            using var b = SafeTensors.Open(Path.Combine(dir, "killed", stage, "adapter", AdapterCheckpoint.WeightsFileName));
            Assert.That(b.Names, Is.EquivalentTo(a.Names));
            foreach (var name in a.Names)
                Assert.That(b.ReadFloat32(name), Is.EqualTo(a.ReadFloat32(name)), $"{stage}: {name} differs after kill and rerun");
        }
    }

    static (int Rc, bool Killed, string Log) RunCli(string config, Func<bool>? killWhen) => RunCli(["pipeline", config], killWhen);

    internal static (int Rc, bool Killed, string Log) RunCli(string[] args, Func<bool>? killWhen)
    {
        string dll = Path.Combine(AppContext.BaseDirectory, "negdistill.dll");
        Assert.That(File.Exists(dll), Is.True, dll);
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in new[] { dll }.Concat(args)) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var log = new System.Text.StringBuilder();
        p.OutputDataReceived += (_, e) => { lock (log) log.AppendLine(e.Data); };
        p.ErrorDataReceived += (_, e) => { lock (log) log.AppendLine(e.Data); };
        p.BeginOutputReadLine(); p.BeginErrorReadLine();
        bool killed = false;
        var deadline = DateTime.UtcNow.AddMinutes(5);
        while (!p.HasExited && DateTime.UtcNow < deadline)
        {
            if (killWhen != null && killWhen()) { p.Kill(entireProcessTree: true); killed = true; break; }
            Thread.Sleep(5);
        }
        if (!p.WaitForExit(60_000)) { p.Kill(true); Assert.Fail("negdistill pipeline did not finish in time\n" + log); }
        p.WaitForExit();
        lock (log) return (killed ? -1 : p.ExitCode, killed, log.ToString());
    }
}

/// <summary>The training plans of the real stages (neg, NAT, NCE as `train` runs them) equal the most
/// bytes the CPU backend held at once during their first steps.</summary>
[TestFixture]
public class StagePlanTests
{
    [Test]
    public void NegNatNcePlans_EqualThePeakTheStagesAllocate()
    {
        var dir = FrontEndTests.TempDir();
        var cfg = FrontEndTests.ByteTiny;
        string baseDir = Path.Combine(dir, "base");
        using (var m = new LlamaModel(new CpuBackend(), cfg, DType.BF16, seed: 1)) ModelIO.SaveBase(m, baseDir);
        string teacher = Path.Combine(dir, "teacher.jsonl");
        ArithmeticWorld.WriteTeacherJsonl(teacher, seed: 3, from: 0, count: 8);
        var split = new Data.DatasetSplitter().SplitPath(teacher);
        var tok = new Data.ByteTokenizer();
        const int micro = 2, cutoff = 64;
        var neg = new LoraConfig { Rank = 4, Alpha = 8, Dropout = 0.1f, Targets = [Proj.q_proj, Proj.v_proj] };
        var pos = neg with { Rank = 8, Targets = [Proj.q_proj, Proj.v_proj] };
        StageContext Ctx(IBackend ops, LoraConfig lora) => new()
        {
            Ops = ops, Config = cfg, BaseDir = baseDir, OutDir = Path.Combine(dir, "out"), Tokenizer = tok, Weights = DType.BF16,
            Batcher = new Data.Batcher(tok, new Data.BatchingOptions { CutoffLength = cutoff, BatchSize = micro, Seed = 1, GroupByLength = false }),
            Train = new Train.TrainConfig { Steps = 1, MicroBatch = micro, EffectiveBatch = micro, LearningRate = 1e-3f, WarmupSteps = 0, CheckpointEvery = 1, Seed = 1 },
            Lora = lora, Positives = split.Positives, Negatives = split.Negatives,
        };
        // Every batch is padded to the cut-off here (all rationales are longer), so B × T = micro × cutoff.
        Assert.That(split.Positives.Concat(split.Negatives).All(p => tok.Encode(p.Question + "\n" + p.Rationale, true, true).Length >= cutoff), Is.True);

        var ops = new CpuBackend();
        Stages.LoraCe(Ctx(ops, neg), "neg", split.Negatives);
        var plan = MemoryPlan.ForTraining(cfg, DType.BF16, neg, micro, cutoff);
        Assert.That(plan.Total, Is.EqualTo(ops.PeakBytes), plan.Render("neg"));
        Assert.That(ops.LiveBytes, Is.Zero, "the stage frees everything it allocated");

        ops = new CpuBackend();
        Stages.Nat(Ctx(ops, pos));
        plan = MemoryPlan.ForTraining(cfg, DType.BF16, pos, micro, cutoff, stage: TrainingStage.Nat, nat: new MemoryPlan.NatPlan(neg, pos));
        Assert.That(plan.Total, Is.EqualTo(ops.PeakBytes), plan.Render("nat"));
        Assert.That(ops.LiveBytes, Is.Zero);

        ops = new CpuBackend();
        var natCtx = Ctx(ops, pos);
        Stages.Nce(natCtx, split.Positives);
        plan = MemoryPlan.ForTraining(cfg, DType.BF16, pos, micro, cutoff, stage: TrainingStage.Nce, nat: new MemoryPlan.NatPlan(neg, pos));
        Assert.That(plan.Total, Is.EqualTo(ops.PeakBytes), plan.Render("nce"));
        Assert.That(ops.LiveBytes, Is.Zero);
    }
}
