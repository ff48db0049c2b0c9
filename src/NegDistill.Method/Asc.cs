using NegDistill.Data;
using NegDistill.Data.Evaluation;
using NegDistill.Infer;
using NegDistill.Model;

namespace NegDistill.Method;

/// <summary>KV-cache geometry of a sampling run: sequences decoded at once, positions per sequence,
/// rows per forward (every slot's decode row plus prefill chunks), the cache's element type, and the
/// shared prompts (prompt slots, their positions, and each slot's own positions; none: plain slots).</summary>
public sealed record CacheShape(int Slots, int MaxSeq, int Rows, Runtime.DType Cache = Runtime.DType.F32,
    int SharedPrompts = 0, int PromptPositions = 0, int OwnPositions = 0)
{
    public const int PrefillRows = 256;

    /// <summary>Positions for the longest prompt plus the token budget, capped by the model's context.</summary>
    public static int Positions(LlamaConfig cfg, IEnumerable<int[]> prompts, int maxNew) =>
        Math.Min(cfg.MaxSeq, prompts.Select(p => p.Length).DefaultIfEmpty(1).Max() + maxNew);

    public static CacheShape For(int slots, int maxSeq, Runtime.DType cache = Runtime.DType.F32) => new(slots, maxSeq, slots + PrefillRows, cache);

    /// <summary>Slots sharing prompts: <paramref name="n"/> candidates per question, so about slots / n questions
    /// run at once; twice that many prompt slots (at least 2, at most the questions) let the next
    /// questions start while the last candidates of earlier ones finish. Each prompt slot holds the
    /// longest prompt less its last token, each slot <paramref name="maxNew"/> positions.</summary>
    public static CacheShape Shared(int slots, int maxSeq, Runtime.DType cache, int n, int questions, int longestPrompt, int maxNew) =>
        new(slots, maxSeq, slots + PrefillRows, cache,
            SharedPrompts: Math.Clamp(2 * ((slots + n - 1) / n), 2, Math.Max(2, questions)),
            PromptPositions: Math.Max(1, longestPrompt - 1), OwnPositions: Math.Min(maxNew, maxSeq));

    public KvLayout Layout => SharedPrompts > 0 ? new KvLayout(Slots, OwnPositions, SharedPrompts, PromptPositions) : KvLayout.Plain(Slots, MaxSeq);
}

/// <summary>
/// Step 3 on a trained student, in parts that `sample`, `vote`, `eval`, the pipeline and the demo
/// share: N sampled candidates per question saved as JSONL (resumable); each scored by M_rank into a
/// second JSONL; SC, WS and ASC from the saved candidates at N = 1, 2, 4, 8, 16 next to greedy
/// decoding, as a Markdown table and a PNG of accuracy against N.
/// </summary>
public static class Asc
{
    public static Sampler NewSampler(LlamaModel m, ITokenizer tok, float temperature, int maxNew, ulong seed, CacheShape shape)
    {
        var settings = new SamplerSettings
        {
            Temperature = temperature, MaxNewTokens = maxNew, Eos = tok.EosId, Slots = shape.Slots, MaxSeq = shape.MaxSeq,
            MaxRowsPerStep = shape.Rows, Seed = seed, Cache = shape.Cache, SharedPrompts = shape.SharedPrompts, PromptPositions = shape.PromptPositions,
        };
        if (settings.Layout != shape.Layout) throw new InvalidOperationException($"the sampler's cache layout {settings.Layout} is not the planned {shape.Layout}");
        return new Sampler(m, settings);
    }

    /// <summary>Greedy (temperature 0) continuations, through the KV-cache sampler (at most 64 slots).</summary>
    public static IReadOnlyList<Sample> Greedy(LlamaModel m, ITokenizer tok, IReadOnlyList<int[]> prompts, int maxNew, CacheShape? shape = null)
    {
        shape ??= CacheShape.For(Math.Clamp(prompts.Count, 1, 64), CacheShape.Positions(m.Config, prompts, maxNew));
        using var s = NewSampler(m, tok, 0f, maxNew, 0, shape);
        return s.Run(prompts.Select((p, i) => new SampleRequest(i, p, 1)));
    }

    public static string CandidatesPath(string outDir, string label) => Path.Combine(outDir, $"{label}.candidates.jsonl");
    public static string ScoredPath(string outDir, string label) => Path.Combine(outDir, $"{label}.candidates.scored.jsonl");

