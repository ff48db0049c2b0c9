using NegDistill.Cli.Pipeline;
using NegDistill.Data;
using NegDistill.Data.Evaluation;
using NegDistill.Model;
using NegDistill.Runtime;

namespace NegDistill.Cli;

/// <summary>Settings of `negdistill eval`.</summary>
sealed record EvalOptions
{
    public required string Base { get; init; }
    public string? Adapter { get; init; }
    public string? Rank { get; init; }
    public required string Data { get; init; }
    public required string Task { get; init; }
    public int N { get; init; } = 16;
    public int MaxNew { get; init; } = 256;
    public float Temperature { get; init; } = Asc.DefaultTemperature;
    public int Limit { get; init; }
    public string Out { get; init; } = "runs/eval";
    public string Device { get; init; } = "cpu";
    public ulong Seed { get; init; } = 1;
}

/// <summary>
/// `negdistill eval`: greedy and SC / WS / ASC accuracy of a base model (plus an optional PEFT LoRA
/// adapter) on MATH (per subject, the paper's layout) or GSM8K, from N sampled candidates per question
/// saved as JSONL (an interrupted run resumes from them), with an optional ranking model for ASC.
/// </summary>
static class Eval
{
    /// <summary>The tokenizer that goes with a checkpoint folder: tokenizer.model, else tokenizer.json
    /// (converted to SentencePiece), else the byte tokenizer when the vocabulary is the byte one.</summary>
    public static ITokenizer TokenizerFor(string dir, LlamaConfig cfg)
    {
        string model = Path.Combine(dir, "tokenizer.model"), json = Path.Combine(dir, "tokenizer.json");
        if (File.Exists(model)) return LlamaSentencePieceTokenizer.FromModelFile(model);
        if (File.Exists(json)) return LlamaSentencePieceTokenizer.FromHuggingFaceJson(json, out _);
        var bytes = new ByteTokenizer();
        if (cfg.Vocab == bytes.VocabSize) return bytes;
        throw new FileNotFoundException($"{dir}: no tokenizer.model or tokenizer.json, and vocab_size {cfg.Vocab} is not the byte tokenizer's {bytes.VocabSize}");
    }

    public static int Run(EvalOptions o)
    {
        var task = o.Task.ToLowerInvariant() switch
        {
            "math" => AnswerTask.Math, "gsm8k" => AnswerTask.Gsm8k,
            _ => throw new ArgumentException($"--task: '{o.Task}' is not math or gsm8k"),
        };
        var cfg = ModelIO.ReadConfig(o.Base);
        var tok = TokenizerFor(o.Base, cfg);
        var questions = Load(task, o.Data, o.Limit);
        if (questions.Count == 0) throw new ArgumentException($"--data: no questions in {o.Data}");
        using var ops = Backends.Create(o.Device);
        using var m = new LlamaModel(ops, cfg, DType.F32, seed: o.Seed);
        ModelIO.LoadBase(m, o.Base);
        if (o.Adapter != null) ModelIO.LoadLora(m, o.Adapter);
        Func<IReadOnlyList<Pair>, float[]>? scorer = o.Rank == null ? null : pairs => RankScores(ops, cfg, o, tok, pairs);
        var log = new List<string>();
        string label = "base";
        if (o.Adapter != null)
        {
            var full = new DirectoryInfo(Path.GetFullPath(o.Adapter));
            label = full.Name == "adapter" && full.Parent != null ? full.Parent.Name : full.Name;   // runs/x/nce/adapter → "nce"
        }
        var md = Asc.Run(m, tok, scorer, task, questions, o.N, o.MaxNew, o.Temperature, o.Seed, o.Out, label, log);
        foreach (var l in log) Console.WriteLine(l);
        Console.WriteLine(md);
        Console.WriteLine($"candidates, table and plot under {o.Out}");
        return ExitCodes.Ok;
    }

    static float[] RankScores(IBackend ops, LlamaConfig cfg, EvalOptions o, ITokenizer tok, IReadOnlyList<Pair> pairs) =>
        Stages.Score(ops, cfg, o.Base, o.Rank!, new Batcher(tok, new BatchingOptions { CutoffLength = cfg.MaxSeq, BatchSize = 8, GroupByLength = false }), 8, pairs);

    /// <summary>Questions in the authors' prompt format: "Problem:\n" + problem, then "\nSolution:\n".</summary>
    static List<TestQuestion> Load(AnswerTask task, string path, int limit)
    {
        var list = new List<TestQuestion>();
        if (task == AnswerTask.Math)
            foreach (var p in new MathDataLoader(MalformedPolicy.Stop).Load(path))
            {
                string q = "Problem:\n" + p.Problem;
                list.Add(new TestQuestion(p.UniqueId ?? $"{Path.GetFileName(p.SourceFile)}:{p.Line}", p.Subject, q + "\nSolution:\n", q, p.ReferenceAnswer));
            }
        else
            foreach (var p in new Gsm8kLoader(MalformedPolicy.Stop).Load(path))
            {
                string q = "Problem:\n" + p.Question;
                list.Add(new TestQuestion($"{Path.GetFileName(p.SourceFile)}:{p.Line}", Evaluator.Gsm8kColumn, q + "\nSolution:\n", q, p.FinalAnswer));
            }
        return limit > 0 ? list.Take(limit).ToList() : list;
    }
}
