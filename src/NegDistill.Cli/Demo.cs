using System.Diagnostics;
using System.Text;
using NegDistill.Data;
using NegDistill.Data.Evaluation;
using NegDistill.Data.Synthetic;
using NegDistill.Infer;
using NegDistill.Model;
using NegDistill.Runtime;
using NegDistill.Train;
using NegDistill.Cli.Pipeline;

namespace NegDistill.Cli;

/// <summary>Settings of the embedded default run.</summary>
sealed record DemoOptions
{
    public string Out { get; init; } = "runs/demo";
    public string Device { get; init; } = "cpu";
    public ulong Seed { get; init; } = 1;
    public int TrainProblems { get; init; } = 400;
    public int TestProblems { get; init; } = 60;
    public int PretrainSteps { get; init; } = 200;
    public int StageSteps { get; init; } = 150;
    public int MicroBatch { get; init; } = 16;
    public int AugmentQuestions { get; init; } = 400;
    public int Samples { get; init; } = 16;
    public bool Quick { get; init; }

    public DemoOptions Resolve() => Quick
        ? this with { TrainProblems = 80, TestProblems = 12, PretrainSteps = 12, StageSteps = 6, MicroBatch = 8, AugmentQuestions = 8, Samples = 4 }
        : this;
}

/// <summary>
/// The embedded default: the project's own small world (arithmetic word problems and a noisy teacher
/// writing 8 rationales each in the authors' JSONL format), the exact MATH checker splitting them into
/// D_pos and D_neg, a tiny LLaMA trained from scratch on related text, LoRA students trained on that
/// base: the paper's stages (neg → NAT → self-augmentation → NCE → M_rank) and the CoT KD and MIX
/// baselines, and greedy accuracy of each on held-out problems.
/// </summary>
static class Demo
{
    /// <summary>The demo's base: small enough to train from scratch in minutes on 2 cores.</summary>
    public static LlamaConfig Shape(int vocab) => new() { Dim = 128, Layers = 4, Heads = 4, FfnDim = 344, Vocab = vocab, MaxSeq = 256 };

