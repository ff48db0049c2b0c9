using System.Text;
using NegDistill.Data;
using NegDistill.Data.Evaluation;
using NegDistill.Method.Settings;
using NegDistill.Model;
using NegDistill.Runtime;

namespace NegDistill.Method;

/// <summary>What step 3 runs on: the backend, the base, the student's and the ranking model's folders
/// (inspected: the kind each holds), the sampling settings and where to write.</summary>
public sealed record EvalJob
{
    public required IBackend Ops { get; init; }
    public required BaseModel Base { get; init; }
    /// <summary>The student's adapter folder (a LoRA or NAT); null samples the base model.</summary>
    public AdapterFolder? Student { get; init; }
    /// <summary>M_rank's folder; null leaves ASC out.</summary>
    public AdapterFolder? Ranker { get; init; }
    public required EvalSettings Settings { get; init; }
    public required string OutDir { get; init; }
    public ulong Seed { get; init; } = 1;
    public long? DeviceBytes { get; init; }
    public IReporter Report { get; init; } = new TextReporter(TextWriter.Null);
    public SettingSource Source { get; init; } = SettingSource.CommandLine;
    /// <summary>The name outputs are filed under; by default the adapter's stage (runs/x/nce/adapter → "nce") or "base".</summary>
    public string? Label { get; init; }
    /// <summary>Cut-off and batch of M_rank's scoring (the cut-off defaults to the model's context).</summary>
    public int? ScoreCutoff { get; init; }
    public int ScoreBatch { get; init; } = 8;

    public string FileLabel => Label ?? LabelOf(Student?.Dir);

    public static string LabelOf(string? adapter)
    {
        if (adapter == null) return "base";
        var full = new DirectoryInfo(Path.GetFullPath(adapter));
        return full.Name == "adapter" && full.Parent != null ? full.Parent.Name : full.Name;
    }
}

/// <summary>
/// `sample`, `eval` and `vote` as the CLI, the pipeline and the demo run them: candidates sampled from
/// the student as its folder holds it (resuming a partial file), greedy answers, M_rank's scores, and
/// the three votes from the saved candidates.
/// </summary>
public static class Evaluation
{
    /// <summary>What a sampling run left: the questions, the file the votes read (the scored one when
    /// M_rank scored it), greedy answers when asked, and lines for the end of the run.</summary>
    public sealed record Sampled(IReadOnlyList<TestQuestion> Questions, string Path, List<Candidate>? Greedy, List<string> Log);

    /// <summary>--adapter as a student folder: a LoRA or NAT, refused when it is a ranking model or no adapter.</summary>
    public static AdapterFolder? StudentFolder(string? dir, SettingInfo key, SettingSource source)
    {
        if (dir == null) return null;
        var f = AdapterFolder.Inspect(dir);
        if (f.Kind == AdapterKind.Ranker)
            throw new SettingsException(null, [$"{key.NameIn(source)}: {dir} is a ranking model (LoRA + {RankHead.FileName}), not a student; pass it as --rank"]);
        return f;
    }

    /// <summary>--rank as a ranking-model folder, refused when it has no score head.</summary>
    public static AdapterFolder RankerFolder(string dir, SettingInfo key, SettingSource source)
    {
        var f = AdapterFolder.Inspect(dir);
        if (f.Kind != AdapterKind.Ranker)
            throw new SettingsException(null, [$"{key.NameIn(source)}: {dir} holds a {f.Kind} adapter, not a ranking model (it has no {RankHead.FileName}; `negdistill train rank` writes one)"]);
        return f;
    }

    /// <summary>The student as `sample` and `eval` load it: the base, plus the folder as what it holds
    /// (a LoRA, or NAT with LoRA_neg and the integration units).</summary>
    public static LlamaModel LoadStudent(IBackend ops, BaseModel b, AdapterFolder? adapter, ulong seed)
    {
        var m = b.Load(ops, seed);
        try { adapter?.LoadInto(m); }
        catch { m.Dispose(); throw; }
        return m;
    }

