using System.Collections.Concurrent;
using System.Globalization;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Engines;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using BenchmarkDotNet.Toolchains.InProcess.Emit;
using NegDistill.Infer;
using NegDistill.Model;
using NegDistill.Runtime;

namespace NegDistill.Benchmarks;

/// <summary>
/// Decoding speed of the <c>small</c> preset (<see cref="LlamaConfig.Small"/>: llama2.c's 15M shape,
/// random weights) on the fp32 CPU twin, at batch 1, 16 and 64: <see cref="Batch"/> prompts of 16
/// tokens, 32 new tokens each, EOS off so every row generates all 32.
///   Full recompute (baseline)  <see cref="GreedyDecoder"/>: every step re-runs the whole sequences.
///   KV cache, greedy           <see cref="Sampler"/> at temperature 0: the same tokens as the baseline.
///   KV cache, T=1 top-p 0.9    the same with sampling (top-p bisection on every row).
/// Columns: generated tokens/s (Batch·32 / mean), and for the KV-cache runs the share of the last
/// iteration's time in matmuls (projections, adapters, LM head), attention (RoPE, cache write,
/// cached attention), sampling and the rest — every op timed by the <see cref="ProfilingBackend"/> the
/// model lives on, switched on for the KV-cache cases only and grouped by <see cref="InferenceTimings"/>
/// (the CPU backend's Synchronize is free, so the timing does not perturb the run). In-process
/// toolchain, so the columns can read those timings.
/// Run: dotnet run -c Release --project benchmarks/NegDistill.Benchmarks -- --filter '*DecodeBenchmarks*'
/// </summary>
[Config(typeof(DecodeConfig))]
public class DecodeBenchmarks
{
    public const int PromptTokens = 16, NewTokens = 32;

    [Params(1, 16, 64)]
    public int Batch;

    LlamaModel? _model;
    ProfilingBackend? _profiler;
    Sampler? _greedy, _topP;
    List<int[]> _prompts = [];

    /// <summary>(method, batch) → op-group times of the last iteration.</summary>
    internal static readonly ConcurrentDictionary<(string Method, int Batch), InferenceTimings> Shares = new();

    [GlobalSetup]
    public void Setup()
    {
        var cfg = LlamaConfig.Small;
        _profiler = new ProfilingBackend(new CpuBackend()) { Enabled = false };
        _model = new LlamaModel(_profiler, cfg, DType.F32, seed: 1);
        _prompts = Enumerable.Range(0, Batch)
            .Select(b => Enumerable.Range(0, PromptTokens).Select(i => (int)(CounterRng.Hash((ulong)b, (ulong)i) % (ulong)cfg.Vocab)).ToArray())
            .ToList();
        var s = new SamplerSettings
        {
            Temperature = 0f, MaxNewTokens = NewTokens, Eos = -1, Slots = Batch, MaxSeq = PromptTokens + NewTokens, MaxRowsPerStep = Batch * PromptTokens, Seed = 7,
        };
        _greedy = new Sampler(_model, s);
        _topP = new Sampler(_model, s with { Temperature = 1f, TopP = 0.9f });
    }

    // the KV-cache cases time their ops; what each case leaves is its last iteration's timings
    [IterationSetup(Targets = [nameof(KvCacheGreedy), nameof(KvCacheTopP)])]
    public void StartTimings() { _profiler!.Reset(); _profiler.Enabled = true; }

    [IterationCleanup(Target = nameof(KvCacheGreedy))]
    public void KeepGreedyTimings() => Keep(nameof(KvCacheGreedy));

    [IterationCleanup(Target = nameof(KvCacheTopP))]
    public void KeepTopPTimings() => Keep(nameof(KvCacheTopP));

    void Keep(string method)
    {
        _profiler!.Enabled = false;
        Shares[(method, Batch)] = InferenceTimings.From(_profiler.Report());
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _greedy?.Dispose(); _topP?.Dispose(); _model?.Dispose();
    }

