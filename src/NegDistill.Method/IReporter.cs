using System.Diagnostics;

namespace NegDistill.Method;

/// <summary>Where the method's runs say what they do: lines (plans, what was loaded, results) and
/// progress bars. The CLI prints them to the console; tests and callers can keep them.</summary>
public interface IReporter
{
    void Line(string text);
    /// <summary>Progress of <paramref name="name"/>: <paramref name="done"/> of <paramref name="total"/>.</summary>
    void Progress(string name, int done, int total, string info);
    /// <summary>The progress of <paramref name="name"/> is over.</summary>
    void EndProgress(string name);
}

/// <summary>Writes to a <see cref="TextWriter"/>. Interactive: one bar redrawn in place with its ETA;
/// otherwise (a log, a redirected console) a bar line every tenth of the run.</summary>
public sealed class TextReporter(TextWriter output, bool interactive = false, int width = 80) : IReporter
{
    readonly Dictionary<string, (Stopwatch Clock, int LastTenth)> _bars = new();

    /// <summary>The console: interactive unless standard output is redirected.</summary>
    public static TextReporter Console() =>
        new(System.Console.Out, !System.Console.IsOutputRedirected, System.Console.IsOutputRedirected ? 80 : Math.Max(20, System.Console.WindowWidth));

    public void Line(string text) => output.WriteLine(text);

    public void Progress(string name, int done, int total, string info)
    {
        if (!_bars.TryGetValue(name, out var bar)) _bars[name] = bar = (Stopwatch.StartNew(), -1);
        double frac = total > 0 ? (double)done / total : 1;
        var eta = done > 0 ? TimeSpan.FromSeconds(bar.Clock.Elapsed.TotalSeconds * (total - done) / done) : TimeSpan.Zero;
        int cells = 24, fill = (int)(frac * cells);
        string line = $"{name,-9} [{new string('#', fill)}{new string('.', cells - fill)}] {done}/{total}  {info}  ETA {eta:mm\\:ss}";
        if (interactive) output.Write("\r" + line.PadRight(Math.Max(0, width - 1)));
        else if (done * 10 / Math.Max(1, total) != bar.LastTenth)
        {
            _bars[name] = (bar.Clock, done * 10 / Math.Max(1, total));
            output.WriteLine(line);
        }
    }

    public void EndProgress(string name)
    {
        _bars.Remove(name);
        if (interactive) output.WriteLine();
    }
}
