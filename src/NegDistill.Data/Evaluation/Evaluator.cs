namespace NegDistill.Data.Evaluation;

/// <summary>A test question as the evaluation needs it.</summary>
/// <param name="QuestionId">Matches <see cref="Candidate.QuestionId"/>.</param>
/// <param name="Subject">The MATH subject (any name <see cref="MathSubjects.Canonical"/> knows); ignored for GSM8K.</param>
/// <param name="ReferenceAnswer">The extracted reference answer (<see cref="TaskAnswers.ExtractReference"/>);
/// <c>null</c> when the reference has none, and then nothing can score on this question.</param>
public sealed record EvalQuestion(string QuestionId, string Subject, string? ReferenceAnswer);

/// <summary>Accuracy of one method (greedy, or one aggregation at one N) per column and averaged.</summary>
/// <param name="Method">The aggregation, or <c>null</c> for greedy decoding.</param>
/// <param name="N">Candidates per question, or <c>null</c> for greedy decoding.</param>
/// <param name="Accuracy">Fraction in [0, 1] per column (a subject for MATH, the one column for GSM8K); a
/// column without questions is absent.</param>
/// <param name="Average">Unweighted mean of <paramref name="Accuracy"/> over the columns present (for
/// MATH the paper's "average over 7 subjects").</param>
/// <param name="Pooled">Credit summed over all questions divided by their number.</param>
public sealed record AccuracyRow(VoteMethod? Method, int? N, IReadOnlyDictionary<string, double> Accuracy, double Average, double Pooled)
{
    /// <summary>"greedy", "SC", "WS" or "ASC".</summary>
    public string MethodName => Method is { } m ? Evaluator.Name(m) : "greedy";
}

/// <summary>Everything the tables and the plot are drawn from.</summary>
public sealed class EvaluationReport
{
    internal EvaluationReport(
        AnswerTask task,
        IReadOnlyList<string> columns,
        IReadOnlyDictionary<string, int> questionCounts,
        IReadOnlyList<int> ns,
        AccuracyRow? greedy,
        IReadOnlyList<AccuracyRow> votes,
        string? ascSkipped,
        int correctFlagMismatches)
    {
        (Task, Columns, QuestionCounts, Ns, Greedy, Votes) = (task, columns, questionCounts, ns, greedy, votes);
        (AscSkipped, CorrectFlagMismatches) = (ascSkipped, correctFlagMismatches);
    }

    /// <summary>The task.</summary>
    public AnswerTask Task { get; }

    /// <summary>
    /// Column keys in display order: for MATH the seven canonical subjects in the paper's table order
    /// (C&amp;P, IntAlg, NT, Precalc, Prealg, Geo, Alg); for GSM8K the single <see cref="Evaluator.Gsm8kColumn"/>.
    /// </summary>
    public IReadOnlyList<string> Columns { get; }

    /// <summary>Questions per column (0 for a subject with none).</summary>
    public IReadOnlyDictionary<string, int> QuestionCounts { get; }

    /// <summary>The candidate counts evaluated: those of the requested N that every question has enough candidates for.</summary>
    public IReadOnlyList<int> Ns { get; }

    /// <summary>Greedy decoding, when greedy candidates were given.</summary>
    public AccuracyRow? Greedy { get; }

    /// <summary>SC, WS and ASC rows, for each N of <see cref="Ns"/> (ASC only when the candidates are scored).</summary>
    public IReadOnlyList<AccuracyRow> Votes { get; }

    /// <summary>Why there are no ASC rows (no candidate has a rank score); null when there are.</summary>
    public string? AscSkipped { get; }

    /// <summary>
    /// Candidates whose saved <see cref="Candidate.Correct"/> disagrees with the checker against the
    /// references given here (a sign that they were sampled against other references).
    /// </summary>
    public int CorrectFlagMismatches { get; }

    /// <summary>Number of questions.</summary>
    public int Questions => QuestionCounts.Values.Sum();

    /// <summary>The row of <paramref name="method"/> at <paramref name="n"/>, or null when it was not computed.</summary>
    public AccuracyRow? Find(VoteMethod method, int n) => Votes.FirstOrDefault(r => r.Method == method && r.N == n);
}

/// <summary>
/// Scores saved candidates: greedy accuracy and the SC / WS / ASC votes at every supported N, per
/// subject, all from one set of candidates (the vote at N uses each question's first N by index).
/// </summary>
public static class Evaluator
{
    /// <summary>The candidate counts the paper plots.</summary>
    public static readonly IReadOnlyList<int> DefaultNs = [1, 2, 4, 8, 16];

