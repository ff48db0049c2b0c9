using NegDistill.Data;
using NegDistill.Data.Evaluation;
using NegDistill.Infer;
using NegDistill.Model;

namespace NegDistill.Cli.Pipeline;

/// <summary>A held-out question: id, subject, the prompt text (question + "\n" + "Solution:\n"), the
/// question as the ranking model saw it in training, and the reference answer.</summary>
sealed record TestQuestion(string Id, string Subject, string Prompt, string Question, string? ReferenceAnswer);

/// <summary>
/// Step 3 on a trained student: N sampled candidates per question saved as JSONL (resumable), each
/// scored by M_rank, then SC, WS and ASC computed from the same saved candidates at N = 1, 2, 4, 8, 16
/// next to greedy decoding; a Markdown table and a PNG of accuracy against N.
/// </summary>
static class Asc
{
    public const float DefaultTemperature = 0.7f;

    public static Sampler NewSampler(LlamaModel m, ITokenizer tok, float temperature, int maxNew, ulong seed, int slots = 64) =>
        new(m, new SamplerSettings
        {
            Temperature = temperature, MaxNewTokens = maxNew, Eos = tok.EosId, Slots = slots, MaxSeq = m.Config.MaxSeq, Seed = seed,
        });

    /// <summary>Greedy (temperature 0) continuations, through the KV-cache sampler.</summary>
    public static IReadOnlyList<Sample> Greedy(LlamaModel m, ITokenizer tok, IReadOnlyList<int[]> prompts, int maxNew)
    {
        using var s = NewSampler(m, tok, 0f, maxNew, 0);
        return s.Run(prompts.Select((p, i) => new SampleRequest(i, p, 1)));
    }

    /// <param name="student">the model to sample from (base + adapters)</param>
    /// <param name="scorer">M_rank: scores (question, rationale) pairs in [0,1]; null leaves ASC out</param>
    public static string Run(LlamaModel student, ITokenizer tok, Func<IReadOnlyList<Pair>, float[]>? scorer, AnswerTask task,
        IReadOnlyList<TestQuestion> test, int n, int maxNew, float temperature, ulong seed, string outDir, string label, List<string> log)
    {
        Directory.CreateDirectory(outDir);
        string path = Path.Combine(outDir, $"{label}.candidates.jsonl");
        var existing = File.Exists(path) ? CandidateJsonl.Existing(path) : null;
        var todo = test.Select((q, i) => (q, i)).Where(x => existing == null || existing.Missing(x.q.Id, n).Count > 0).ToList();
        if (todo.Count > 0)
        {
            using var sampler = NewSampler(student, tok, temperature, maxNew, seed);
            using var w = CandidateJsonlWriter.Open(path);
            var bar = new ProgressLine("sample", todo.Count * n);
            int doneCount = 0;
            sampler.Run(todo.Select(x => new SampleRequest(x.i, tok.Encode(x.q.Prompt, true, false), n)), s =>
            {
                var q = test[(int)s.RequestId];
                bar.Update(++doneCount, "candidates");
                if (existing != null && existing.Contains(q.Id, s.Index)) return;      // kept from an interrupted run
                w.Append(Candidate.FromText(task, q.Id, q.Subject, s.Index, "Solution:\n" + tok.Decode(s.Tokens), q.ReferenceAnswer, s.LogProb, Math.Max(1, s.TokenCount)));
            });
            bar.Finish();
            log.Add($"sampling ({label}): {sampler.Stats}");
        }
        var greedy = Greedy(student, tok, test.Select(q => tok.Encode(q.Prompt, true, false)).ToList(), maxNew)
            .Select(s =>
            {
                var q = test[(int)s.RequestId];
                return Candidate.FromText(task, q.Id, q.Subject, 0, "Solution:\n" + tok.Decode(s.Tokens), q.ReferenceAnswer, s.LogProb, Math.Max(1, s.TokenCount));
            }).ToList();
        var samples = CandidateJsonl.ReadAll(path);
        if (scorer != null)
        {
            var byId = test.ToDictionary(q => q.Id);
            var scores = scorer(samples.Select(c => new Pair(byId[c.QuestionId].Question, c.Text, c.Subject, "", false, c.QuestionId)).ToList());
            samples = samples.Select((c, i) => c with { RankScore = scores[i] }).ToList();
            using var w = CandidateJsonlWriter.Open(Path.Combine(outDir, $"{label}.candidates.scored.jsonl.tmp"));
            foreach (var c in samples) w.Append(c);
        }
        if (scorer != null) File.Move(Path.Combine(outDir, $"{label}.candidates.scored.jsonl.tmp"), Path.Combine(outDir, $"{label}.candidates.scored.jsonl"), overwrite: true);
        var questions = test.Select(q => new EvalQuestion(q.Id, q.Subject, q.ReferenceAnswer)).ToList();
        var report = Evaluator.Evaluate(task, questions, samples, greedy);
        LinePlot.SaveAccuracyVsN(Path.Combine(outDir, $"{label}.accuracy_vs_n.png"), report, $"{label}: accuracy against N (SC, WS, ASC)");
        var md = EvaluationMarkdown.Render(report, label);
        File.WriteAllText(Path.Combine(outDir, $"{label}.results.md"), md);
        return md;
    }
}
