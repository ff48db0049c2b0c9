using System.Diagnostics;
using System.Text;
using NegDistill.Data;
using NegDistill.Data.Synthetic;
using NegDistill.Infer;
using NegDistill.Model;
using NegDistill.Runtime;
using NegDistill.Train;

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
    public bool Quick { get; init; }

    public DemoOptions Resolve() => Quick
        ? this with { TrainProblems = 80, TestProblems = 12, PretrainSteps = 12, StageSteps = 6, MicroBatch = 8 }
        : this;
}

/// <summary>
/// The embedded default: the project's own small world (arithmetic word problems and a noisy teacher
/// writing 8 rationales each in the authors' JSONL format), the exact MATH checker splitting them into
/// D_pos and D_neg, a tiny LLaMA trained from scratch on related text, LoRA students trained on that
/// base (CoT KD on D_pos, MIX on D_pos ∪ D_neg), and greedy accuracy on held-out problems.
/// The paper's own stages (neg → NAT → NCE → rank → ASC) plug into this same pipeline as they land.
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
        var curves = new List<(string Name, List<StepMetrics> History)>();

        var test = Enumerable.Range(1_000_000, opt.TestProblems).Select(i => ArithmeticWorld.Problem(opt.Seed, i)).ToList();

        // 3. base model from scratch on related text: other problems with their gold solutions
        string baseDir = Path.Combine(opt.Out, "base");
        using var model = new LlamaModel(ops, cfg, DType.F32, trainBase: true, seed: opt.Seed);
        var pretrainPairs = Enumerable.Range(500_000, Math.Max(opt.TrainProblems * 2, 200))
            .Select(i => ArithmeticWorld.Problem(opt.Seed, i))
            .Select(p => new Pair("Problem:\n" + p.Question, "Solution:\n" + p.GoldSolution, "Arithmetic", $"Level {p.Level}", true, p.Id)).ToList();
        var pre = Train("pretrain", model, batcher, pretrainPairs, opt.PretrainSteps, 3e-3f, Path.Combine(opt.Out, "pretrain"), opt, cancel);
        if (pre == null) return ExitCodes.Interrupted;
        curves.Add(("pretrain", pre));
        ModelIO.SaveBase(model, baseDir);
        results.Add(("base (pretrained, no distillation)", Accuracy(model, tok, test), test.Count));

        // 4. students: LoRA on the frozen base
        using var student = new LlamaModel(ops, cfg, DType.F32, trainBase: false, seed: opt.Seed);
        ModelIO.LoadBase(student, baseDir);
        var lora = new LoraConfig();
        foreach (var (name, pairs) in new[] { ("CoT KD", split.Positives), ("MIX", split.Positives.Concat(split.Negatives).ToList()) })
        {
            student.ClearAdapters();
            student.AddLora(lora, seed: opt.Seed + 7);
            string dir = Path.Combine(opt.Out, name.Replace(" ", "").ToLowerInvariant());
            var h = Train(name, student, batcher, pairs, opt.StageSteps, 3e-3f, dir, opt, cancel);
            if (h == null) return ExitCodes.Interrupted;
            curves.Add((name, h));
            ModelIO.SaveLora(student, Path.Combine(dir, "adapter"), lora, baseModel: baseDir);
            results.Add((name, Accuracy(student, tok, test), test.Count));
        }

        // 5. report
        Console.WriteLine();
        Console.WriteLine(LossTable(curves));
        var table = ResultTable(results);
        Console.WriteLine(table);
        File.WriteAllText(Path.Combine(opt.Out, "results.md"), table);
        Console.WriteLine($"done in {total.Elapsed:mm\\:ss}; adapters and metrics under {opt.Out}");
        Console.WriteLine("The paper's NAT, NCE and ASC stages are not in this run yet (see README, 'Status').");
        return ExitCodes.Ok;
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
        var outs = GreedyDecoder.Generate(model, prompts, maxNewTokens: 96, eos: tok.EosId, pad: tok.PadId, batchSize: 64);
        int correct = 0;
        for (int i = 0; i < test.Count; i++)
            if (MathChecker.IsCorrect(tok.Decode(outs[i]), test[i].GoldSolution)) correct++;
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
