using NegDistill.Data;
using NegDistill.Data.Evaluation;
using NegDistill.Infer;
using NegDistill.Model;

namespace NegDistill.Cli.Pipeline;

/// <summary>A held-out question: id, prompt text (question + "\n" + "Solution:\n") and reference solution.</summary>
sealed record TestQuestion(string Id, string Question, string Reference);

/// <summary>
/// Step 3 on a trained student: N sampled candidates per question saved as JSONL (resumable), each
/// scored by M_rank, then SC, WS and ASC computed from the same saved candidates at N = 1, 2, 4, 8, 16
/// next to greedy decoding; a Markdown table and a PNG of accuracy against N.
/// </summary>
static class Asc
{
    public const float Temperature = 0.7f;

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

    public static string Run(StageContext ctx, string stage, IReadOnlyList<TestQuestion> test, int n, int maxNew, ulong seed)
    {
        string dir = ctx.Dir("asc");
        Directory.CreateDirectory(dir);
        string path = Path.Combine(dir, $"{stage}.candidates.jsonl");
        var tok = ctx.Tokenizer;
        var existing = File.Exists(path) ? CandidateJsonl.Existing(path) : null;
        var todo = test.Select((q, i) => (q, i)).Where(x => existing == null || existing.Missing(x.q.Id, n).Count > 0).ToList();
        using (var m = Stages.LoadBase(ctx))
        {
            ModelIO.LoadLora(m, ctx.AdapterDir(stage));
            if (todo.Count > 0)
            {
                using var sampler = NewSampler(m, tok, Temperature, maxNew, seed);
                using var w = CandidateJsonlWriter.Open(path);
                var bar = new ProgressLine("sample", todo.Count * n);
                int doneCount = 0;
                sampler.Run(todo.Select(x => new SampleRequest(x.i, tok.Encode(x.q.Question, true, false), n)), s =>
                {
                    var q = test[(int)s.RequestId];
                    bar.Update(++doneCount, $"{sampler.Stats.TokensPerSecond:F0} tok/s");
                    if (existing != null && existing.Contains(q.Id, s.Index)) return;      // kept from the interrupted run
                    w.Append(Candidate.FromText(AnswerTask.Gsm8k, q.Id, "arithmetic", s.Index, "Solution:\n" + tok.Decode(s.Tokens),
                        TaskAnswers.ExtractReference(AnswerTask.Gsm8k, q.Reference), s.LogProb, Math.Max(1, s.TokenCount)));
                });
                bar.Finish();
                ctx.Log.Add($"sampling ({stage}): {sampler.Stats}");
            }
            var greedy = Greedy(m, tok, test.Select(q => tok.Encode(q.Question, true, false)).ToList(), maxNew)
                .Select(s => Candidate.FromText(AnswerTask.Gsm8k, test[(int)s.RequestId].Id, "arithmetic", 0, "Solution:\n" + tok.Decode(s.Tokens),
                    TaskAnswers.ExtractReference(AnswerTask.Gsm8k, test[(int)s.RequestId].Reference), s.LogProb, Math.Max(1, s.TokenCount)))
                .ToList();
            var samples = CandidateJsonl.ReadAll(path);
            // M_rank scores every candidate (question, rationale) exactly as it scored the training pairs
            var byId = test.ToDictionary(q => q.Id);
            var pairs = samples.Select(c => new Pair(byId[c.QuestionId].Question.Replace("\nSolution:\n", ""), c.Text, "arithmetic", "", false, c.QuestionId)).ToList();
            var scores = Stages.Score(ctx, pairs);
            var scored = samples.Select((c, i) => c with { RankScore = scores[i] }).ToList();
            var questions = test.Select(q => new EvalQuestion(q.Id, "arithmetic", TaskAnswers.ExtractReference(AnswerTask.Gsm8k, q.Reference))).ToList();
            var report = Evaluator.Evaluate(AnswerTask.Gsm8k, questions, scored, greedy);
            LinePlot.SaveAccuracyVsN(Path.Combine(ctx.OutDir, "accuracy_vs_n.png"), report, $"{stage} student: accuracy against N (SC, WS, ASC)");
            // the synthetic world is graded with the numeric (GSM8K) checker; its column is renamed to say what it holds
            return EvaluationMarkdown.Render(report, $"{stage} student").Replace("GSM8K", "synthetic arithmetic");
        }
    }
}
