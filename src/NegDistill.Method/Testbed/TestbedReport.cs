using System.Globalization;
using System.Text;
using NegDistill.Data.Evaluation;

namespace NegDistill.Method.Testbed;

/// <summary>One evaluated model: its greedy verdict on every test problem, per seed (Correct[seed][problem]).</summary>
public sealed record ModelScores(string Stage, string Label, IReadOnlyList<bool[]> Correct);

/// <summary>A model's row of the accuracy table.</summary>
/// <param name="Mean">accuracy averaged over seeds (0–1); <paramref name="Sd"/> its sample sd across seeds.</param>
/// <param name="Lo">pooled Wilson interval over every (problem, seed) pair.</param>
/// <param name="ByLevel">pooled accuracy per level 1..5.</param>
/// <param name="VsReference">the paired comparison with the reference method (null for the reference itself).</param>
public sealed record MethodAccuracy(string Stage, string Label, double Mean, double Sd, double Lo, double Hi, int Correct, int Trials, double[] ByLevel, PairedComparison? VsReference);

/// <summary>The paper's intersection analysis for one seed: problems the negative-only model solves and the positive-only model misses, and the reverse.</summary>
public sealed record Intersection(int OnlyNegative, int OnlyPositive, int Both, int Neither)
{
    public int Negative => OnlyNegative + Both;
    public int Positive => OnlyPositive + Both;
    public int Union => OnlyNegative + OnlyPositive + Both;
}

/// <summary>The testbed's tables, as pure functions of the verdicts (tested on hand-made inputs).</summary>
public static class TestbedReport
{
    static readonly CultureInfo Inv = CultureInfo.InvariantCulture;
    static string F(double x, string fmt = "F1") => x.ToString(fmt, Inv);

    /// <summary>Accuracy of <paramref name="correct"/> on the problems of each level 1..<paramref name="levels"/>.Max().</summary>
    public static double[] ByLevel(IReadOnlyList<bool[]> correct, IReadOnlyList<int> level)
    {
        int maxLevel = level.Max();
        var k = new int[maxLevel + 1];
        var n = new int[maxLevel + 1];
        foreach (var seed in correct)
        {
            if (seed.Length != level.Count) throw new ArgumentException($"a verdict per problem: {seed.Length} verdicts for {level.Count} problems");
            for (int i = 0; i < seed.Length; i++) { n[level[i]]++; if (seed[i]) k[level[i]]++; }
        }
        return Enumerable.Range(1, maxLevel).Select(l => n[l] > 0 ? (double)k[l] / n[l] : double.NaN).ToArray();
    }

    /// <summary>Verdicts as [problem][seed], the layout <see cref="Stats.Paired"/> takes.</summary>
    public static List<bool[]> ByProblem(IReadOnlyList<bool[]> bySeed) =>
        Enumerable.Range(0, bySeed[0].Length).Select(i => bySeed.Select(s => s[i]).ToArray()).ToList();

    /// <summary>Each model's accuracy (mean ± sd across seeds, pooled Wilson interval), per level, and its
    /// paired comparison with <paramref name="reference"/> on the same problems and seeds.</summary>
    public static List<MethodAccuracy> Accuracy(IReadOnlyList<ModelScores> models, IReadOnlyList<int> level, string reference)
    {
        var refModel = models.FirstOrDefault(m => m.Stage == reference) ?? throw new ArgumentException($"no model '{reference}' to compare with");
        var refByProblem = ByProblem(refModel.Correct);
        var rows = new List<MethodAccuracy>();
        foreach (var m in models)
        {
            if (m.Correct.Count != refModel.Correct.Count) throw new ArgumentException($"{m.Stage}: {m.Correct.Count} seeds, {reference} has {refModel.Correct.Count}");
            var perSeed = m.Correct.Select(s => s.Count(c => c) / (double)s.Length).ToList();
            var (mean, sd) = Stats.MeanSd(perSeed);
            int k = m.Correct.Sum(s => s.Count(c => c)), n = m.Correct.Sum(s => s.Length);
            var (lo, hi) = Stats.Wilson(k, n);
            var paired = m.Stage == reference ? null : Stats.Paired(ByProblem(m.Correct), refByProblem);
            rows.Add(new MethodAccuracy(m.Stage, m.Label, mean, sd, lo, hi, k, n, ByLevel(m.Correct, level), paired));
        }
        return rows;
    }

