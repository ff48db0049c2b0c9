using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace NegDistill.GpuCheck;

/// <summary>One comparison of the device against the CPU twin.</summary>
public sealed record CheckRow(string Part, string Family, string Op, string Shape, double RelErr, double Tolerance, long BadElements, bool Pass, string? Note = null);

/// <summary>One timed kernel: median seconds and the napkin math beside it.</summary>
public sealed record TimingRow(string Family, string Op, string Shape, double MedianMs, double Flops, double Bytes, int Samples)
{
    public double Tflops => Flops > 0 ? Flops / (MedianMs * 1e-3) / 1e12 : 0;
    public double Gbps => Bytes > 0 ? Bytes / (MedianMs * 1e-3) / 1e9 : 0;
}

/// <summary>One whole training step or decoding run.</summary>
public sealed record StageRow(string Stage, string Setting, double MsPerStep, double TokensPerSecond, double Tflops, double PeakGib, double PlanGib, int Steps);

/// <summary>Everything gpu-check measured, written as report.json (for tools/gpu/combine.py) and report.md.</summary>
public sealed class GpuReport
{
    public string Started { get; set; } = DateTime.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture);
    public List<string> Header { get; } = new();
    public string Device { get; set; } = "";
    public bool DeviceReady { get; set; }
    public string MatMulPath { get; set; } = "";
    public double CopyGbps { get; set; }
    public double BestMatMulTflops { get; set; }
    public string BestMatMulWhat { get; set; } = "";
    public List<CheckRow> Checks { get; } = new();
    public List<TimingRow> Timings { get; } = new();
    public List<StageRow> Stages { get; } = new();
    public List<string> NotReached { get; } = new();
    public List<string> Notes { get; } = new();
    public double Seconds { get; set; }

    public int Failed => Checks.Count(c => !c.Pass);

    static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
    };

    public void Write(string dir)
    {
        Directory.CreateDirectory(dir);
        WriteText(Path.Combine(dir, "report.json"), JsonSerializer.Serialize(this, Json));
        WriteText(Path.Combine(dir, "report.md"), Markdown());
    }

    static void WriteText(string path, string text) =>
        Checkpoints.AtomicFile.Write(path, s => { var b = Encoding.UTF8.GetBytes(text); s.Write(b, 0, b.Length); });

    static string F(double v, int digits = 2) => double.IsFinite(v) ? v.ToString("F" + digits, CultureInfo.InvariantCulture) : v.ToString(CultureInfo.InvariantCulture);
    /// <summary>Three significant digits: 0.00123, 12.3, 4560.</summary>
    static string G(double v) => double.IsFinite(v) ? (v == 0 ? "0" : Math.Round(v, Math.Max(0, 2 - (int)Math.Floor(Math.Log10(Math.Abs(v))))).ToString(CultureInfo.InvariantCulture)) : v.ToString(CultureInfo.InvariantCulture);
    static string E(double v) => double.IsFinite(v) ? v.ToString("0.0e+0", CultureInfo.InvariantCulture) : v.ToString(CultureInfo.InvariantCulture);

    public string Markdown()
    {
        var sb = new StringBuilder();
        sb.AppendLine("# negdistill gpu-check");
        sb.AppendLine();
        foreach (var h in Header) sb.AppendLine($"- {h}");
        sb.AppendLine($"- device: {Device}");
        sb.AppendLine($"- matmul path: {MatMulPath}");
        sb.AppendLine($"- ran {F(Seconds, 0)} s");
        sb.AppendLine();
        sb.AppendLine("## Correctness: device against the CPU twin (fresh random inputs, outputs NaN-poisoned)");
        sb.AppendLine();
        sb.AppendLine("| part | family | op | shape | ‖Δ‖/‖ref‖ | tolerance | bad elements | result |");
        sb.AppendLine("|---|---|---|---|---|---|---|---|");
        foreach (var c in Checks)
            sb.AppendLine($"| {c.Part} | {c.Family} | {c.Op} | {c.Shape} | {E(c.RelErr)} | {E(c.Tolerance)} | {c.BadElements} | {(c.Pass ? "pass" : "**FAIL**")}{(c.Note == null ? "" : " " + c.Note)} |");
        sb.AppendLine();
        sb.AppendLine("## Ceilings measured in this run");
        sb.AppendLine();
        sb.AppendLine($"- device-to-device copy: {F(CopyGbps, 0)} GB/s (bytes read + written)");
        sb.AppendLine($"- best matmul: {G(BestMatMulTflops)} TFLOP/s ({BestMatMulWhat})");
        sb.AppendLine();
        if (Timings.Count > 0)
        {
            sb.AppendLine("## Kernels (median of synchronised runs after a warm-up)");
            sb.AppendLine();
            sb.AppendLine("| family | op | shape | median ms | TFLOP/s | of best matmul | GB/s | of copy bandwidth | runs |");
            sb.AppendLine("|---|---|---|---|---|---|---|---|---|");
            foreach (var t in Timings)
                sb.AppendLine($"| {t.Family} | {t.Op} | {t.Shape} | {G(t.MedianMs)} | {(t.Flops > 0 ? G(t.Tflops) : "—")} | " +
                              $"{(t.Flops > 0 && BestMatMulTflops > 0 ? F(100 * t.Tflops / BestMatMulTflops, 1) + " %" : "—")} | {(t.Bytes > 0 ? G(t.Gbps) : "—")} | " +
                              $"{(t.Bytes > 0 && CopyGbps > 0 ? F(100 * t.Gbps / CopyGbps, 1) + " %" : "—")} | {t.Samples} |");
            sb.AppendLine();
        }
        if (Stages.Count > 0)
        {
            sb.AppendLine("## Whole stages and decoding");
            sb.AppendLine();
            sb.AppendLine("| stage | setting | ms per step | tokens/s | TFLOP/s | peak GiB | plan GiB | steps |");
            sb.AppendLine("|---|---|---|---|---|---|---|---|");
            foreach (var s in Stages)
                sb.AppendLine($"| {s.Stage} | {s.Setting} | {G(s.MsPerStep)} | {G(s.TokensPerSecond)} | {(s.Tflops > 0 ? G(s.Tflops) : "—")} | {G(s.PeakGib)} | {(s.PlanGib > 0 ? G(s.PlanGib) : "—")} | {s.Steps} |");
            sb.AppendLine();
        }
        if (NotReached.Count > 0)
        {
            sb.AppendLine("## Not reached (budget or device)");
            sb.AppendLine();
            foreach (var n in NotReached) sb.AppendLine($"- {n}");
            sb.AppendLine();
        }
        if (Notes.Count > 0)
        {
            sb.AppendLine("## Notes");
            sb.AppendLine();
            foreach (var n in Notes) sb.AppendLine($"- {n}");
        }
        return sb.ToString();
    }

    /// <summary>The short table printed last.</summary>
    public string Summary()
    {
        var sb = new StringBuilder();
        sb.AppendLine();
        sb.AppendLine("| gpu-check | result |");
        sb.AppendLine("|---|---|");
        sb.AppendLine($"| device | {Device} |");
        foreach (var g in Checks.GroupBy(c => c.Part))
            sb.AppendLine($"| correctness, {g.Key} | {g.Count(c => c.Pass)}/{g.Count()} pass{(g.Any(c => !c.Pass) ? ": FAIL " + string.Join(", ", g.Where(c => !c.Pass).Select(c => $"{c.Family} {c.Op}")) : "")} |");
        if (CopyGbps > 0) sb.AppendLine($"| copy bandwidth | {F(CopyGbps, 0)} GB/s |");
        if (BestMatMulTflops > 0) sb.AppendLine($"| best matmul | {G(BestMatMulTflops)} TFLOP/s ({BestMatMulWhat}) |");
        foreach (var s in Stages)
            sb.AppendLine($"| {s.Stage}, {s.Setting} | {G(s.MsPerStep)} ms, {G(s.TokensPerSecond)} tok/s, peak {G(s.PeakGib)} GiB{(s.PlanGib > 0 ? $" (plan {G(s.PlanGib)})" : "")} |");
        if (NotReached.Count > 0) sb.AppendLine($"| not reached | {NotReached.Count} items (see report.md) |");
        return sb.ToString();
    }
}
