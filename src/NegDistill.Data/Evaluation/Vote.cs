namespace NegDistill.Data.Evaluation;

/// <summary>The three answer aggregations of the paper.</summary>
public enum VoteMethod
{
    /// <summary>Self-consistency: every candidate's vote weighs 1.</summary>
    Sc,

    /// <summary>Weighted sum: a candidate's vote weighs its length-normalised sequence probability.</summary>
    Ws,

    /// <summary>Adaptive self-consistency: a candidate's vote weighs its ranking-model score.</summary>
    Asc,
}

/// <summary>One group of equivalent answers and its total vote.</summary>
/// <param name="Key">The group key (<see cref="TaskAnswers.GroupKey"/>).</param>
/// <param name="Answer">The answer as written by the lowest-index candidate of the group.</param>
/// <param name="Score">Sum of the group's weights.</param>
/// <param name="Votes">Number of candidates in the group.</param>
/// <param name="Indices">The candidates' sample indices, ascending.</param>
public sealed record AnswerScore(string Key, string Answer, double Score, int Votes, IReadOnlyList<int> Indices);

/// <summary>The outcome of one weighted vote over one question's first N candidates.</summary>
public sealed class VoteResult
{
    internal VoteResult(AnswerTask task, VoteMethod method, int n, IReadOnlyList<AnswerScore> scores)
    {
        Task = task;
        Method = method;
        N = n;
        Scores = scores;
        if (scores.Count == 0)
        {
            Winners = [];
        }
        else
        {
            double best = scores[0].Score;
            Winners = scores.TakeWhile(s => s.Score == best).ToArray();
        }
    }

    /// <summary>The task whose checker grouped the answers.</summary>
    public AnswerTask Task { get; }

    /// <summary>The aggregation used.</summary>
    public VoteMethod Method { get; }

    /// <summary>How many candidates were considered (those without an answer included, though they do not vote).</summary>
    public int N { get; }

    /// <summary>Every answer group, highest score first (ties: the group whose first candidate came first).</summary>
    public IReadOnlyList<AnswerScore> Scores { get; }

    /// <summary>The groups sharing the highest score; empty when no candidate had an answer.</summary>
    public IReadOnlyList<AnswerScore> Winners { get; }

    /// <summary>
    /// The question's score: 1/k when the reference answer is among the k tied winners, else 0 (and 0
    /// when nobody answered or there is no reference).
    /// </summary>
    public double Credit(string? referenceAnswer)
    {
        if (referenceAnswer is null || Winners.Count == 0)
        {
            return 0.0;
        }

        foreach (AnswerScore w in Winners)
        {
            if (TaskAnswers.IsCorrect(Task, w.Answer, referenceAnswer))
            {
                return 1.0 / Winners.Count;
            }
        }

        return 0.0;
    }
}

/// <summary>
/// Weighted answer voting over one question's candidates: score(ans) = Σ w(c) over the candidates c
/// whose answer is equivalent to ans, the winners are the answers with the highest score.
/// </summary>
/// <remarks>
/// <para>Weights. SC: w = 1. ASC: w = <see cref="Candidate.RankScore"/>. WS: w = exp(LogProb / Tokens),
/// the geometric-mean probability of the candidate's tokens. The paper only says "candidate
/// probability"; the raw sequence probability exp(LogProb) shrinks exponentially with length and would
/// hand the vote to whichever answer is written most tersely, so the length-normalised form is used.</para>
/// <para>Only the first N candidates by <see cref="Candidate.Index"/> are considered; a candidate whose
/// <see cref="Candidate.Answer"/> is <c>null</c> casts no vote (its weight is never read). Answers are
/// grouped by <see cref="TaskAnswers.GroupKey"/>, i.e. by the task checker's equivalence. Each group's
/// weights are summed in ascending order of weight, so two groups holding the same weights tie exactly
/// whatever the order the candidates came in.</para>
/// </remarks>
public static class Vote
{
    /// <summary>Self-consistency (majority vote) over the first <paramref name="n"/> candidates (all when null).</summary>
    public static VoteResult Sc(AnswerTask task, IEnumerable<Candidate> candidates, int? n = null) =>
        By(VoteMethod.Sc, task, candidates, n);

    /// <summary>Weighted sum with w = exp(LogProb / Tokens) over the first <paramref name="n"/> candidates.</summary>
    public static VoteResult Ws(AnswerTask task, IEnumerable<Candidate> candidates, int? n = null) =>
        By(VoteMethod.Ws, task, candidates, n);

    /// <summary>Adaptive self-consistency with w = RankScore over the first <paramref name="n"/> candidates.</summary>
    public static VoteResult Asc(AnswerTask task, IEnumerable<Candidate> candidates, int? n = null) =>
        By(VoteMethod.Asc, task, candidates, n);