    public static Intersection Intersect(bool[] negative, bool[] positive)
    {
        if (negative.Length != positive.Length) throw new ArgumentException("both models need a verdict on the same problems");
        int on = 0, op = 0, both = 0, neither = 0;
        for (int i = 0; i < negative.Length; i++)
        {
            if (negative[i] && positive[i]) both++;
            else if (negative[i]) on++;
            else if (positive[i]) op++;
            else neither++;
        }
        return new Intersection(on, op, both, neither);
    }

    /// <summary>Vote accuracy at N = 1..<paramref name="maxN"/> for one seed's candidates: per question, the
    /// first N candidates by index are voted and the credit (1/k among k tied winners) averaged.</summary>
    public static double[] VoteCurve(VoteMethod method, AnswerTask task, IReadOnlyList<TestQuestion> questions, IReadOnlyList<Candidate> candidates, int maxN)
    {
        var byQ = candidates.GroupBy(c => c.QuestionId).ToDictionary(g => g.Key, g => g.ToList());
        var curve = new double[maxN];
        for (int n = 1; n <= maxN; n++)
        {
            double sum = 0;
            foreach (var q in questions)
            {
                if (!byQ.TryGetValue(q.Id, out var cs)) throw new ArgumentException($"question '{q.Id}' has no candidates");
                sum += Vote.By(method, task, cs, n).Credit(q.ReferenceAnswer);
            }
            curve[n - 1] = sum / questions.Count;
        }
        return curve;
    }

    // ---------------------------------------------------------------- Markdown

    public static string PremiseTable(IReadOnlyList<PremiseRow> rows)
    {
        var sb = new StringBuilder();
        sb.AppendLine("| level (steps) | problems | rationales | positive % | negatives: slip / wrong op / dropped step / wrong final copy | negatives' steps right before the first error (mean share) | negatives with ≥ 1 right step | negatives with every step right (wrong final copy) |");
        sb.AppendLine("|---|---|---|---|---|---|---|---|");
        foreach (var r in rows.Append(Total(rows)))
            sb.AppendLine($"| {(r.Level == 0 ? "all" : r.Level.ToString(Inv))} | {r.Problems} | {r.Rationales} | {F(100.0 * r.Positives / Math.Max(1, r.Rationales))} | {r.Slips} / {r.WrongOperations} / {r.DroppedSteps} / {r.WrongFinalCopies} | {F(100 * r.NegativeCorrectStepShare, "F0")} % | {F(100.0 * r.NegativesWithACorrectStep / Math.Max(1, r.Negatives), "F0")} % | {F(100.0 * r.NegativesAllStepsRight / Math.Max(1, r.Negatives), "F0")} % |");
        return sb.ToString();
    }

    static PremiseRow Total(IReadOnlyList<PremiseRow> rows)
    {
        int neg = rows.Sum(r => r.Negatives);
        double share = neg > 0 ? rows.Sum(r => r.NegativeCorrectStepShare * r.Negatives) / neg : 0;
        return new PremiseRow(0, rows.Sum(r => r.Problems), rows.Sum(r => r.Rationales), rows.Sum(r => r.Positives), rows.Sum(r => r.Slips), rows.Sum(r => r.WrongOperations),
            rows.Sum(r => r.DroppedSteps), rows.Sum(r => r.WrongFinalCopies), share, rows.Sum(r => r.NegativesWithACorrectStep), rows.Sum(r => r.NegativesAllStepsRight));
    }

    /// <summary>p-values below 0.001 as "&lt; 0.001", else three decimals.</summary>
    public static string P(double p) => p < 0.001 ? "< 0.001" : F(p, "F3");

