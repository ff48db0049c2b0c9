using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using NegDistill.Cpu;

namespace NegDistill.Benchmarks;

/// <summary>
/// Float GEMM, C(n×n) = A(n×n)·op(B)(n×n), n ∈ {512, 1024}: the naive <see cref="Gemm.Reference{T}"/> (baseline),
/// <see cref="Gemm.Compute{T}"/> with no transposes (NN), with transB (NT, the engine's y = x·Wᵀ) and transA
/// (TN, the weight gradient), and <see cref="Gemm.ComputeWide16"/> with a bfloat16 Bᵀ (NT).
/// The GFLOP/s column is 2·n³ / mean time.
/// </summary>
[Config(typeof(GemmConfig))]
public class GemmBenchmarks
{
    [Params(512, 1024)]
    public int Size;

    private float[] _a = [];
    private float[] _b = [];
    private ushort[] _bBf16 = [];
    private float[] _c = [];

    [GlobalSetup]
    public void Setup()
    {
        var rnd = new Random(42);
        int n = Size;
        _a = new float[n * n];
        _b = new float[n * n];
        _bBf16 = new ushort[n * n];
        _c = new float[n * n];
        for (int i = 0; i < _a.Length; i++) _a[i] = rnd.NextSingle() * 2 - 1;
        for (int i = 0; i < _b.Length; i++)
        {
            _b[i] = rnd.NextSingle() * 2 - 1;
            _bBf16[i] = (ushort)(BitConverter.SingleToUInt32Bits(_b[i]) >> 16);
        }
    }

    [Benchmark(Baseline = true, Description = "Reference NN")]
    public void Reference() => Gemm.Reference(false, false, Size, Size, Size, 1f, _a, Size, _b, Size, 0f, _c, Size);

    [Benchmark(Description = "Compute NN")]
    public void ComputeNN() => Gemm.Compute(false, false, Size, Size, Size, 1f, _a, Size, _b, Size, 0f, _c, Size);

    [Benchmark(Description = "Compute NT")]
    public void ComputeNT() => Gemm.Compute(false, true, Size, Size, Size, 1f, _a, Size, _b, Size, 0f, _c, Size);

    [Benchmark(Description = "Compute TN")]
    public void ComputeTN() => Gemm.Compute(true, false, Size, Size, Size, 1f, _a, Size, _b, Size, 0f, _c, Size);

    [Benchmark(Description = "Wide16 bf16 NT")]
    public void Wide16Bf16NT() => Gemm.ComputeWide16(false, true, Size, Size, Size, 1f, _a, Size, _bBf16, Size, true, 0f, _c, Size);

    /// <summary>
    /// One launch, 3 warm-up and 10 measured iterations: the naive baseline takes seconds per call at 1024³,
    /// and the library is multi-threaded, so many short invocations add little.
    /// </summary>
    private sealed class GemmConfig : ManualConfig
    {
        public GemmConfig()
        {
            AddJob(Job.Default.WithLaunchCount(1).WithWarmupCount(3).WithIterationCount(10));
            AddColumn(new GflopsColumn());
            // "N x faster" than the naive baseline instead of a fraction like 0.004.
            WithSummaryStyle(SummaryStyle.Default.WithRatioStyle(RatioStyle.Trend));
        }
    }

    /// <summary>GFLOP/s = 2·M·N·K / mean time: M = N = K = Size, or the dimensions of a <see cref="GemmShape"/> parameter.</summary>
    internal sealed class GflopsColumn : IColumn
    {
        public string Id => nameof(GflopsColumn);
        public string ColumnName => "GFLOP/s";
        public bool AlwaysShow => true;
        public ColumnCategory Category => ColumnCategory.Custom;
        public int PriorityInCategory => 0;
        public bool IsNumeric => true;
        public UnitType UnitType => UnitType.Dimensionless;
        public string Legend => "Floating-point operations per second, 2·M·N·K / Mean, in units of 10⁹";
        public bool IsAvailable(Summary summary) => true;
        public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;
        public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, SummaryStyle.Default);

        public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style)
        {
            if (summary[benchmarkCase]?.ResultStatistics is not { } stats) return "NA";
            double flops;
            if (benchmarkCase.Parameters["Size"] is int n) flops = 2.0 * n * n * n;
            else if (benchmarkCase.Parameters["Shape"] is GemmShape shape) flops = shape.Flops;
            else return "NA";
            return (flops / stats.Mean).ToString("F1", System.Globalization.CultureInfo.InvariantCulture); // Mean is in ns
        }
    }
}

/// <summary>One engine-like GEMM: M×N×K with transposes, shown as "MxNxK NT" (N or T per operand); Use says where it occurs.</summary>
public sealed record GemmShape(int M, int N, int K, bool TransA, bool TransB, string Use)
{
    public double Flops => 2.0 * M * N * K;
    public override string ToString() => $"{M}x{N}x{K} {(TransA ? 'T' : 'N')}{(TransB ? 'T' : 'N')}"; // short: BenchmarkDotNet truncates long values
}

/// <summary>
/// Float <see cref="Gemm.Compute{T}"/> on the shapes the LoRA training step produces (tokens = 4096 or 1, r = 8):
/// the packed path, and the skinny StreamB / DotRows paths for r = 8 and single-token shapes.
/// </summary>
[Config(typeof(ShapesConfig))]
public class GemmShapesBenchmarks
{
    public static IEnumerable<GemmShape> Shapes() =>
    [
        new(4096, 4096, 4096, false, true, "y = x·Wᵀ"),
        new(512, 11008, 4096, false, true, "MLP up, 512 tokens"),
        new(4096, 8, 4096, false, true, "LoRA x·Aᵀ"),
        new(4096, 4096, 8, false, true, "LoRA h·Bᵀ"),
        new(8, 4096, 4096, true, false, "LoRA dA = dHᵀ·X"),
        new(4096, 8, 4096, true, false, "LoRA dB = dYᵀ·H"),
        new(1, 4096, 4096, false, true, "1 token x·Wᵀ"),
        new(1, 32000, 4096, false, true, "1 token logits"),
    ];

    [ParamsSource(nameof(Shapes))]
    public GemmShape Shape = Shapes().First();

    private float[] _a = [];
    private float[] _b = [];
    private float[] _c = [];

    [GlobalSetup]
    public void Setup()
    {
        var rnd = new Random(42);
        _a = new float[Shape.M * Shape.K];
        _b = new float[Shape.K * Shape.N];
        _c = new float[Shape.M * Shape.N];
        for (int i = 0; i < _a.Length; i++) _a[i] = rnd.NextSingle() * 2 - 1;
        for (int i = 0; i < _b.Length; i++) _b[i] = rnd.NextSingle() * 2 - 1;
    }

    [Benchmark(Description = "Compute")]
    public void Compute()
    {
        var s = Shape;
        Gemm.Compute(s.TransA, s.TransB, s.M, s.N, s.K, 1f, _a, s.TransA ? s.M : s.K, _b, s.TransB ? s.K : s.N, 0f, _c, s.N);
    }

    private sealed class ShapesConfig : ManualConfig
    {
        public ShapesConfig()
        {
            AddJob(Job.Default.WithLaunchCount(1).WithWarmupCount(3).WithIterationCount(10));
            AddColumn(new GemmBenchmarks.GflopsColumn());
        }
    }
}