    /// <summary>Samples N candidates per question (after printing the sampling plan and refusing one that
    /// does not fit), greedy answers when <paramref name="greedy"/>, then frees the student and, with a
    /// ranker, scores every candidate.</summary>
    public static Sampled Sample(EvalJob job, IReadOnlyList<TestQuestion> questions, bool greedy)
    {
        var s = job.Settings;
        var task = s.AnswerTask;
        string label = job.FileLabel, path = Asc.CandidatesPath(job.OutDir, label);
        var log = new List<string>();
        var tok = job.Base.Tokenizer;
        var encoded = questions.Select(q => tok.Encode(q.Prompt, true, false)).ToList();
        int maxSeq = CacheShape.Positions(job.Base.Config, encoded, s.MaxNewTokens);
        int longest = encoded.Select(p => p.Length).DefaultIfEmpty(1).Max();
        long device = job.DeviceBytes ?? Planning.DeviceBytes(job.Ops);
        var lora = job.Student?.Lora;
        var nat = job.Student?.NatPlan;
        int sequences = questions.Count * s.N;
        var cache = s.KvCacheType(job.Ops);
        // the N candidates of a question share one copy of its prompt unless told otherwise (or N = 1)
        CacheShape ShapeFor(int slots) => s.SharePrompt && s.N > 1
            ? CacheShape.Shared(slots, maxSeq, cache, s.N, questions.Count, longest, s.MaxNewTokens)
            : CacheShape.For(slots, maxSeq, cache);
        int slots = s.Slots > 0 ? s.Slots : Planning.FitSlots(job.Base.Config, job.Base.Weights, lora, Math.Min(sequences, 256), ShapeFor, device, nat);
        var shape = ShapeFor(slots);
        var plan = Planning.Plan(job.Base.Config, job.Base.Weights, lora, shape, nat);
        string Name(SettingInfo k) => k.NameIn(job.Source);
        Planning.Check(job.Report, job.Ops, plan, $"sampling {questions.Count} questions × {s.N} candidates, {job.Base.Weights} weights, {shape.Layout}, {cache} KV cache",
            $"{Name(EvalSettings.Keys.Slots)}, {Name(EvalSettings.Keys.MaxNewTokens)} or the prompt length", device);
        List<Candidate>? g = null;
        using (var m = LoadStudent(job.Ops, job.Base, job.Student, job.Seed))   // the student is freed before M_rank loads
        {
            job.Report.Line(job.Student == null ? $"adapter: none (the base model {job.Base.Dir})" : $"adapter: {job.Student.Description}");
            Asc.SampleCandidates(m, tok, task, questions, s.N, s.MaxNewTokens, s.Temperature, job.Seed, shape, path, label, job.Report, log);
            // greedy decoding runs in plain slots within the planned cache rows (a shared layout holds fewer positions per slot)
            int greedySlots = (int)Math.Clamp(shape.Layout.Rows / shape.MaxSeq, 1, Math.Min(shape.Slots, questions.Count));
            if (greedy) g = Asc.GreedyCandidates(m, tok, task, questions, s.MaxNewTokens, CacheShape.For(greedySlots, shape.MaxSeq, cache));
        }
        if (job.Ranker != null)
        {
            job.Report.Line($"ranker: {job.Ranker.Description}");
            Asc.ScoreCandidates(pairs => Score(job, pairs), questions, path, Asc.ScoredPath(job.OutDir, label));
            path = Asc.ScoredPath(job.OutDir, label);
        }
        return new Sampled(questions, path, g, log);
    }

    /// <summary>`eval`: sample, greedy, score, vote; the Markdown tables (returned) and the plot under the job's folder.</summary>
    public static (Sampled Sampled, string Markdown) Evaluate(EvalJob job, IReadOnlyList<TestQuestion> questions)
    {
        var r = Sample(job, questions, greedy: true);
        var (_, md) = Asc.Report(job.Settings.AnswerTask, r.Questions, CandidateJsonl.ReadAll(r.Path), r.Greedy, job.OutDir, job.FileLabel);
        return (r, md);
    }