    public static int Run(DemoOptions opt0, CancellationToken cancel)
    {
        var opt = opt0.Resolve();
        var total = Stopwatch.StartNew();
        Directory.CreateDirectory(opt.Out);
        Console.WriteLine($"NegDistill demo → {Path.GetFullPath(opt.Out)}  (device {opt.Device}, seed {opt.Seed}{(opt.Quick ? ", quick" : "")})");

        // 1. the world and its teacher
        string teacherPath = Path.Combine(opt.Out, "data", "teacher.jsonl");
        ArithmeticWorld.WriteTeacherJsonl(teacherPath, opt.Seed, 0, opt.TrainProblems);
        var split = new DatasetSplitter().SplitPath(teacherPath);
        Console.WriteLine();
        Console.WriteLine(SplitReport.Render(split.Summary, teacherPath));

        // 2. tokenizer, batching
        var tok = new ByteTokenizer();
        var batching = new BatchingOptions { CutoffLength = 192, BatchSize = opt.MicroBatch, Seed = opt.Seed };
        var batcher = new Batcher(tok, batching);
        var cfg = Shape(tok.VocabSize);
        using var ops = Backends.Create(opt.Device);
        var results = new List<(string Method, int Correct, int N)>();

        var test = Enumerable.Range(1_000_000, opt.TestProblems).Select(i => ArithmeticWorld.Problem(opt.Seed, i)).ToList();

        // 3. base model from scratch on related text: other problems with their gold solutions
        string baseDir = Path.Combine(opt.Out, "base");
        if (!File.Exists(Path.Combine(baseDir, "config.json")))
        {
            using var model = new LlamaModel(ops, cfg, DType.F32, trainBase: true, seed: opt.Seed);
            var pretrainPairs = Enumerable.Range(500_000, Math.Max(opt.TrainProblems * 2, 200))
                .Select(i => ArithmeticWorld.Problem(opt.Seed, i))
                .Select(p => new Pair("Problem:\n" + p.Question, "Solution:\n" + p.GoldSolution, "Arithmetic", $"Level {p.Level}", true, p.Id)).ToList();
            var pre = Train("pretrain", model, batcher, pretrainPairs, opt.PretrainSteps, 3e-3f, Path.Combine(opt.Out, "pretrain"), opt, cancel);
            if (pre == null) return ExitCodes.Interrupted;
            ModelIO.SaveBase(model, baseDir);
        }
        else Console.WriteLine("base: complete, skipped");

        // 4. the stages, each a LoRA on the frozen base
        var ctx = new StageContext
        {
            Ops = ops, Config = cfg, BaseDir = baseDir, OutDir = opt.Out, Tokenizer = tok, Batcher = batcher, Cancel = cancel,
            Train = new TrainConfig
            {
                Steps = opt.StageSteps, MicroBatch = opt.MicroBatch, EffectiveBatch = opt.MicroBatch, LearningRate = 3e-3f,
                WarmupSteps = Math.Max(1, opt.StageSteps / 10), CheckpointEvery = Math.Max(1, opt.StageSteps / 4), Seed = opt.Seed,
            },
            Lora = new LoraConfig(), Positives = split.Positives, Negatives = split.Negatives,
        };
        try
        {
            Stages.LoraCe(ctx, "neg", split.Negatives);                              // step 1.1
            Stages.Nat(ctx);                                                         // step 1.2
            var augmented = Stages.SelfAugment(ctx, teacherPath, opt.AugmentQuestions, maxNew: 96); // step 2, self-augmentation
            Stages.Nce(ctx, augmented);                                              // step 2, calibrated distillation
            Stages.LoraCe(ctx, "kd", split.Positives);                               // baseline CoT KD
            Stages.LoraCe(ctx, "mix", split.Positives.Concat(split.Negatives).ToList()); // baseline MIX
            var held = new DatasetSplitter().Split(Enumerable.Range(2_000_000, Math.Max(10, opt.TestProblems / 2))
                .Select(i => HeldOutRecord(opt.Seed, i)));
            var (rankAcc, rankAuc) = Stages.Rank(ctx, held.Positives, held.Negatives);   // step 3, M_rank
            ctx.Log.Add($"ranking model: held-out accuracy {100 * rankAcc:F1} %, AUC {rankAuc:F3} on {held.Positives.Count + held.Negatives.Count} unseen rationales");
        }
        catch (StageInterrupted e) { Console.WriteLine(e.Message); return ExitCodes.Interrupted; }

        // 5. greedy accuracy of every model on the held-out problems
        using (var bm = Stages.LoadBase(ctx)) results.Add(("base (pretrained, no distillation)", Accuracy(bm, tok, test), test.Count));
        foreach (var (name, stage) in new[] { ("CoT KD (LoRA on D_pos)", "kd"), ("MIX (LoRA on D_pos ∪ D_neg)", "mix"), ("NCE student", "nce") })
        {
            using var m = Stages.LoadBase(ctx);
            ModelIO.LoadLora(m, ctx.AdapterDir(stage));
            results.Add((name, Accuracy(m, tok, test), test.Count));
        }
        using (var nat = Stages.LoadNat(ctx)) results.Add(("NAT (LoRA_neg + LoRA_pos + integration)", Accuracy(nat, tok, test), test.Count));

        // 6. step 3: N candidates per question from the NCE student, scored by M_rank, SC / WS / ASC
        // the reference is the integer answer itself: the numeric checker compares it with each candidate's boxed answer
        var testQs = test.Select(p => new TestQuestion(p.Id, "arithmetic", "Problem:\n" + p.Question + "\nSolution:\n", "Problem:\n" + p.Question,
            p.Answer.ToString(System.Globalization.CultureInfo.InvariantCulture))).ToList();
        string ascTable;
        using (var nce = Stages.LoadBase(ctx))
        {
            ModelIO.LoadLora(nce, ctx.AdapterDir("nce"));
            // the synthetic world is graded with the numeric (GSM8K) checker; its column is renamed to say what it holds
            ascTable = Asc.Run(nce, tok, pairs => Stages.Score(ctx, pairs), AnswerTask.Gsm8k, testQs, opt.Samples, maxNew: 96,
                Asc.DefaultTemperature, opt.Seed, ctx.Dir("asc"), "nce-student", ctx.Log).Replace("GSM8K", "synthetic arithmetic");
        }

        // 7. report
        Console.WriteLine();
        var curves = Curves(opt.Out);
        Console.WriteLine(LossTable(curves));
        foreach (var line in ctx.Log) Console.WriteLine(line);
        var table = ResultTable(results);
        Console.WriteLine(table);
        Console.WriteLine(ascTable);
        File.WriteAllText(Path.Combine(opt.Out, "results.md"), table + "\n" + ascTable + "\n" + string.Join("\n", ctx.Log) + "\n");
        WritePlots(opt.Out, curves);
        Console.WriteLine($"done in {total.Elapsed:mm\\:ss}; adapters, metrics and plots under {opt.Out}");
        return ExitCodes.Ok;
    }

