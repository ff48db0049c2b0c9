using System.Diagnostics;
using System.Text.Json;
using NegDistill.Checkpoints;
using NegDistill.Data.Evaluation;
using NegDistill.Data.Synthetic;
using NegDistill.Method;
using NegDistill.Method.Settings;
using NegDistill.Method.Stages;
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

    /// <summary>What <paramref name="body"/> reported.</summary>
    static string Capture(Action<IReporter> body)
    {
        var sw = new StringWriter();
        body(new TextReporter(sw));
        return sw.ToString();
    }

    static EvalJob Job(string baseDir, string data, EvalSettings s, string outDir, ulong seed = 1, long? deviceBytes = null, IReporter? report = null) => new()
    {
        Ops = new CpuBackend(), Base = BaseModel.Open(baseDir), Settings = s with { Data = data }, OutDir = outDir, Seed = seed,
        DeviceBytes = deviceBytes, Report = report ?? new TextReporter(TextWriter.Null),
    };

    [Test]
    public void SampleThenVote_GivesEvalsTable_AndCheckpointsLoadInTheirStoragePrecision()
    {
        var dir = TempDir();
        string data = WriteGsm8k(dir, 5);
        foreach (var dt in new[] { DType.BF16, DType.F16 })
        {
            string baseDir = WriteBase(dir, dt);
            Assert.That(ModelIO.StorageDType(baseDir), Is.EqualTo(dt));
            // BF16 weights with a BF16 KV cache and shared prompts; F16 weights with the CPU's own (auto: F32), each candidate its own prompt
            var s = new EvalSettings { Task = "gsm8k", N = 4, MaxNewTokens = 12, KvCache = dt == DType.BF16 ? "bf16" : "auto", SharePrompt = dt == DType.BF16 };
            string outDir = Path.Combine(dir, $"sample-{dt}");
            var questions = TestSet.Load(AnswerTask.Gsm8k, data, 0);
            string text = Capture(r => Evaluation.Sample(Job(baseDir, data, s, outDir, 5, report: r), questions, greedy: false));
            Assert.That(text, Does.Contain($"memory plan: sampling 5 questions × 4 candidates, {dt} weights"));
            Assert.That(text, Does.Contain("KV cache (20 slots × "));
            Assert.That(text, Does.Match(dt == DType.BF16 ? @"KV cache \(20 slots × 12 positions \+ \d+ shared prompts × \d+, BF16\)" : @"KV cache \(20 slots × \d+ positions, F32\)"));
            Assert.That(text, Does.Contain($"adapter: none (the base model {baseDir})"));
            string cands = Asc.CandidatesPath(outDir, "base");
            Assert.That(File.ReadAllLines(cands), Has.Length.EqualTo(20));

            // eval on the same settings samples nothing new and votes on the same file
            var (sampled, md) = Evaluation.Evaluate(Job(baseDir, data, s, outDir, 5), questions);
            Assert.That(string.Join("\n", sampled.Log), Does.Contain("all 20 candidates already in"));
            Assert.That(md, Does.Contain("base greedy"));
            Assert.That(File.ReadAllLines(cands), Has.Length.EqualTo(20));

            string sc = Evaluation.Vote(VoteMethod.Sc, cands, AnswerTask.Gsm8k, questions, 16, "--data");
            Assert.That(sc, Does.Contain("SC voting on 5 questions (20 candidates"));
            foreach (int n in new[] { 1, 2, 4 }) Assert.That(sc, Does.Contain($"\n| {n} | "));
            Assert.That(sc, Does.Not.Contain("\n| 8 | "));
            // ASC without M_rank scores is refused with the reason
            var ex = Assert.Throws<InvalidDataException>(() => Evaluation.Vote(VoteMethod.Asc, cands, AnswerTask.Gsm8k, questions, 16, "--data"));
            Assert.That(ex!.Message, Does.Contain("ASC needs every candidate scored by M_rank"));
            // an unknown method is refused by the verb, before any work
            var (code, _, log) = RunCli(["vote", "majority", "--candidates", cands, "--data", data, "--task", "gsm8k"], killWhen: null);
            Assert.That(code, Is.EqualTo(2), log);
            Assert.That(log, Does.Contain("method: 'majority' is not sc, ws or asc"));
        }
    }

    [Test]
    public void PlansThatDoNotFit_AreRefusedBeforeLoading_NamingWhatToLower()
    {
        var dir = TempDir();
        string baseDir = WriteBase(dir, DType.BF16), data = WriteGsm8k(dir, 3);
        string outDir = Path.Combine(dir, "s");
        var job = Job(baseDir, data, new EvalSettings { Task = "gsm8k", N = 2, MaxNewTokens = 8 }, outDir, deviceBytes: 100_000);
        var ex = Assert.Throws<PlanDoesNotFitException>(() => Evaluation.Sample(job, TestSet.Load(AnswerTask.Gsm8k, data, 0), greedy: false));
        Assert.That(ex!.Message, Does.Contain("lower --slots, --max-new"));
        Assert.That(File.Exists(Asc.CandidatesPath(outDir, "base")), Is.False, "nothing sampled");

        string teacher = Path.Combine(dir, "teacher.jsonl");
        ArithmeticWorld.WriteTeacherJsonl(teacher, seed: 3, from: 0, count: 6);
        var run = new RunSettings { Base = baseDir, TeacherData = teacher, Out = Path.Combine(dir, "t"), Stages = ["neg"] };
        var train = new TrainSettings { Steps = 1, MicroBatch = 4, EffectiveBatch = 4, Cutoff = 128 };
        var ex2 = Assert.Throws<PlanDoesNotFitException>(() => Pipeline.Train(run, train, new LoraSettings(), new DeviceSettings { MemoryLimitGb = 1e-4 }, new TextReporter(TextWriter.Null), CancellationToken.None));
        Assert.That(ex2!.Message, Does.Contain("lower --micro-batch"));
        Assert.That(Directory.Exists(Path.Combine(dir, "t", "neg")), Is.False, "nothing trained");
        // the process exits with 3 (out of memory / does not fit), the plan on stdout, the reason on stderr
        var (code, _, log) = RunCli(["train", "neg", "--base", baseDir, "--data", teacher, "--out", Path.Combine(dir, "t"), "--steps", "1",
            "--micro-batch", "4", "--effective-batch", "4", "--cutoff", "128", "--memory-limit", "0.0001"], killWhen: null);
        Assert.That(code, Is.EqualTo(3), log);
        Assert.That(log, Does.Contain("does not fit: the plan needs").And.Contain("lower --micro-batch"));
        // with room it trains, printing the plan first
        string text = Capture(r => Pipeline.Train(run, train, new LoraSettings(), new DeviceSettings(), r, CancellationToken.None));
        Assert.That(text, Does.Contain("memory plan: neg: LoRA training, BF16 weights, micro-batch 4 × 128 tokens"));
        Assert.That(File.Exists(Path.Combine(dir, "t", "neg", "adapter", "adapter_config.json")), Is.True);
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
            // nothing left behind: each step logged once, no temporary file of an interrupted write
            var steps = Train.Trainer.ReadMetrics(Path.Combine(dir, "killed", stage, Train.Trainer.MetricsFile)).Select(m => m.Step);
            Assert.That(File.ReadAllLines(Path.Combine(dir, "killed", stage, Train.Trainer.MetricsFile)), Has.Length.EqualTo(24), stage);
            Assert.That(steps, Is.EqualTo(Enumerable.Range(1, 24)), stage);
            foreach (var f in Directory.GetFiles(Path.Combine(dir, "killed", stage), "*", SearchOption.AllDirectories))
                Assert.That(AtomicFile.IsTempFileName(Path.GetFileName(f)), Is.False, f);
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
            Ops = ops, Base = new BaseModel(baseDir, cfg, tok, DType.BF16), OutDir = Path.Combine(dir, "out"), TeacherData = teacher,
            Batcher = new Data.Batcher(tok, new Data.BatchingOptions { CutoffLength = cutoff, BatchSize = micro, Seed = 1, GroupByLength = false }),
            Loop = new Train.TrainConfig { Steps = 1, MicroBatch = micro, EffectiveBatch = micro, LearningRate = 1e-3f, WarmupSteps = 0, CheckpointEvery = 1, Seed = 1 },
            Lora = lora, Positives = split.Positives, Negatives = split.Negatives,
        };
        // Every batch is padded to the cut-off here (all rationales are longer), so B × T = micro × cutoff.
        Assert.That(split.Positives.Concat(split.Negatives).All(p => tok.Encode(p.Question + "\n" + p.Rationale, true, true).Length >= cutoff), Is.True);

        var ops = new CpuBackend();
        new NegStage().Run(Ctx(ops, neg));
        var plan = MemoryPlan.ForTraining(cfg, DType.BF16, neg, micro, cutoff);
        Assert.That(plan.Total, Is.EqualTo(ops.PeakBytes), plan.Render("neg"));
        Assert.That(ops.LiveBytes, Is.Zero, "the stage frees everything it allocated");

        ops = new CpuBackend();
        new NatStage().Run(Ctx(ops, pos));
        plan = MemoryPlan.ForTraining(cfg, DType.BF16, pos, micro, cutoff, stage: TrainingStage.Nat, nat: new MemoryPlan.NatPlan(neg, pos));
        Assert.That(plan.Total, Is.EqualTo(ops.PeakBytes), plan.Render("nat"));
        Assert.That(ops.LiveBytes, Is.Zero);

        ops = new CpuBackend();
        new NceStage().Distil(Ctx(ops, pos), split.Positives);
        plan = MemoryPlan.ForTraining(cfg, DType.BF16, pos, micro, cutoff, stage: TrainingStage.Nce, nat: new MemoryPlan.NatPlan(neg, pos));
        Assert.That(plan.Total, Is.EqualTo(ops.PeakBytes), plan.Render("nce"));
        Assert.That(ops.LiveBytes, Is.Zero);
    }
}
