using System.Globalization;

namespace NegDistill.Data.Evaluation;

/// <summary>One line of a plot: points (X[i], Y[i]), drawn in order.</summary>
public sealed record PlotSeries(string Name, IReadOnlyList<double> X, IReadOnlyList<double> Y);

/// <summary>Size and axis options of a <see cref="LinePlot"/>.</summary>
/// <param name="Width">Image width in pixels.</param>
/// <param name="Height">Image height in pixels.</param>
/// <param name="XTicks">Fixed x-axis ticks (position, label); automatic ticks when null.</param>
/// <param name="Markers">Draw a marker at every point (good for few points; off for long loss curves).</param>
public sealed record PlotOptions(int Width = 800, int Height = 500, IReadOnlyList<(double Position, string Label)>? XTicks = null, bool Markers = true);

/// <summary>
/// Line charts saved as PNG, rendered with ScottPlot 5 (SkiaSharp). Used for accuracy against N, and
/// reusable for loss curves or α per layer.
/// </summary>
public static class LinePlot
{
    /// <summary>Saves an 800×500 chart of <paramref name="series"/> to <paramref name="path"/>.</summary>
    public static void Save(string path, string title, string xLabel, string yLabel, params PlotSeries[] series) =>
        Save(path, title, xLabel, yLabel, series, new PlotOptions());

    /// <summary>
    /// Saves a line chart to <paramref name="path"/> (PNG, the folder is created). Points whose x or y
    /// is not finite are skipped (a diverged loss does not break the chart). A legend is shown when a
    /// series has a name.
    /// </summary>
    public static void Save(string path, string title, string xLabel, string yLabel, IReadOnlyList<PlotSeries> series, PlotOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(title);
        ArgumentNullException.ThrowIfNull(xLabel);
        ArgumentNullException.ThrowIfNull(yLabel);
        ArgumentNullException.ThrowIfNull(series);
        options ??= new PlotOptions();
        ArgumentOutOfRangeException.ThrowIfLessThan(options.Width, 64, nameof(options));
        ArgumentOutOfRangeException.ThrowIfLessThan(options.Height, 64, nameof(options));

        var plot = new ScottPlot.Plot();
        try
        {
            bool named = false;
            foreach (PlotSeries s in series)
            {
                if (s.X.Count != s.Y.Count)
                {
                    throw new ArgumentException($"series '{s.Name}' has {s.X.Count} x values and {s.Y.Count} y values", nameof(series));
                }

                var xs = new List<double>(s.X.Count);
                var ys = new List<double>(s.Y.Count);
                for (int i = 0; i < s.X.Count; i++)
                {
                    if (double.IsFinite(s.X[i]) && double.IsFinite(s.Y[i]))
                    {
                        xs.Add(s.X[i]);
                        ys.Add(s.Y[i]);
                    }
                }

                if (xs.Count == 0)
                {
                    continue;
                }

                ScottPlot.Plottables.Scatter line = plot.Add.Scatter(xs.ToArray(), ys.ToArray());
                line.LineWidth = 2;
                line.MarkerSize = options.Markers ? 7 : 0;
                if (!string.IsNullOrEmpty(s.Name))
                {
                    line.LegendText = s.Name;
                    named = true;
                }
            }

            plot.Title(title);
            plot.XLabel(xLabel);
            plot.YLabel(yLabel);
            if (options.XTicks is { Count: > 0 } ticks)
            {
                plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual(
                    ticks.Select(t => t.Position).ToArray(),
                    ticks.Select(t => t.Label).ToArray());
            }

            if (named)
            {
                plot.ShowLegend(ScottPlot.Edge.Right); // outside the data area, so it never hides a line
            }

            string? dir = Path.GetDirectoryName(Path.GetFullPath(path));
            if (!string.IsNullOrEmpty(dir))
            {
                Directory.CreateDirectory(dir);
            }

            plot.SavePng(path, options.Width, options.Height);
        }
        finally
        {
            plot.Dispose();
        }
    }

    /// <summary>
    /// Accuracy (%, the subject average for MATH) against N for SC, WS and ASC of each system, with N on
    /// a log₂ axis labelled 1, 2, 4, 8, 16 as in the paper's figure.
    /// </summary>
    public static void SaveAccuracyVsN(string path, IReadOnlyList<(string System, EvaluationReport Report)> systems, string? title = null, int width = 800, int height = 500)
    {
        ArgumentNullException.ThrowIfNull(systems);
        var series = new List<PlotSeries>();
        var ns = new SortedSet<int>();
        foreach ((string name, EvaluationReport r) in systems)
        {
            foreach (VoteMethod m in Enum.GetValues<VoteMethod>())
            {
                AccuracyRow[] rows = r.Votes.Where(v => v.Method == m).OrderBy(v => v.N).ToArray();
                if (rows.Length == 0)
                {
                    continue;
                }

                foreach (AccuracyRow row in rows)
                {
                    ns.Add(row.N!.Value);
                }

                string label = name.Length > 0 ? name + " " + Evaluator.Name(m) : Evaluator.Name(m);
                series.Add(new PlotSeries(label, rows.Select(v => Math.Log2(v.N!.Value)).ToArray(), rows.Select(v => 100.0 * v.Average).ToArray()));
            }
        }

        string task = systems.Count > 0 && systems[0].Report.Task == AnswerTask.Gsm8k ? "GSM8K" : "MATH";
        var ticks = ns.Select(n => (Math.Log2(n), n.ToString(CultureInfo.InvariantCulture))).ToArray();
        Save(path, title ?? task + ": accuracy against the number of candidates", "N (candidates per question)", task == "MATH" ? "accuracy (%, mean over subjects)" : "accuracy (%)",
            series, new PlotOptions(width, height, ticks));
    }

    /// <summary><see cref="SaveAccuracyVsN(string, IReadOnlyList{ValueTuple{string, EvaluationReport}}, string?, int, int)"/> for one system.</summary>
    public static void SaveAccuracyVsN(string path, EvaluationReport report, string? title = null, int width = 800, int height = 500) =>
        SaveAccuracyVsN(path, [("", report)], title, width, height);
}
