using System.Globalization;
using System.Text;

namespace NegDistill.Data;

/// <summary>Renders a <see cref="SplitSummary"/> as a plain-text table (for the CLI).</summary>
public static class SplitReport
{
    /// <summary>Loads and splits a teacher-data file, folder or glob (malformed records skipped and counted), and renders the result.</summary>
    public static string RenderPath(string pathOrGlob, SplitOptions? options = null, MalformedPolicy policy = MalformedPolicy.Skip)
    {
        var loader = new TeacherDataLoader(policy);
        var splitter = new DatasetSplitter((options ?? new SplitOptions()) with { CollectPairs = false });
        SplitSummary summary = splitter.Run(loader.Load(pathOrGlob), onPair: null, loader.Report);
        return Render(summary, pathOrGlob, loader.Report);
    }

    /// <summary>The table: totals, per subject, per level, the question-level view, malformed entries and the throughput.</summary>
    public static string Render(SplitSummary summary, string? source = null, LoadReport? load = null)
    {
        ArgumentNullException.ThrowIfNull(summary);
        var ci = CultureInfo.InvariantCulture;
        var sb = new StringBuilder();
        sb.Append("D_pos / D_neg split").Append(source is null ? "" : " of " + source).AppendLine();
        sb.AppendLine(ci, $"pair kept when len(question + \"\\n\" + rationale) < {summary.Options.MaxTextLength} code points");
        sb.AppendLine();

        var rows = new List<string[]>
        {
            new[] { "", "rationales", "positives", "negatives", "dropped", "(pos)", "(neg)", "malformed" },
        };
        rows.Add(Row("all", summary.Rationales, summary.Positives, summary.Negatives, summary.DroppedPositives, summary.DroppedNegatives, summary.MalformedRationales));
        rows.Add(Array.Empty<string>());
        foreach ((string subject, SplitCounts c) in summary.BySubject)
        {
            rows.Add(Row(subject, c));
        }

        rows.Add(Array.Empty<string>());
        foreach ((string level, SplitCounts c) in summary.ByLevel)
        {
            rows.Add(Row(level, c));
        }

        AppendTable(sb, rows);
        sb.AppendLine();

        QuestionCounts q = summary.Questions;
        sb.AppendLine(ci, $"records (questions)            {q.Total,10:N0}");
        sb.AppendLine(ci, $"  with a kept positive         {q.WithPositive,10:N0}");
        sb.AppendLine(ci, $"  only negatives kept          {q.OnlyNegatives,10:N0}");
        sb.AppendLine(ci, $"  nothing kept                 {q.NoneKept,10:N0}");
        sb.AppendLine(ci, $"  all rationales kept positive {q.AllPositive,10:N0}");
        sb.AppendLine(ci, $"  correct before length filter {q.WithPositiveBeforeLengthFilter,10:N0}");
        sb.AppendLine(ci, $"  positives all dropped        {q.PositivesOnlyDropped,10:N0}");
        sb.AppendLine(ci, $"  reference without answer     {q.ReferenceWithoutAnswer,10:N0}");
        sb.AppendLine(ci, $"malformed records skipped      {summary.MalformedRecords,10:N0}");
        if (load is not null)
        {
            sb.AppendLine(ci, $"files {load.Files:N0}, lines {load.Lines:N0}, blank lines {load.BlankLines:N0}, problems {load.Problems:N0}");
            foreach (MalformedEntry e in load.Entries.Take(20))
            {
                sb.Append("  ").AppendLine(e.ToString());
            }

            if (load.Problems > 20)
            {
                sb.AppendLine(ci, $"  ... and {load.Problems - 20:N0} more");
            }
        }

        sb.AppendLine(ci, $"invariant positives + negatives + dropped + malformed = rationales: {(summary.InvariantHolds ? "holds" : "VIOLATED")}");
        double mb = summary.InputBytes / (1024.0 * 1024.0);
        string read = summary.InputBytes > 0
            ? string.Format(ci, ", {0:F1} MiB read ({1:F1} MiB/s)", mb, mb / Math.Max(summary.Elapsed.TotalSeconds, 1e-9))
            : "";
        sb.AppendLine(ci, $"throughput: {summary.Rationales:N0} rationales in {summary.Elapsed.TotalSeconds:F3} s = {summary.RationalesPerSecond:N0} rationales/s{read}");
        return sb.ToString();
    }

    private static string[] Row(string name, SplitCounts c) =>
        Row(name, c.Rationales, c.Positives, c.Negatives, c.DroppedPositives, c.DroppedNegatives, c.Malformed);

    private static string[] Row(string name, long total, long pos, long neg, long dpos, long dneg, long malformed)
    {
        var ci = CultureInfo.InvariantCulture;
        return [name, total.ToString("N0", ci), pos.ToString("N0", ci), neg.ToString("N0", ci), (dpos + dneg).ToString("N0", ci), dpos.ToString("N0", ci), dneg.ToString("N0", ci), malformed.ToString("N0", ci)];
    }

    private static void AppendTable(StringBuilder sb, List<string[]> rows)
    {
        int cols = rows[0].Length;
        int[] width = new int[cols];
        foreach (string[] r in rows)
        {
            for (int i = 0; i < r.Length; i++)
            {
                width[i] = Math.Max(width[i], r[i].Length);
            }
        }

        int total = width.Sum() + 2 * (cols - 1);
        foreach (string[] r in rows)
        {
            if (r.Length == 0)
            {
                sb.Append('-', total).AppendLine();
                continue;
            }

            for (int i = 0; i < cols; i++)
            {
                if (i > 0)
                {
                    sb.Append("  ");
                }

                sb.Append(i == 0 ? r[i].PadRight(width[i]) : r[i].PadLeft(width[i]));
            }

            sb.AppendLine();
        }
    }
}