    /// <summary>M_rank's scores of (question, rationale) pairs.</summary>
    public static float[] Score(EvalJob job, IReadOnlyList<Pair> pairs)
    {
        var b = job.Base;
        var batcher = new Batcher(b.Tokenizer, new BatchingOptions { CutoffLength = job.ScoreCutoff ?? b.Config.MaxSeq, BatchSize = job.ScoreBatch, GroupByLength = false });
        using var m = LoadStudent(job.Ops, b, job.Ranker, 1);
        using var head = new RankHead(job.Ops, b.Config.Dim, seed: 0);
        head.Load(Path.Combine(job.Ranker!.Dir, RankHead.FileName));
        var r = new List<float>();
        for (int i = 0; i < pairs.Count; i += job.ScoreBatch)
        {
            var batch = batcher.Collate(pairs.Skip(i).Take(job.ScoreBatch).Select(batcher.Encode).ToList());
            r.AddRange(head.Score(m, new ModelBatch(batch.B, batch.T, batch.Tokens, batch.Targets, batch.AttentionMask)));
        }
        return r.ToArray();
    }

    /// <summary>`vote`: one aggregation's accuracy at N = 1, 2, 4, … up to <paramref name="n"/> from saved
    /// candidates, answers re-judged against <paramref name="questions"/>' references; the table as text.</summary>
    public static string Vote(VoteMethod method, string candidatesPath, AnswerTask task, IReadOnlyList<TestQuestion> questions, int n, string dataName)
    {
        var read = new CandidateReadReport();
        var samples = CandidateJsonl.ReadAll(candidatesPath, read);
        if (samples.Count == 0) throw new InvalidDataException($"{candidatesPath}: no candidates (run `negdistill sample` to write them)");
        var have = samples.Select(c => c.QuestionId).ToHashSet();
        var voted = questions.Where(q => have.Contains(q.Id)).ToList();
        var unknown = have.Except(questions.Select(q => q.Id)).FirstOrDefault();
        if (unknown != null) throw new InvalidDataException($"{candidatesPath}: question '{unknown}' is not in {dataName}");
        if (method == VoteMethod.Asc && samples.Any(c => c.RankScore == null))
            throw new InvalidDataException($"{candidatesPath}: ASC needs every candidate scored by M_rank (run `negdistill sample --rank DIR`, which writes *.candidates.scored.jsonl)");
        var r = Evaluator.Evaluate(task, voted.Select(q => new EvalQuestion(q.Id, q.Subject, q.ReferenceAnswer)).ToList(), samples,
            ns: Evaluator.DefaultNs.Where(k => k <= n).ToList());
        var cols = r.Columns.Where(c => r.QuestionCounts[c] > 0).ToList();
        var sb = new StringBuilder();
        sb.AppendLine($"{Evaluator.Name(method)} voting on {voted.Count} questions ({samples.Count} candidates; {questions.Count - voted.Count} questions of {dataName} have none){(read.TruncatedLine is { } tl ? $"; {candidatesPath} line {tl} was cut off and ignored" : "")}");
        sb.AppendLine();
        sb.AppendLine($"| N | {string.Join(" | ", cols.Select(c => $"{Evaluator.ShortName(c)} (n={r.QuestionCounts[c]})"))} | pooled |");
        sb.AppendLine($"|---|{string.Concat(cols.Select(_ => "---|"))}---|");
        foreach (int k in r.Ns)
            if (r.Find(method, k) is { } row)
                sb.AppendLine($"| {k} | {string.Join(" | ", cols.Select(c => $"{100 * row.Accuracy[c]:F2}"))} | {100 * row.Pooled:F2} |");
        return sb.ToString();
    }
}
