using System.Globalization;
using System.Text;

namespace NegDistill.Data.Evaluation;

/// <summary>
/// Renders evaluation reports as Markdown tables laid out like the paper's: one row per method or
/// aggregation, the seven MATH subjects (C&amp;P, IntAlg, NT, Precalc, Prealg, Geo, Alg) and Avg as
/// columns (a single GSM8K column for GSM8K), accuracies in percent with two decimals; then a table of
/// accuracy against the number of candidates N for SC, WS and ASC.
/// </summary>
public static class EvaluationMarkdown
{
    private const string Empty = "-";

    /// <summary>The tables of one system (e.g. the NAT student); <paramref name="system"/> prefixes the row labels when not empty.</summary>
    public static string Render(EvaluationReport report, string system = "") => Render([(system, report)]);

    /// <summary>
    /// The tables of several systems evaluated on the same questions, rows grouped by system. Each
    /// system contributes its greedy row (when it has one) and SC, WS, ASC at its largest N to the
    /// first table, and SC, WS, ASC to the second.
    /// </summary>
    public static string Render(IReadOnlyList<(string System, EvaluationReport Report)> systems)
    {
        ArgumentNullException.ThrowIfNull(systems);
        if (systems.Count == 0)
        {
            throw new ArgumentException("nothing to render", nameof(systems));
        }

        EvaluationReport first = systems[0].Report;
        foreach ((string name, EvaluationReport r) in systems)
        {
            if (r.Task != first.Task || !r.Columns.SequenceEqual(first.Columns) || r.Columns.Any(c => r.QuestionCounts[c] != first.QuestionCounts[c]))
            {
                throw new ArgumentException($"system '{name}' was evaluated on a different question set than '{systems[0].System}'", nameof(systems));
            }
        }

        bool math = first.Task == AnswerTask.Math;
        var sb = new StringBuilder();

        // Table 1: methods × subjects.
        sb.Append(math ? "**MATH test accuracy (%)**" : "**GSM8K test accuracy (%)**").Append("\n\n");
        sb.Append("| Method |");
        foreach (string c in first.Columns)
        {
            sb.Append(' ').Append(Evaluator.ShortName(c)).Append(" (n=").Append(first.QuestionCounts[c].ToString(CultureInfo.InvariantCulture)).Append(") |");
        }

        if (math)
        {
            sb.Append(" Avg |");
        }

        sb.Append('\n').Append("|:---|");
        int numeric = first.Columns.Count + (math ? 1 : 0);
        for (int i = 0; i < numeric; i++)
        {
            sb.Append("---:|");
        }

        sb.Append('\n');
        foreach ((string name, EvaluationReport r) in systems)
        {
            if (r.Greedy is { } g)
            {
                AppendRow(sb, Label(name, "greedy"), r, g, math);
            }

            if (r.Ns.Count > 0)
            {
                int n = r.Ns[^1];
                foreach (VoteMethod m in Enum.GetValues<VoteMethod>())
                {
                    if (r.Find(m, n) is { } row)
                    {
                        AppendRow(sb, Label(name, Evaluator.Name(m) + " (N=" + n.ToString(CultureInfo.InvariantCulture) + ")"), r, row, math);
                    }
                }
            }
        }

        // Table 2: aggregations × N.
        int[] allNs = systems.SelectMany(s => s.Report.Ns).Distinct().Order().ToArray();
        if (allNs.Length > 0)
        {
            sb.Append('\n').Append(math ? "**Accuracy (%) against the number of candidates N (Avg over subjects)**" : "**Accuracy (%) against the number of candidates N**").Append("\n\n");
            sb.Append("| Aggregation |");
            foreach (int n in allNs)
            {
                sb.Append(" N=").Append(n.ToString(CultureInfo.InvariantCulture)).Append(" |");
            }

            sb.Append('\n').Append("|:---|");
            foreach (int _ in allNs)
            {
                sb.Append("---:|");
            }

            sb.Append('\n');
            foreach ((string name, EvaluationReport r) in systems)
            {
                foreach (VoteMethod m in Enum.GetValues<VoteMethod>())
                {
                    if (!r.Votes.Any(v => v.Method == m))
                    {
                        continue;
                    }

                    sb.Append("| ").Append(Label(name, Evaluator.Name(m))).Append(" |");
                    foreach (int n in allNs)
                    {
                        sb.Append(' ').Append(r.Find(m, n) is { } row ? Percent(row.Average) : Empty).Append(" |");
                    }

                    sb.Append('\n');
                }
            }
        }

        // Notes.
        sb.Append('\n');
        if (math)
        {
            sb.Append("Avg is the unweighted mean of the per-subject accuracies (as the paper reports its average over the 7 subjects), not accuracy pooled over questions; a subject with n=0 shows ")
                .Append(Empty).Append(" and is left out of Avg. n is the number of questions.\n");
        }
        else
        {
            sb.Append("n is the number of questions.\n");
        }

        sb.Append("Votes over each question's first N sampled candidates; answers grouped by the ")
            .Append(math ? "MATH checker (is_equiv)" : "GSM8K checker (numeric value)")
            .Append("; candidates without an answer do not vote; k answers tied for the top score earn 1/k when the correct one is among them. ")
            .Append("Weights: SC 1, WS exp(log p / tokens) (length-normalised sequence probability), ASC the ranking model's score.\n");
        foreach ((string name, EvaluationReport r) in systems)
        {
            string who = name.Length > 0 ? name + ": " : "";
            if (r.AscSkipped is { } why)
            {
                sb.Append(who).Append("ASC not computed (").Append(why).Append(").\n");
            }

            if (r.Ns.Count == 0)
            {
                sb.Append(who).Append("no vote computed (some question has fewer sampled candidates than the smallest N).\n");
            }

            if (r.CorrectFlagMismatches > 0)
            {
                sb.Append(who).Append("warning: ").Append(r.CorrectFlagMismatches.ToString(CultureInfo.InvariantCulture))
                    .Append(" candidates were saved as correct/incorrect differently from these references.\n");
            }
        }

        return sb.ToString();
    }

    /// <summary>An accuracy fraction as a percentage with two decimals, invariant culture.</summary>
    public static string Percent(double fraction) => (fraction * 100.0).ToString("F2", CultureInfo.InvariantCulture);

    private static void AppendRow(StringBuilder sb, string label, EvaluationReport r, AccuracyRow row, bool math)
    {
        sb.Append("| ").Append(label).Append(" |");
        foreach (string c in r.Columns)
        {
            sb.Append(' ').Append(row.Accuracy.TryGetValue(c, out double a) ? Percent(a) : Empty).Append(" |");
        }

        if (math)
        {
            sb.Append(' ').Append(row.Accuracy.Count > 0 ? Percent(row.Average) : Empty).Append(" |");
        }

        sb.Append('\n');
    }

    private static string Label(string system, string method)
    {
        string s = system.Replace("|", "\\|", StringComparison.Ordinal);
        if (s.Length == 0)
        {
            return method;
        }

        return method == "greedy" ? s + " greedy" : s + " + " + method;
    }
}
