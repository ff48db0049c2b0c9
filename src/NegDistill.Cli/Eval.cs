using NegDistill.Cli.Pipeline;
using NegDistill.Data;
using NegDistill.Data.Evaluation;
using NegDistill.Model;
using NegDistill.Runtime;

namespace NegDistill.Cli;

/// <summary>Settings of `negdistill sample` and `negdistill eval`.</summary>
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
    /// <summary>KV-cache slots (sequences decoded at once); 0: the most that fit, up to 256.</summary>
    public int Slots { get; init; }
    /// <summary>Plan against this many GB instead of the device's memory; 0: the device's.</summary>
    public double MemoryLimitGb { get; init; }
}

/// <summary>
/// `negdistill sample`, `vote` and `eval`: N sampled candidates per question of MATH (per subject, the
/// paper's layout) or GSM8K from a base model plus an optional PEFT LoRA adapter, saved as JSONL (an
/// interrupted run resumes from them) and scored by an optional ranking model; SC / WS / ASC accuracy
/// from the saved candidates; `eval` does both and adds greedy decoding.
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

    public static AnswerTask ParseTask(string task) => task.ToLowerInvariant() switch
    {
        "math" => AnswerTask.Math, "gsm8k" => AnswerTask.Gsm8k,
        _ => throw new ArgumentException($"--task: '{task}' is not math or gsm8k"),
    };

    /// <summary>The name the outputs are filed under: the adapter's stage (runs/x/nce/adapter → "nce"), or "base".</summary>
    public static string Label(string? adapter)
    {
        if (adapter == null) return "base";
        var full = new DirectoryInfo(Path.GetFullPath(adapter));
        return full.Name == "adapter" && full.Parent != null ? full.Parent.Name : full.Name;
    }

    /// <summary>`negdistill sample`: candidates (and M_rank scores with --rank) as JSONL; prints where.</summary>
    public static int Sample(EvalOptions o)
    {
        var r = SampleAndScore(o, greedy: false);
        foreach (var l in r.Log) Console.WriteLine(l);
        Console.WriteLine($"{r.Questions.Count * o.N} candidates in {r.Path}");
        return ExitCodes.Ok;
    }

    /// <summary>`negdistill eval`: sample, greedy, score, vote; the tables and plot under --out.</summary>
    public static int Run(EvalOptions o)
    {
        var r = SampleAndScore(o, greedy: true);
        var (_, md) = Asc.Report(r.Task, r.Questions, CandidateJsonl.ReadAll(r.Path), r.Greedy, o.Out, r.Label);
        foreach (var l in r.Log) Console.WriteLine(l);
        Console.WriteLine(md);
        Console.WriteLine($"candidates, table and plot under {o.Out}");
        return ExitCodes.Ok;
    }

    /// <summary>`negdistill vote sc|ws|asc`: accuracy of one aggregation at N = 1, 2, 4, … from saved
    /// candidates (answers re-judged against the test data's references).</summary>
    public static int Vote(string method, string candidatesPath, EvalOptions o)
    {
        var vm = method.ToLowerInvariant() switch
        {
            "sc" => VoteMethod.Sc, "ws" => VoteMethod.Ws, "asc" => VoteMethod.Asc,
            _ => throw new ArgumentException($"vote: method '{method}' is not sc, ws or asc"),
        };
        var task = ParseTask(o.Task);
        if (!File.Exists(candidatesPath)) throw new FileNotFoundException($"--candidates: {candidatesPath} does not exist", candidatesPath);
        var report = new CandidateReadReport();
        var samples = CandidateJsonl.ReadAll(candidatesPath, report);
        var have = samples.Select(c => c.QuestionId).ToHashSet();
        var all = Questions(task, o);
        var questions = all.Where(q => have.Contains(q.Id)).ToList();
        var unknown = have.Except(all.Select(q => q.Id)).FirstOrDefault();
        if (unknown != null) throw new InvalidDataException($"{candidatesPath}: question '{unknown}' is not in --data {o.Data}");
        if (vm == VoteMethod.Asc && samples.Any(c => c.RankScore == null))
            throw new InvalidDataException($"{candidatesPath}: ASC needs every candidate scored by M_rank (run `negdistill sample --rank DIR`, which writes *.candidates.scored.jsonl)");
        var r = Evaluator.Evaluate(task, questions.Select(q => new EvalQuestion(q.Id, q.Subject, q.ReferenceAnswer)).ToList(), samples,
            ns: Evaluator.DefaultNs.Where(k => k <= o.N).ToList());
        var cols = r.Columns.Where(c => r.QuestionCounts[c] > 0).ToList();
        Console.WriteLine($"{Evaluator.Name(vm)} voting on {questions.Count} questions ({samples.Count} candidates; {all.Count - questions.Count} questions of --data have none){(report.TruncatedLine is { } tl ? $"; {candidatesPath} line {tl} was cut off and ignored" : "")}\n");
        Console.WriteLine($"| N | {string.Join(" | ", cols.Select(c => $"{Evaluator.ShortName(c)} (n={r.QuestionCounts[c]})"))} | pooled |");
        Console.WriteLine($"|---|{string.Concat(cols.Select(_ => "---|"))}---|");
        foreach (int n in r.Ns)
            if (r.Find(vm, n) is { } row)
                Console.WriteLine($"| {n} | {string.Join(" | ", cols.Select(c => $"{100 * row.Accuracy[c]:F2}"))} | {100 * row.Pooled:F2} |");
        return ExitCodes.Ok;
    }

    sealed record Sampled(AnswerTask Task, List<TestQuestion> Questions, string Label, string Path, List<Candidate>? Greedy, List<string> Log);

    /// <summary>Candidates sampled (resuming a partial file), greedy answers when asked, then the student
    /// freed and, with --rank, every candidate scored by M_rank. Path is the file the votes read.</summary>
    static Sampled SampleAndScore(EvalOptions o, bool greedy)
    {
        var task = ParseTask(o.Task);
        var cfg = ModelIO.ReadConfig(o.Base);
        var tok = TokenizerFor(o.Base, cfg);
        var questions = Questions(task, o);
        string label = Label(o.Adapter), path = Asc.CandidatesPath(o.Out, label);
        var log = new List<string>();
        var adapter = StudentFolder(o.Adapter);
        if (o.Rank != null) RankerFolder(o.Rank);
        using var ops = Backends.Create(o.Device);
        List<Candidate>? g = null;
        using (var m = LoadStudent(ops, cfg, tok, questions, o, adapter))   // the student is freed before M_rank loads
        {
            Asc.SampleCandidates(m.Model, tok, task, questions, o.N, o.MaxNew, o.Temperature, o.Seed, m.Shape, path, label, log);
            if (greedy) g = Asc.GreedyCandidates(m.Model, tok, task, questions, o.MaxNew, CacheShape.For(Math.Min(m.Shape.Slots, questions.Count), m.Shape.MaxSeq));
        }
        if (o.Rank != null)
        {
            Asc.ScoreCandidates(pairs => RankScores(ops, cfg, o, tok, pairs), questions, path, Asc.ScoredPath(o.Out, label));
            path = Asc.ScoredPath(o.Out, label);
        }
        return new Sampled(task, questions, label, path, g, log);
    }

    /// <summary>The student, loaded in its checkpoint's precision after its sampling plan was printed and
    /// found to fit, with the cache shape the plan chose.</summary>
    sealed class Student(LlamaModel model, CacheShape shape) : IDisposable
    {
        public LlamaModel Model { get; } = model;
        public CacheShape Shape { get; } = shape;
        public void Dispose() => Model.Dispose();
    }

    static Student LoadStudent(IBackend ops, LlamaConfig cfg, ITokenizer tok, IReadOnlyList<TestQuestion> questions, EvalOptions o, AdapterFolder? adapter)
    {
        if (o.N < 1) throw new ArgumentException($"--n: {o.N} candidates per question; at least 1");
        if (o.MaxNew < 1) throw new ArgumentException($"--max-new: {o.MaxNew}; at least 1 token");
        var weights = ModelIO.StorageDType(o.Base);
        var lora = adapter?.Lora;
        var nat = adapter?.NatPlan;
        int maxSeq = CacheShape.Positions(cfg, questions.Select(q => tok.Encode(q.Prompt, true, false)), o.MaxNew);
        long device = o.MemoryLimitGb > 0 ? (long)(o.MemoryLimitGb * 1e9) : Planning.DeviceBytes(ops);
        int sequences = questions.Count * o.N;
        int slots = o.Slots > 0 ? o.Slots : Planning.FitSlots(cfg, weights, lora, Math.Min(sequences, 256), maxSeq, CacheShape.PrefillRows, device, nat);
        var shape = CacheShape.For(slots, maxSeq);
        var plan = MemoryPlan.ForSampling(cfg, weights, lora, shape.Slots, shape.MaxSeq, shape.Rows, nat);
        Planning.Check(ops, plan, $"sampling {questions.Count} questions × {o.N} candidates, {weights} weights, {shape.Slots} slots × {shape.MaxSeq} positions",
            "--slots, --max-new or the prompt length", device);
        var m = LoadModel(ops, cfg, weights, o.Base, adapter, o.Seed);
        Console.WriteLine(adapter == null ? $"adapter: none (the base model {o.Base})" : $"adapter: {adapter.Description}");
        return new Student(m, shape);
    }

    /// <summary>--adapter as a student folder: a LoRA or NAT, refused when it is a ranking model or no adapter.</summary>
    internal static AdapterFolder? StudentFolder(string? dir)
    {
        if (dir == null) return null;
        var f = AdapterFolder.Inspect(dir);
        if (f.Kind == AdapterKind.Ranker)
            throw new ArgumentException($"--adapter: {dir} is a ranking model (LoRA + {RankHead.FileName}), not a student; pass it as --rank");
        return f;
    }

    /// <summary>--rank as a ranking-model folder, refused when it has no score head.</summary>
    internal static AdapterFolder RankerFolder(string dir)
    {
        var f = AdapterFolder.Inspect(dir);
        if (f.Kind != AdapterKind.Ranker)
            throw new ArgumentException($"--rank: {dir} holds a {f.Kind} adapter, not a ranking model (it has no {RankHead.FileName}; `negdistill train rank` writes one)");
        return f;
    }

    /// <summary>The student as `sample` and `eval` load it: the base, plus the adapter folder as what it
    /// holds (a LoRA, or NAT with LoRA_neg and the integration units).</summary>
    internal static LlamaModel LoadModel(IBackend ops, LlamaConfig cfg, DType weights, string baseDir, AdapterFolder? adapter, ulong seed)
    {
        var m = new LlamaModel(ops, cfg, weights, trainBase: false, seed: seed);
        try
        {
            ModelIO.LoadBase(m, baseDir);
            adapter?.LoadInto(m);
        }
        catch { m.Dispose(); throw; }
        return m;
    }

    static List<TestQuestion> Questions(AnswerTask task, EvalOptions o)
    {
        var q = Load(task, o.Data, o.Limit);
        if (q.Count == 0) throw new ArgumentException($"--data: no questions in {o.Data}");
        return q;
    }

    static float[] RankScores(IBackend ops, LlamaConfig cfg, EvalOptions o, ITokenizer tok, IReadOnlyList<Pair> pairs) =>
        Stages.Score(ops, cfg, o.Base, o.Rank!, new Batcher(tok, new BatchingOptions { CutoffLength = cfg.MaxSeq, BatchSize = 8, GroupByLength = false }), 8, pairs,
            ModelIO.StorageDType(o.Base));

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