    public static string AccuracyTable(IReadOnlyList<MethodAccuracy> rows, string referenceLabel, int seeds, int problems)
    {
        int levels = rows[0].ByLevel.Length;
        var sb = new StringBuilder();
        sb.AppendLine($"| method | accuracy % (mean ± sd, {seeds} seed{(seeds == 1 ? "" : "s")}) | 95 % CI (Wilson, {seeds} × {problems}) | Δ vs {referenceLabel} (pp) [95 % paired bootstrap] | McNemar exact p (only this / only KD) | "
            + string.Join(" | ", Enumerable.Range(1, levels).Select(l => $"L{l}")) + " |");
        sb.AppendLine("|---|---|---|---|---|" + string.Concat(Enumerable.Repeat("---|", levels)));
        foreach (var r in rows)
        {
            string delta = r.VsReference is { } c ? $"{Signed(100 * c.Delta)} [{Signed(100 * c.Lo)}, {Signed(100 * c.Hi)}]" : "—";
            string p = r.VsReference is { } d ? $"{P(d.PValue)} ({d.OnlyA} / {d.OnlyB})" : "—";
            sb.AppendLine($"| {r.Label} | {F(100 * r.Mean)} ± {F(100 * r.Sd)} | {F(100 * r.Lo)}–{F(100 * r.Hi)} | {delta} | {p} | "
                + string.Join(" | ", r.ByLevel.Select(a => F(100 * a, "F0"))) + " |");
        }
        return sb.ToString();
    }

    /// <summary>Paired comparisons of chosen pairs (a, b): Δ = a − b with its bootstrap interval and McNemar's p.</summary>
    public static string PairTable(IReadOnlyList<(string A, string B, PairedComparison C)> pairs)
    {
        var sb = new StringBuilder();
        sb.AppendLine("| a | b | Δ a − b (pp) [95 % paired bootstrap] | McNemar exact p (only a / only b) |");
        sb.AppendLine("|---|---|---|---|");
        foreach (var (a, b, c) in pairs)
            sb.AppendLine($"| {a} | {b} | {Signed(100 * c.Delta)} [{Signed(100 * c.Lo)}, {Signed(100 * c.Hi)}] | {P(c.PValue)} ({c.OnlyA} / {c.OnlyB}) |");
        return sb.ToString();
    }

    static string Signed(double x) => (x >= 0 ? "+" : "−") + F(Math.Abs(x));

    public static string IntersectionTable(IReadOnlyList<Intersection> perSeed, string negLabel, string posLabel)
    {
        (double M, double Sd) Of(Func<Intersection, double> f) => Stats.MeanSd(perSeed.Select(f).ToList());
        string Row(string what, Func<Intersection, double> f) { var (m, sd) = Of(f); return $"| {what} | {F(m)} ± {F(sd)} |"; }
        var sb = new StringBuilder();
        sb.AppendLine($"| test problems (mean ± sd over {perSeed.Count} seed{(perSeed.Count == 1 ? "" : "s")}) | count |");
        sb.AppendLine("|---|---|");
        sb.AppendLine(Row($"solved by {negLabel} and missed by {posLabel}", i => i.OnlyNegative));
        sb.AppendLine(Row($"solved by {posLabel} and missed by {negLabel}", i => i.OnlyPositive));
        sb.AppendLine(Row("solved by both", i => i.Both));
        sb.AppendLine(Row("solved by either (the union)", i => i.Union));
        sb.AppendLine(Row($"share of {negLabel}'s solved problems that {posLabel} misses (%)", i => i.Negative > 0 ? 100.0 * i.OnlyNegative / i.Negative : 0));
        return sb.ToString();
    }

    public static string VoteTable(IReadOnlyDictionary<VoteMethod, IReadOnlyList<double[]>> curves, string student)
    {
        int maxN = curves.Values.First()[0].Length;
        var sb = new StringBuilder();
        sb.AppendLine($"| {student}, accuracy % (mean over seeds) | " + string.Join(" | ", Enumerable.Range(1, maxN).Select(n => $"N={n}")) + " |");
        sb.AppendLine("|---|" + string.Concat(Enumerable.Repeat("---|", maxN)));
        foreach (var (method, seeds) in curves)
            sb.AppendLine($"| {Evaluator.Name(method)} | " + string.Join(" | ", Enumerable.Range(0, maxN).Select(i => F(100 * seeds.Average(s => s[i])))) + " |");
        return sb.ToString();
    }
}
