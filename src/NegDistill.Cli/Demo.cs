using System.CommandLine;
using System.Diagnostics;
using System.Text;
using System.Text.Json;
using NegDistill.Data;
using NegDistill.Data.Evaluation;
using NegDistill.Data.Synthetic;
using NegDistill.Method;
using NegDistill.Method.Settings;
using NegDistill.Method.Sources;
using NegDistill.Method.Stages;
using NegDistill.Model;
using NegDistill.Runtime;
using NegDistill.Train;

namespace NegDistill.Cli;

/// <summary>Settings of the embedded default run: the size of its world and how long each part trains.</summary>
sealed record DemoSettings
{
    public string Out { get; init; } = "runs/demo";
    public ulong Seed { get; init; } = 1;
    public bool Quick { get; init; }
    public int TrainProblems { get; init; } = 400;
    public int TestProblems { get; init; } = 60;
    public int PretrainSteps { get; init; } = 200;
    public int StageSteps { get; init; } = 150;
    public int MicroBatch { get; init; } = 16;
    public int AugmentQuestions { get; init; } = 400;
    public int Samples { get; init; } = 16;

    public static class Keys
    {
        public static readonly SettingInfo Out = new("--out", null, "output folder");
        public static readonly SettingInfo Seed = new("--seed", null, "seed of the world, the initialisation and the data order");
        public static readonly SettingInfo Quick = new("--quick", null, "a shortened run (seconds) that exercises every step; for CI");
    }

    public DemoSettings Resolve() => Quick
        ? this with { TrainProblems = 80, TestProblems = 12, PretrainSteps = 12, StageSteps = 6, MicroBatch = 8, AugmentQuestions = 8, Samples = 4 }
        : this;

    /// <summary>How every stage of the demo trains: a short run at a higher learning rate than the paper's.</summary>
    public TrainSettings Stages => new()
    {
        Steps = StageSteps, MicroBatch = MicroBatch, EffectiveBatch = MicroBatch, Lr = 3e-3f, WarmupSteps = Math.Max(1, StageSteps / 10),
        CheckpointEvery = Math.Max(1, StageSteps / 4), Cutoff = 192, AugmentQuestions = AugmentQuestions, AugmentMaxNewTokens = 96,
    };
}

/// <summary>
/// The embedded default: the project's own small world (arithmetic word problems and a noisy teacher
/// writing 8 rationales each in the authors' JSONL format), the exact MATH checker splitting them into
/// D_pos and D_neg, a tiny LLaMA trained from scratch on related text, then the paper's stages
/// (neg → NAT → self-augmentation → NCE → M_rank) and the CoT KD and MIX baselines through the same
/// runner as `train` and `pipeline`, greedy accuracy of each on held-out problems, and step 3's votes.
/// </summary>
static class Demo
{
    /// <summary>The demo's base: small enough to train from scratch in minutes on 2 cores.</summary>
    public static LlamaConfig Shape(int vocab) => new() { Dim = 128, Layers = 4, Heads = 4, FfnDim = 344, Vocab = vocab, MaxSeq = 256 };

    public static Command Build()
    {
        var cmd = new Command("demo", "Run the embedded default end to end on this machine: generated problems, a noisy teacher, the split, a tiny LLaMA from scratch, the method's stages and baselines, greedy accuracy and SC / WS / ASC.");
        var demo = new Bound<DemoSettings>(new DemoSettings());
        demo.Add(cmd, DemoSettings.Keys.Out, s => s.Out, (s, v) => s with { Out = v });
        demo.Add(cmd, DemoSettings.Keys.Seed, s => s.Seed, (s, v) => s with { Seed = v });
        demo.Add(cmd, DemoSettings.Keys.Quick, s => s.Quick, (s, v) => s with { Quick = v });
        var dev = new Bound<DeviceSettings>(new DeviceSettings());
        dev.Add(cmd, DeviceSettings.Keys.Device, s => s.Device, (s, v) => s with { Device = v });
        cmd.SetAction(r => Cli.Guarded(ct => Run(demo.Bind(r), dev.Bind(r), Cli.Console, ct)));
        return cmd;
    }