    /// <summary>
    /// The vote of <paramref name="method"/> over the first <paramref name="n"/> candidates by index (all
    /// of them when <paramref name="n"/> is null). The candidates must belong to one question and have
    /// distinct indices; fewer than <paramref name="n"/> candidates is an error, not a smaller vote.
    /// </summary>
    public static VoteResult By(VoteMethod method, AnswerTask task, IEnumerable<Candidate> candidates, int? n = null)
    {
        ArgumentNullException.ThrowIfNull(candidates);
        Candidate[] prefix = FirstN(candidates, n);
        var keys = new string?[prefix.Length];
        for (int i = 0; i < prefix.Length; i++)
        {
            keys[i] = prefix[i].Answer is { } a ? TaskAnswers.GroupKey(task, a) : null;
        }

        return Tally(method, task, prefix, keys, prefix.Length);
    }

    /// <summary>The weight of one candidate's vote under <paramref name="method"/>.</summary>
    /// <exception cref="InvalidOperationException">WS on a candidate with no tokens or a non-finite
    /// log-probability; ASC on an unscored candidate or a score outside [0, 1].</exception>
    public static double Weight(VoteMethod method, Candidate candidate)
    {
        ArgumentNullException.ThrowIfNull(candidate);
        switch (method)
        {
            case VoteMethod.Sc:
                return 1.0;
            case VoteMethod.Ws:
                if (candidate.Tokens <= 0 || double.IsNaN(candidate.LogProb) || candidate.LogProb > 0)
                {
                    throw new InvalidOperationException(
                        $"WS weight of {Describe(candidate)}: needs Tokens > 0 and LogProb <= 0, got Tokens={candidate.Tokens}, LogProb={candidate.LogProb}");
                }

                return Math.Exp(candidate.LogProb / candidate.Tokens);
            case VoteMethod.Asc:
                if (candidate.RankScore is not { } r)
                {
                    throw new InvalidOperationException($"ASC weight of {Describe(candidate)}: the candidate has no rank score yet");
                }

                if (!(r >= 0.0 && r <= 1.0))
                {
                    throw new InvalidOperationException($"ASC weight of {Describe(candidate)}: rank score {r} is outside [0, 1]");
                }

                return r;
            default:
                throw new ArgumentOutOfRangeException(nameof(method), method, "unknown vote method");
        }
    }

    /// <summary>The candidates sorted by index, cut to the first <paramref name="n"/>, after validation.</summary>
    internal static Candidate[] FirstN(IEnumerable<Candidate> candidates, int? n)
    {
        Candidate[] sorted = candidates.OrderBy(c => c.Index).ToArray();
        for (int i = 0; i < sorted.Length; i++)
        {
            if (sorted[i].QuestionId != sorted[0].QuestionId)
            {
                throw new ArgumentException(
                    $"a vote takes one question's candidates; got '{sorted[0].QuestionId}' and '{sorted[i].QuestionId}'", nameof(candidates));
            }

            if (i > 0 && sorted[i].Index == sorted[i - 1].Index)
            {
                throw new ArgumentException(
                    $"question '{sorted[i].QuestionId}' has two candidates with index {sorted[i].Index}", nameof(candidates));
            }
        }

        if (n is not { } take)
        {
            return sorted;
        }

        ArgumentOutOfRangeException.ThrowIfLessThan(take, 1, nameof(n));
        if (take > sorted.Length)
        {
            string q = sorted.Length > 0 ? $"question '{sorted[0].QuestionId}'" : "the question";
            throw new ArgumentException($"{q} has {sorted.Length} candidates, fewer than N = {take}", nameof(n));
        }

        return take == sorted.Length ? sorted : sorted[..take];
    }

    /// <summary>
    /// The vote over <paramref name="sorted"/>[0..<paramref name="count"/>), whose group keys
    /// (<c>null</c> for no answer) are given, so callers voting repeatedly reuse one key computation.
    /// </summary>
    internal static VoteResult Tally(VoteMethod method, AnswerTask task, IReadOnlyList<Candidate> sorted, IReadOnlyList<string?> keys, int count)
    {
        var groups = new Dictionary<string, List<int>>(StringComparer.Ordinal);
        var order = new List<string>();
        for (int i = 0; i < count; i++)
        {
            if (keys[i] is not { } key)
            {
                continue;
            }

            if (!groups.TryGetValue(key, out List<int>? members))
            {
                members = [];
                groups.Add(key, members);
                order.Add(key);
            }

            members.Add(i);
        }

        var scores = new List<AnswerScore>(order.Count);
        foreach (string key in order)
        {
            List<int> members = groups[key];
            var weights = new double[members.Count];
            for (int j = 0; j < members.Count; j++)
            {
                weights[j] = Weight(method, sorted[members[j]]);
            }

            Array.Sort(weights);
            double sum = 0.0;
            foreach (double w in weights)
            {
                sum += w;
            }

            int[] indices = members.Select(m => sorted[m].Index).ToArray();
            scores.Add(new AnswerScore(key, sorted[members[0]].Answer!, sum, members.Count, indices));
        }

        // Stable sort: equal scores keep first-appearance order.
        AnswerScore[] ranked = scores.OrderByDescending(s => s.Score).ToArray();
        return new VoteResult(task, method, count, ranked);
    }

    private static string Describe(Candidate c) => $"candidate {c.Index} of question '{c.QuestionId}'";
}
