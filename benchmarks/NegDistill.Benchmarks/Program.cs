using BenchmarkDotNet.Running;

namespace NegDistill.Benchmarks;

public static class Program
{
    /// <summary>Runs the benchmarks picked by the command line, e.g. <c>-- --filter '*Gemm*'</c>.</summary>
    public static void Main(string[] args) => BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
}
