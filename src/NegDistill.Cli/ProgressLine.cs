using System.Diagnostics;

namespace NegDistill.Cli;

/// <summary>A one-line progress bar with ETA, redrawn in place on a terminal and printed every tenth
/// of the run when output is redirected (CI logs).</summary>
sealed class ProgressLine(string name, int total)
{
    readonly Stopwatch _sw = Stopwatch.StartNew();
    int _lastPrinted = -1;

    public void Update(int done, string info)
    {
        double frac = (double)done / total;
        var eta = done > 0 ? TimeSpan.FromSeconds(_sw.Elapsed.TotalSeconds * (total - done) / done) : TimeSpan.Zero;
        int width = 24, fill = (int)(frac * width);
        string line = $"{name,-9} [{new string('#', fill)}{new string('.', width - fill)}] {done}/{total}  {info}  ETA {eta:mm\\:ss}";
        if (!Console.IsOutputRedirected) Console.Write("\r" + line.PadRight(Math.Max(0, Console.WindowWidth - 1)));
        else if (done * 10 / total != _lastPrinted) { _lastPrinted = done * 10 / total; Console.WriteLine(line); }
    }

    public void Finish()
    {
        if (!Console.IsOutputRedirected) Console.WriteLine();
    }
}