    static Candidate ToCandidate(AnswerTask task, TestQuestion q, ITokenizer tok, Sample s) =>
        Candidate.FromText(task, q.Id, q.Subject, s.Index, PromptFormat.Rationale(tok.Decode(s.Tokens)), q.ReferenceAnswer, s.LogProb, Math.Max(1, s.TokenCount));

    /// <summary>Samples the candidates that <paramref name="path"/> does not hold yet (an interrupted run
    /// resumes: its complete lines are kept) and appends them.</summary>
    public static void SampleCandidates(LlamaModel student, ITokenizer tok, AnswerTask task, IReadOnlyList<TestQuestion> test, int n,
        int maxNew, float temperature, ulong seed, CacheShape shape, string path, string label, IReporter report, List<string> log)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        var existing = File.Exists(path) ? CandidateJsonl.Existing(path) : null;
        var todo = test.Select((q, i) => (q, i)).Where(x => existing == null || existing.Missing(x.q.Id, n).Count > 0).ToList();
        if (todo.Count == 0) { log.Add($"sampling ({label}): all {test.Count * n} candidates already in {path}"); return; }
        using var sampler = NewSampler(student, tok, temperature, maxNew, seed, shape);
        using var w = CandidateJsonlWriter.Open(path);
        int doneCount = 0, total = todo.Count * n;
        sampler.Run(todo.Select(x => new SampleRequest(x.i, tok.Encode(x.q.Prompt, true, false), n)), s =>
        {
            var q = test[(int)s.RequestId];
            report.Progress("sample", ++doneCount, total, "candidates");
            if (existing != null && existing.Contains(q.Id, s.Index)) return;      // kept from an interrupted run
            w.Append(ToCandidate(task, q, tok, s));
        });
        report.EndProgress("sample");
        log.Add($"sampling ({label}, {shape.Layout}, {shape.Cache} cache): {sampler.Stats}");
    }

    /// <summary>Greedy decoding of every question, as candidates with index 0.</summary>
    public static List<Candidate> GreedyCandidates(LlamaModel student, ITokenizer tok, AnswerTask task, IReadOnlyList<TestQuestion> test, int maxNew, CacheShape? shape = null) =>
        Greedy(student, tok, test.Select(q => tok.Encode(q.Prompt, true, false)).ToList(), maxNew, shape)
            .Select(s => ToCandidate(task, test[(int)s.RequestId], tok, s)).ToList();

    /// <summary>Writes every candidate of <paramref name="candidatesPath"/> with its M_rank score to
    /// <paramref name="scoredPath"/> (atomically: a temporary file, then a rename).</summary>
    public static void ScoreCandidates(Func<IReadOnlyList<Pair>, float[]> scorer, IReadOnlyList<TestQuestion> test, string candidatesPath, string scoredPath)
    {
        var samples = CandidateJsonl.ReadAll(candidatesPath);
        var byId = test.ToDictionary(q => q.Id);
        var unknown = samples.FirstOrDefault(c => !byId.ContainsKey(c.QuestionId));
        if (unknown != null) throw new InvalidDataException($"{candidatesPath}: candidate of question '{unknown.QuestionId}', which is not in the test data");
        var scores = scorer(samples.Select(c => new Pair(byId[c.QuestionId].Question, c.Text, c.Subject, "", false, c.QuestionId)).ToList());
        string tmp = scoredPath + ".tmp";
        try
        {
            using (var w = CandidateJsonlWriter.Open(tmp))
                foreach (var (c, s) in samples.Zip(scores)) w.Append(c with { RankScore = s });
            File.Move(tmp, scoredPath, overwrite: true);
        }
        finally { if (File.Exists(tmp)) File.Delete(tmp); }
    }

    /// <summary>SC / WS / ASC (and greedy, when given) from saved candidates: the Markdown tables, written
    /// beside a PNG of accuracy against N.</summary>
    public static (EvaluationReport Report, string Markdown) Report(AnswerTask task, IReadOnlyList<TestQuestion> test, IReadOnlyList<Candidate> samples,
        IReadOnlyList<Candidate>? greedy, string outDir, string label)
    {
        var questions = test.Select(q => new EvalQuestion(q.Id, q.Subject, q.ReferenceAnswer)).ToList();
        var report = Evaluator.Evaluate(task, questions, samples, greedy);
        LinePlot.SaveAccuracyVsN(Path.Combine(outDir, $"{label}.accuracy_vs_n.png"), report, $"{label}: accuracy against N (SC, WS, ASC)");
        var md = EvaluationMarkdown.Render(report, label);
        File.WriteAllText(Path.Combine(outDir, $"{label}.results.md"), md);
        return (report, md);
    }
}
