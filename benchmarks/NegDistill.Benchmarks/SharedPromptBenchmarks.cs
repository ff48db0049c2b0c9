using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Engines;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Toolchains.InProcess.Emit;
using NegDistill.Infer;
using NegDistill.Model;
using NegDistill.Runtime;

namespace NegDistill.Benchmarks;

/// <summary>
/// Sampling N = 16 candidates per question with and without shared prompts, on the fp32 CPU twin and the
/// <c>small</c> preset (llama2.c's 15M shape, random weights): 4 questions of <see cref="PromptTokens"/>-token
/// prompts, 64 slots (every candidate at once), <see cref="NewTokens"/> new tokens each, T = 1, EOS off.
///   Own prompts (baseline)  every candidate prefills and stores its whole prompt (the path before shared prompts).
///   Shared prompts          each prompt but its last token prefilled once into one of 8 prompt slots; each
///                           candidate feeds the last token itself and stores only its continuation.
/// The same seeds draw the same candidates in both (SamplerTests). The Ratio column is the bar of issue 13:
/// the shared path must not be slower than the unshared one at N = 16.
/// Run: dotnet run -c Release --project benchmarks/NegDistill.Benchmarks -- --filter '*SharedPromptBenchmarks*'
/// </summary>
[Config(typeof(SharedPromptConfig))]
public class SharedPromptBenchmarks
{
    public const int Questions = 4, N = 16, PromptTokens = 128, NewTokens = 32;

    LlamaModel? _model;
    Sampler? _own, _shared;
    List<SampleRequest> _requests = [];

    [GlobalSetup]
    public void Setup()
    {
        var cfg = LlamaConfig.Small;
        _model = new LlamaModel(new CpuBackend(), cfg, DType.F32, seed: 1);
        _requests = Enumerable.Range(0, Questions)
            .Select(q => new SampleRequest(q, Enumerable.Range(0, PromptTokens).Select(i => 3 + (int)(CounterRng.Hash((ulong)q, (ulong)i) % (ulong)(cfg.Vocab - 3))).ToArray(), N))
            .ToList();
        var s = new SamplerSettings
        {
            Temperature = 1f, MaxNewTokens = NewTokens, Eos = -1, Slots = Questions * N, MaxSeq = PromptTokens + NewTokens, MaxRowsPerStep = Questions * N + 256, Seed = 7,
        };
        _own = new Sampler(_model, s);
        _shared = new Sampler(_model, s with { SharedPrompts = 8, PromptPositions = PromptTokens - 1 });
    }

    [GlobalCleanup]
    public void Cleanup() { _own?.Dispose(); _shared?.Dispose(); _model?.Dispose(); }

    [Benchmark(Baseline = true, Description = "own prompts (16 copies per question)")]
    public int OwnPrompts() => _own!.Run(_requests).Sum(x => x.Tokens.Length);

    [Benchmark(Description = "shared prompts (one copy per question)")]
    public int SharedPrompts() => _shared!.Run(_requests).Sum(x => x.Tokens.Length);

    sealed class SharedPromptConfig : ManualConfig
    {
        public SharedPromptConfig()
        {
            AddJob(Job.Default.WithToolchain(InProcessEmitToolchain.Instance).WithStrategy(RunStrategy.Monitoring)
                .WithLaunchCount(1).WithWarmupCount(2).WithIterationCount(7).WithInvocationCount(1).WithUnrollFactor(1));
            WithSummaryStyle(SummaryStyle.Default.WithRatioStyle(RatioStyle.Trend));
        }
    }
}