    public static int Run(DemoSettings opt0, DeviceSettings device, IReporter report, CancellationToken cancel)
    {
        var opt = opt0.Resolve();
        var check = new SettingsCheck(SettingSource.CommandLine);
        device.Check(check);
        check.Require(!File.Exists(opt.Out), DemoSettings.Keys.Out, $"'{opt.Out}' is a file; the output must be a folder");
        var train = opt.Stages;
        train.Check(check);
        check.ThrowIfAny();
        var total = Stopwatch.StartNew();
        Pipeline.RequireWritable(opt.Out, DemoSettings.Keys.Out, SettingSource.CommandLine);
        report.Line($"NegDistill demo → {Path.GetFullPath(opt.Out)}  (device {device.Device}, seed {opt.Seed}{(opt.Quick ? ", quick" : "")})");

        // 1. the world and its teacher
        string teacherPath = Path.Combine(opt.Out, "data", "teacher.jsonl");
        ArithmeticWorld.WriteTeacherJsonl(teacherPath, opt.Seed, 0, opt.TrainProblems);
        var split = new DatasetSplitter().SplitPath(teacherPath);
        report.Line("");
        report.Line(SplitReport.Render(split.Summary, teacherPath));

        // 2. tokenizer, batching, the backend (once, for everything below)
        var tok = new ByteTokenizer();
        var batcher = new Batcher(tok, new BatchingOptions { CutoffLength = train.Cutoff, BatchSize = opt.MicroBatch, Seed = opt.Seed });
        var cfg = Shape(tok.VocabSize);
        using var ops = Backends.Create(device.Device);
        var test = Enumerable.Range(1_000_000, opt.TestProblems).Select(i => ArithmeticWorld.Problem(opt.Seed, i)).ToList();

        // 3. base model from scratch on related text: other problems with their gold solutions
        string baseDir = Path.Combine(opt.Out, "base");
        if (!File.Exists(Path.Combine(baseDir, "config.json")))
        {
            using var model = new LlamaModel(ops, cfg, DType.F32, trainBase: true, seed: opt.Seed);
            var pretrainPairs = Enumerable.Range(500_000, Math.Max(opt.TrainProblems * 2, 200))
                .Select(i => ArithmeticWorld.Problem(opt.Seed, i))
                .Select(p => new Pair(PromptFormat.Question(p.Question), PromptFormat.Rationale(p.GoldSolution), "Arithmetic", $"Level {p.Level}", true, p.Id)).ToList();
            var pretrain = train with { Steps = opt.PretrainSteps, Lr = 3e-3f, WarmupSteps = Math.Max(1, opt.PretrainSteps / 10), CheckpointEvery = Math.Max(1, opt.PretrainSteps / 4) };
            var tr = new Trainer(model, new CrossEntropyHead(), pretrain.ForTrainer(opt.Seed), Path.Combine(opt.Out, "pretrain"));
            Stage.Fit(report, "pretrain", tr, new BatchSource(batcher, batcher.EncodeAll(pretrainPairs)), cancel);
            ModelIO.SaveBase(model, baseDir);
        }
        else report.Line("base: complete, skipped");

        // 4. the stages, each a LoRA on the frozen base, through the runner `train` and `pipeline` use
        var ctx = new StageContext
        {
            Ops = ops, Base = new BaseModel(baseDir, cfg, tok, DType.F32), OutDir = opt.Out, Batcher = batcher, Report = report, Cancel = cancel,
            Loop = train.ForTrainer(opt.Seed), Lora = new LoraSettings().ToConfig(), Positives = split.Positives, Negatives = split.Negatives,
            TeacherData = teacherPath, AugmentQuestions = train.AugmentQuestions, AugmentMaxNewTokens = train.AugmentMaxNewTokens, CheckPlans = false,
        };
        var held = new DatasetSplitter().Split(Enumerable.Range(2_000_000, Math.Max(10, opt.TestProblems / 2)).Select(i => HeldOutRecord(opt.Seed, i)));
        Stage neg = new NegStage(), nat = new NatStage(), nce = new NceStage(), kd = new KdStage(), mix = new MixStage();
        Pipeline.Run(ctx, [neg, nat, nce, kd, mix, new RankStage(new RankStage.HeldOut(held.Positives, held.Negatives, "unseen rationales"))]);

        // 5. greedy accuracy of every model on the held-out problems
        var results = new List<(string Method, int Correct, int N)>();
        using (var bm = ctx.LoadBase()) results.Add(("base (pretrained, no distillation)", Accuracy(bm, tok, test), test.Count));
        foreach (var (name, stage) in new[] { ("CoT KD (LoRA on D_pos)", kd), ("MIX (LoRA on D_pos ∪ D_neg)", mix), ("NCE student", nce), ("NAT (LoRA_neg + LoRA_pos + integration)", nat) })
        {
            using var m = stage.Load(ctx);
            results.Add((name, Accuracy(m, tok, test), test.Count));
        }

        // 6. step 3: N candidates per question from the NCE student, scored by M_rank, SC / WS / ASC.
        // The reference is the integer answer itself: the numeric (GSM8K) checker compares it with each
        // candidate's boxed answer; its column is renamed to say what it holds.
        var testQs = test.Select(p => TestQuestion.FromProblem(p.Id, "arithmetic", p.Question, p.Answer.ToString(System.Globalization.CultureInfo.InvariantCulture))).ToList();
        var job = new EvalJob
        {
            Ops = ops, Base = ctx.Base, Student = nce.Result(ctx), Ranker = new RankStage().Result(ctx), OutDir = ctx.Dir("asc"), Seed = opt.Seed, Label = "nce-student",
            Settings = new EvalSettings { Task = "gsm8k", N = opt.Samples, MaxNewTokens = 96 }, ScoreCutoff = train.Cutoff, ScoreBatch = opt.MicroBatch,
            Report = report,
        };
        var (sampled, md) = Evaluation.Evaluate(job, testQs);
        ctx.Log.AddRange(sampled.Log);
        string ascTable = md.Replace("GSM8K", "synthetic arithmetic");

        // 7. report
        report.Line("");
        var curves = Curves(opt.Out);
        report.Line(LossTable(curves));
        foreach (var line in ctx.Log) report.Line(line);
        var table = ResultTable(results);
        report.Line(table);
        report.Line(ascTable);
        File.WriteAllText(Path.Combine(opt.Out, "results.md"), table + "\n" + ascTable + "\n" + string.Join("\n", ctx.Log) + "\n");
        WritePlots(opt.Out, curves);
        report.Line($"done in {total.Elapsed:mm\\:ss}; adapters, metrics and plots under {opt.Out}");
        return ExitCodes.Ok;
    }