    static TeacherRecord HeldOutRecord(ulong seed, int i)
    {
        var p = ArithmeticWorld.Problem(seed, i);
        var gen = ArithmeticWorld.Teacher(p, seed).Select(t => (string?)t.Text).ToList();
        return new TeacherRecord("Problem:\n" + p.Question, p.GoldSolution, gen, $"Level {p.Level}", "Arithmetic", "held-out", i);
    }

    /// <summary>Loss curves read back from each stage's metrics.jsonl (so a resumed run still has the
    /// steps it skipped); the last record of a step wins (a resumed run rewrites steps after its checkpoint).</summary>
    static List<(string Name, List<StepMetrics> History)> Curves(string outDir)
    {
        var r = new List<(string, List<StepMetrics>)>();
        foreach (var stage in new[] { "pretrain", "neg", "nat", "nce", "kd", "mix", "rank" })
        {
            string f = Path.Combine(outDir, stage, Trainer.MetricsFile);
            if (!File.Exists(f)) continue;
            var bySteps = new SortedDictionary<int, StepMetrics>();
            foreach (var line in File.ReadLines(f))
            {
                using var d = System.Text.Json.JsonDocument.Parse(line);
                var e = d.RootElement;
                int step = e.GetProperty("step").GetInt32();
                bySteps[step] = new StepMetrics(step, 0, e.GetProperty("loss").GetDouble(), e.GetProperty("grad_norm").GetDouble(),
                    (float)e.GetProperty("lr").GetDouble(), e.GetProperty("tokens_per_s").GetDouble(), null, TimeSpan.Zero);
            }
            r.Add((stage, bySteps.Values.ToList()));
        }
        return r;
    }

    static void WritePlots(string outDir, List<(string Name, List<StepMetrics> History)> curves)
    {
        var series = curves.Select(c => new PlotSeries(c.Name, c.History.Select(h => (double)h.Step).ToList(), c.History.Select(h => h.Loss).ToList())).ToArray();
        LinePlot.Save(Path.Combine(outDir, "loss_curves.png"), "training loss", "step", "loss", series);
        string alpha = Path.Combine(outDir, "nat", "alpha.jsonl");
        if (!File.Exists(alpha)) return;
        var rows = File.ReadLines(alpha).Select(l => System.Text.Json.JsonDocument.Parse(l).RootElement)
            .Select(e => (Step: e.GetProperty("step").GetInt32(), Layer: e.GetProperty("layer").GetInt32(), Proj: e.GetProperty("proj").GetString()!, Mean: e.GetProperty("alpha_mean").GetDouble()))
            .ToList();
        var alphaSeries = rows.GroupBy(r => $"layer {r.Layer} {r.Proj}")
            .Select(g => new PlotSeries(g.Key, g.Select(r => (double)r.Step).ToList(), g.Select(r => r.Mean).ToList())).ToArray();
        LinePlot.Save(Path.Combine(outDir, "alpha_per_layer.png"), "NAT: mean α per layer (α < 0 pushes away from LoRA_neg)", "step", "mean α", alphaSeries);
    }

    static List<StepMetrics>? Train(string name, LlamaModel model, Batcher batcher, IReadOnlyList<Pair> pairs, int steps, float lr,
        string dir, DemoOptions opt, CancellationToken cancel)
    {
        var examples = batcher.EncodeAll(pairs);
        var source = new BatchSource(batcher, examples);
        var tc = new TrainConfig
        {
            Steps = steps, MicroBatch = opt.MicroBatch, EffectiveBatch = opt.MicroBatch, LearningRate = lr,
            WarmupSteps = Math.Max(1, steps / 10), CheckpointEvery = Math.Max(1, steps / 4), Seed = opt.Seed,
        };
        var tr = new Trainer(model, new CrossEntropyHead(), tc, dir);
        var bar = new ProgressLine(name, steps);
        tr.StepDone += m => bar.Update(m.Step, $"loss {m.Loss:F3}  {m.TokensPerSecond:F0} tok/s");
        bool done = tr.Run(source, cancel: cancel);
        bar.Finish();
        if (!done) { Console.WriteLine($"{name}: interrupted at step {tr.Step}; rerun the same command to resume"); return null; }
        return tr.History;
    }

    static int Accuracy(LlamaModel model, ITokenizer tok, IReadOnlyList<WorldProblem> test)
    {
        var prompts = test.Select(p => tok.Encode("Problem:\n" + p.Question + "\nSolution:\n", true, false)).ToList();
        var outs = Asc.Greedy(model, tok, prompts, maxNew: 96);
        int correct = 0;
        for (int i = 0; i < test.Count; i++)
            if (MathChecker.IsCorrect(tok.Decode(outs[i].Tokens), test[i].GoldSolution)) correct++;
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

    static string LossTable(List<(string Name, List<StepMetrics> History)> curves)
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
