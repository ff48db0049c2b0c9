using System.Diagnostics;
using NegDistill.Runtime;

namespace NegDistill.Infer;

public enum InferencePhase { Matmul, Attention, Sampling, Other }

/// <summary>Time of inference by op group, from a <see cref="ProfilingBackend"/>'s per-op report (the
/// forward itself carries no timing code).</summary>
public sealed class InferenceTimings
{
    /// <summary>Projections with their adapters, and the LM head.</summary>
    public TimeSpan Matmul;
    /// <summary>RoPE, cache write and cached attention.</summary>
    public TimeSpan Attention;
    /// <summary>Next-token sampling.</summary>
    public TimeSpan Sampling;
    /// <summary>Embedding, norms, SwiGLU, residual adds, row gather and the rest.</summary>
    public TimeSpan Other;

    public TimeSpan Total => Matmul + Attention + Sampling + Other;

    public static InferencePhase PhaseOf(string op) => op switch
    {
        nameof(IBackend.MatMul) => InferencePhase.Matmul,
        nameof(IBackend.Rope) or nameof(IBackend.CacheWrite) or nameof(IBackend.CachedAttention) => InferencePhase.Attention,
        nameof(IBackend.SampleRows) => InferencePhase.Sampling,
        _ => InferencePhase.Other,
    };

    /// <summary>The op groups of <paramref name="report"/> (<see cref="ProfilingBackend.Report"/>).</summary>
    public static InferenceTimings From(IEnumerable<(string Op, double Seconds, long Calls)> report)
    {
        var t = new InferenceTimings();
        foreach (var (op, seconds, _) in report)
        {
            var dt = TimeSpan.FromSeconds(seconds);
            switch (PhaseOf(op))
            {
                case InferencePhase.Matmul: t.Matmul += dt; break;
                case InferencePhase.Attention: t.Attention += dt; break;
                case InferencePhase.Sampling: t.Sampling += dt; break;
                default: t.Other += dt; break;
            }
        }
        return t;
    }

    /// <summary>Runs <paramref name="run"/> with <paramref name="profiler"/> timing, and groups what it timed.</summary>
    public static InferenceTimings Measure(ProfilingBackend profiler, Action run)
    {
        bool was = profiler.Enabled;
        profiler.Reset();
        profiler.Enabled = true;
        try { run(); }
        finally { profiler.Enabled = was; }
        return From(profiler.Report());
    }

    public override string ToString()
    {
        double total = Math.Max(Total.TotalSeconds, 1e-12);
        string P(TimeSpan t) => $"{100 * t.TotalSeconds / total:F1}%";
        return $"matmul {P(Matmul)}, attention {P(Attention)}, sampling {P(Sampling)}, other {P(Other)} of {Total.TotalMilliseconds:F1} ms";
    }
}