    static TeacherRecord HeldOutRecord(ulong seed, int i)
    {
        var p = ArithmeticWorld.Problem(seed, i);
        var gen = ArithmeticWorld.Teacher(p, seed).Select(t => (string?)t.Text).ToList();
        return new TeacherRecord(PromptFormat.Question(p.Question), p.GoldSolution, gen, $"Level {p.Level}", "Arithmetic", "held-out", i);
    }

    /// <summary>Loss curves read back from each stage's metrics.jsonl (so a resumed run still has the
    /// steps it skipped).</summary>
    static List<(string Name, IReadOnlyList<MetricsRecord> History)> Curves(string outDir) =>
        new[] { "pretrain", "neg", "nat", "nce", "kd", "mix", "rank" }
            .Select(stage => (stage, Path.Combine(outDir, stage, Trainer.MetricsFile)))
            .Where(x => File.Exists(x.Item2))
            .Select(x => (x.stage, Trainer.ReadMetrics(x.Item2))).ToList();

    static void WritePlots(string outDir, List<(string Name, IReadOnlyList<MetricsRecord> History)> curves)
    {
        var series = curves.Select(c => new PlotSeries(c.Name, c.History.Select(h => (double)h.Step).ToList(), c.History.Select(h => h.Loss).ToList())).ToArray();
        LinePlot.Save(Path.Combine(outDir, "loss_curves.png"), "training loss", "step", "loss", series);
        string alpha = Path.Combine(outDir, "nat", NatStage.AlphaLog);
        if (!File.Exists(alpha)) return;
        var rows = File.ReadLines(alpha).Select(l => JsonSerializer.Deserialize(l, MethodJson.Default.AlphaRecord)!).ToList();
        var alphaSeries = rows.GroupBy(r => $"layer {r.Layer} {r.Proj}")
            .Select(g => new PlotSeries(g.Key, g.Select(r => (double)r.Step).ToList(), g.Select(r => r.AlphaMean).ToList())).ToArray();
        LinePlot.Save(Path.Combine(outDir, "alpha_per_layer.png"), "NAT: mean α per layer (α < 0 pushes away from LoRA_neg)", "step", "mean α", alphaSeries);
    }

    static int Accuracy(LlamaModel model, ITokenizer tok, IReadOnlyList<WorldProblem> test)
    {
        var prompts = test.Select(p => tok.Encode(PromptFormat.Prompt(PromptFormat.Question(p.Question)), true, false)).ToList();
        var outs = Asc.Greedy(model, tok, prompts, maxNew: 96);
        int correct = 0;
        for (int i = 0; i < test.Count; i++)
            if (MathChecker.IsCorrect(PromptFormat.Rationale(tok.Decode(outs[i].Tokens)), test[i].GoldSolution)) correct++;
        return correct;
    }

    /// <summary>Wilson score interval at 95%.</summary>
    public static (double Lo, double Hi) Wilson(int k, int n)
    {
        if (n == 0) return (0, 0);
        const double z = 1.96;
        double p = (double)k / n, d = 1 + z * z / n;
        double c = (p + z * z / (2 * n)) / d, h = z * Math.Sqrt(p * (1 - p) / n + z * z / (4.0 * n * n)) / d;
        return (Math.Max(0, c - h), Math.Min(1, c + h));
    }

    static string ResultTable(List<(string Method, int Correct, int N)> rows)
    {
        var sb = new StringBuilder();
        sb.AppendLine($"| method | greedy accuracy % | 95% CI (Wilson) | test problems |");
        sb.AppendLine("|---|---|---|---|");
        foreach (var (m, k, n) in rows)
        {
            var (lo, hi) = Wilson(k, n);
            sb.AppendLine($"| {m} | {100.0 * k / n:F1} | {100 * lo:F1}–{100 * hi:F1} | {n} |");
        }
        return sb.ToString();
    }

    static string LossTable(List<(string Name, IReadOnlyList<MetricsRecord> History)> curves)
    {
        var sb = new StringBuilder("training loss (mean over each tenth of the run)\n");
        foreach (var (name, h) in curves)
        {
            sb.Append($"  {name,-9}");
            int parts = Math.Min(10, h.Count);
            for (int i = 0; i < parts; i++)
            {
                var seg = h.Skip(i * h.Count / parts).Take(Math.Max(1, (i + 1) * h.Count / parts - i * h.Count / parts));
                sb.Append($" {seg.Average(m => m.Loss),6:F3}");
            }
            sb.AppendLine();
        }
        return sb.ToString();
    }
}