    [Benchmark(Baseline = true, Description = "Full recompute (GreedyDecoder)")]
    public int FullRecompute() => GreedyDecoder.Generate(_model!, _prompts, NewTokens, eos: -1, batchSize: Batch).Sum(t => t.Length);

    [Benchmark(Description = "KV cache, greedy")]
    public int KvCacheGreedy() => Run(_greedy!);

    [Benchmark(Description = "KV cache, T=1 top-p 0.9")]
    public int KvCacheTopP() => Run(_topP!);

    int Run(Sampler s) => s.Run(_prompts.Select((p, i) => new SampleRequest(i, p, 1))).Sum(x => x.Tokens.Length);

    /// <summary>One invocation (a whole decode of Batch × 32 tokens) per iteration: the baseline takes
    /// seconds at batch 64, so 1 warm-up and 3 measured iterations.</summary>
    sealed class DecodeConfig : ManualConfig
    {
        public DecodeConfig()
        {
            AddJob(Job.Default.WithToolchain(InProcessEmitToolchain.Instance).WithStrategy(RunStrategy.Monitoring)
                .WithLaunchCount(1).WithWarmupCount(1).WithIterationCount(3).WithInvocationCount(1).WithUnrollFactor(1));
            AddColumn(new TokensPerSecondColumn());
            foreach (var phase in new[] { InferencePhase.Matmul, InferencePhase.Attention, InferencePhase.Sampling, InferencePhase.Other })
                AddColumn(new ShareColumn(phase));
            WithSummaryStyle(SummaryStyle.Default.WithRatioStyle(RatioStyle.Trend));
        }
    }

    static int BatchOf(BenchmarkCase c) => (int)c.Parameters["Batch"];

    sealed class TokensPerSecondColumn : IColumn
    {
        public string Id => nameof(TokensPerSecondColumn);
        public string ColumnName => "tokens/s";
        public bool AlwaysShow => true;
        public ColumnCategory Category => ColumnCategory.Custom;
        public int PriorityInCategory => 0;
        public bool IsNumeric => true;
        public UnitType UnitType => UnitType.Dimensionless;
        public string Legend => "Generated tokens per second: Batch·32 / Mean";
        public bool IsAvailable(Summary summary) => true;
        public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;
        public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, SummaryStyle.Default);
        public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style) =>
            summary[benchmarkCase]?.ResultStatistics is { } st
                ? (BatchOf(benchmarkCase) * (double)NewTokens / (st.Mean * 1e-9)).ToString("F1", CultureInfo.InvariantCulture)
                : "NA";
    }

    sealed class ShareColumn(InferencePhase phase) : IColumn
    {
        public string Id => nameof(ShareColumn) + phase;
        public string ColumnName => phase.ToString().ToLowerInvariant() + " %";
        public bool AlwaysShow => true;
        public ColumnCategory Category => ColumnCategory.Custom;
        public int PriorityInCategory => 1 + (int)phase;
        public bool IsNumeric => true;
        public UnitType UnitType => UnitType.Dimensionless;
        public string Legend => $"Share of the KV-cache decode's time in {phase} (last iteration, every op timed by the profiling backend)";
        public bool IsAvailable(Summary summary) => true;
        public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;
        public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, SummaryStyle.Default);
        public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style)
        {
            if (!Shares.TryGetValue((benchmarkCase.Descriptor.WorkloadMethod.Name, BatchOf(benchmarkCase)), out var t) || t.Total <= TimeSpan.Zero) return "-";
            var part = phase switch
            {
                InferencePhase.Matmul => t.Matmul, InferencePhase.Attention => t.Attention, InferencePhase.Sampling => t.Sampling, _ => t.Other,
            };
            return (100 * part.TotalSeconds / t.Total.TotalSeconds).ToString("F1", CultureInfo.InvariantCulture);
        }
    }
}