    /// <summary>The column key of a GSM8K report.</summary>
    public const string Gsm8kColumn = "gsm8k";

    /// <summary>MATH subjects in the column order of the paper's tables.</summary>
    public static readonly IReadOnlyList<string> PaperSubjectOrder =
    [
        "counting_and_probability",
        "intermediate_algebra",
        "number_theory",
        "precalculus",
        "prealgebra",
        "geometry",
        "algebra",
    ];

    /// <summary>The paper's short column names for the MATH subjects.</summary>
    public static string ShortName(string column) => column switch
    {
        "counting_and_probability" => "C&P",
        "intermediate_algebra" => "IntAlg",
        "number_theory" => "NT",
        "precalculus" => "Precalc",
        "prealgebra" => "Prealg",
        "geometry" => "Geo",
        "algebra" => "Alg",
        Gsm8kColumn => "GSM8K",
        _ => column,
    };

    /// <summary>"SC", "WS" or "ASC".</summary>
    public static string Name(VoteMethod method) => method switch
    {
        VoteMethod.Sc => "SC",
        VoteMethod.Ws => "WS",
        VoteMethod.Asc => "ASC",
        _ => throw new ArgumentOutOfRangeException(nameof(method), method, "unknown vote method"),
    };

    /// <summary>
    /// Evaluates <paramref name="samples"/> (N sampled candidates per question) and, when given,
    /// <paramref name="greedy"/> (one candidate per question) against <paramref name="questions"/>.
    /// Every candidate must belong to one of the questions; every question needs a greedy candidate
    /// when greedy ones are given. N runs over <paramref name="ns"/> (default 1, 2, 4, 8, 16), keeping
    /// those that every question has at least N candidates for. ASC rows are computed when the
    /// candidates carry rank scores; when none does they are left out (see
    /// <see cref="EvaluationReport.AscSkipped"/>), and a mix of scored and unscored answered candidates
    /// is an error. Subjects and correctness come from <paramref name="questions"/> and the checker, not from
    /// the candidates' own <see cref="Candidate.Subject"/> and <see cref="Candidate.Correct"/> (disagreeing
    /// saved flags are counted in <see cref="EvaluationReport.CorrectFlagMismatches"/>).
    /// </summary>
    public static EvaluationReport Evaluate(
        AnswerTask task,
        IReadOnlyList<EvalQuestion> questions,
        IEnumerable<Candidate> samples,
        IEnumerable<Candidate>? greedy = null,
        IReadOnlyList<int>? ns = null)
    {
        ArgumentNullException.ThrowIfNull(questions);
        ArgumentNullException.ThrowIfNull(samples);

        // Questions and their columns.
        var column = new Dictionary<string, string>(StringComparer.Ordinal);
        var reference = new Dictionary<string, string?>(StringComparer.Ordinal);
        IReadOnlyList<string> columns = task == AnswerTask.Math ? PaperSubjectOrder : [Gsm8kColumn];
        var counts = columns.ToDictionary(c => c, _ => 0, StringComparer.Ordinal);
        foreach (EvalQuestion q in questions)
        {
            string col = task == AnswerTask.Math ? MathSubjects.Canonical(q.Subject) : Gsm8kColumn;
            if (!counts.ContainsKey(col))
            {
                throw new ArgumentException($"question '{q.QuestionId}' has subject '{q.Subject}', which is not one of the 7 MATH subjects", nameof(questions));
            }

            if (!column.TryAdd(q.QuestionId, col))
            {
                throw new ArgumentException($"question '{q.QuestionId}' is listed twice", nameof(questions));
            }

            reference[q.QuestionId] = q.ReferenceAnswer;
            counts[col]++;
        }

        int mismatches = 0;

        // Sampled candidates per question, sorted by index, with their group keys computed once.
        var byQuestion = new Dictionary<string, List<Candidate>>(StringComparer.Ordinal);
        foreach (EvalQuestion q in questions)
        {
            byQuestion[q.QuestionId] = [];
        }

        int scored = 0;
        int unscored = 0;
        foreach (Candidate c in samples)
        {
            if (!byQuestion.TryGetValue(c.QuestionId, out List<Candidate>? list))
            {
                throw new ArgumentException($"sampled candidate {c.Index} belongs to question '{c.QuestionId}', which is not among the questions", nameof(samples));
            }

            list.Add(c);
            if (c.Answer is not null)
            {
                if (c.RankScore is null)
                {
                    unscored++;
                }
                else
                {
                    scored++;
                }
            }

            if (c.Correct != TaskAnswers.IsCorrect(task, c.Answer, reference[c.QuestionId]))
            {
                mismatches++;
            }
        }

        var prepared = new Dictionary<string, (Candidate[] Sorted, string?[] Keys)>(StringComparer.Ordinal);
        foreach ((string id, List<Candidate> list) in byQuestion)
        {
            Candidate[] sorted = Vote.FirstN(list, null);
            var keys = new string?[sorted.Length];
            for (int i = 0; i < sorted.Length; i++)
            {
                keys[i] = sorted[i].Answer is { } a ? TaskAnswers.GroupKey(task, a) : null;
            }

            prepared[id] = (sorted, keys);
        }

        int minCandidates = prepared.Count == 0 ? 0 : prepared.Values.Min(p => p.Sorted.Length);
        int[] supported = (ns ?? DefaultNs).Where(n => n >= 1 && n <= minCandidates).Distinct().Order().ToArray();

        string? ascSkipped = null;
        var methods = new List<VoteMethod> { VoteMethod.Sc, VoteMethod.Ws };
        if (scored > 0 && unscored > 0)
        {
            throw new InvalidDataException($"{scored} answered candidates have a rank score and {unscored} do not; score them all (or none) before evaluating");
        }

        if (scored > 0 || unscored == 0)
        {
            methods.Add(VoteMethod.Asc);
        }
        else
        {
            ascSkipped = "the candidates have no rank scores";
        }

        // Greedy.
        AccuracyRow? greedyRow = null;
        if (greedy is not null)
        {
            var credit = new Dictionary<string, double>(StringComparer.Ordinal);
            foreach (Candidate g in greedy)
            {
                if (!reference.TryGetValue(g.QuestionId, out string? r))
                {
                    throw new ArgumentException($"greedy candidate belongs to question '{g.QuestionId}', which is not among the questions", nameof(greedy));
                }

                if (!credit.TryAdd(g.QuestionId, TaskAnswers.IsCorrect(task, g.Answer, r) ? 1.0 : 0.0))
                {
                    throw new ArgumentException($"question '{g.QuestionId}' has more than one greedy candidate", nameof(greedy));
                }

                if (g.Correct != TaskAnswers.IsCorrect(task, g.Answer, r))
                {
                    mismatches++;
                }
            }

            foreach (EvalQuestion q in questions)
            {
                if (!credit.ContainsKey(q.QuestionId))
                {
                    throw new ArgumentException($"question '{q.QuestionId}' has no greedy candidate", nameof(greedy));
                }
            }

            greedyRow = MakeRow(null, null, questions, column, columns, counts, q => credit[q.QuestionId]);
        }

        // Votes.
        var rows = new List<AccuracyRow>();
        foreach (VoteMethod method in methods)
        {
            foreach (int n in supported)
            {
                rows.Add(MakeRow(method, n, questions, column, columns, counts, q =>
                {
                    (Candidate[] sorted, string?[] keys) = prepared[q.QuestionId];
                    return Vote.Tally(method, task, sorted, keys, n).Credit(q.ReferenceAnswer);
                }));
            }
        }

        return new EvaluationReport(task, columns, counts, supported, greedyRow, rows, ascSkipped, mismatches);
    }

    private static AccuracyRow MakeRow(
        VoteMethod? method,
        int? n,
        IReadOnlyList<EvalQuestion> questions,
        Dictionary<string, string> column,
        IReadOnlyList<string> columns,
        Dictionary<string, int> counts,
        Func<EvalQuestion, double> credit)
    {
        var sums = columns.ToDictionary(c => c, _ => 0.0, StringComparer.Ordinal);
        double total = 0.0;
        foreach (EvalQuestion q in questions)
        {
            double s = credit(q);
            sums[column[q.QuestionId]] += s;
            total += s;
        }

        var accuracy = new Dictionary<string, double>(StringComparer.Ordinal);
        foreach (string c in columns)
        {
            if (counts[c] > 0)
            {
                accuracy[c] = sums[c] / counts[c];
            }
        }

        double average = accuracy.Count == 0 ? 0.0 : accuracy.Values.Average();
        double pooled = questions.Count == 0 ? 0.0 : total / questions.Count;
        return new AccuracyRow(method, n, accuracy, average, pooled);
    }
}
