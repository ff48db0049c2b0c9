// The harness of the TorchSharp parity tests: finds the repository, the loader written by
// tools/torchsharp/setup.sh and the worker dll (benchmarks/NegDistill.TorchReference, built in the same
// configuration as these tests), runs one worker case as a child process and reads its out.safetensors
// with the engine's own reader (src/NegDistill.Checkpoints). Also: writing inputs with the engine's
// writer, and the comparison that every test uses (numbers printed to TestContext.Out).
using System.Diagnostics;
using System.Reflection;
using System.Runtime.InteropServices;
using NegDistill.Checkpoints;

namespace NegDistill.TorchParity.Tests;

static class TorchWorker
{
    public const string SetupHint = "run `bash tools/torchsharp/setup.sh` and build benchmarks/NegDistill.TorchReference";

    /// <summary>The folder holding NegDistill.sln, found by walking up from the test assembly.</summary>
    public static string RepoRoot
    {
        get
        {
            for (var d = new DirectoryInfo(AppContext.BaseDirectory); d != null; d = d.Parent)
                if (File.Exists(Path.Combine(d.FullName, "NegDistill.sln"))) return d.FullName;
            Assert.Fail($"NegDistill.sln not found above {AppContext.BaseDirectory}");
            return null!;
        }
    }

    /// <summary>Debug or Release: the configuration this test assembly was built in (the SDK stamps it
    /// into AssemblyConfigurationAttribute; the bin/CONFIG/ folder is the fallback).</summary>
    public static string Configuration =>
        typeof(TorchWorker).Assembly.GetCustomAttribute<AssemblyConfigurationAttribute>()?.Configuration is { Length: > 0 } c ? c
            : new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar)).Parent!.Name;

    public static string Loader => Path.Combine(RepoRoot, ".cache", "torchsharp", "dotnet-trixie");
    public static string WorkerDll => Path.Combine(RepoRoot, "benchmarks", "NegDistill.TorchReference", "bin", Configuration, "net10.0", "NegDistill.TorchReference.dll");

    /// <summary>A fresh folder for one case (removed by <see cref="Cleanup"/>).</summary>
    public static string NewDir(string name)
    {
        string d = Path.Combine(Path.GetTempPath(), "negdistill-torchparity", $"{name}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(d);
        return d;
    }

    public static void Cleanup(string dir)
    {
        try { Directory.Delete(dir, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    public sealed record Result(int ExitCode, string Stdout, string Stderr, double Seconds);

    /// <summary>Runs `loader WorkerDll worker CASE IN OUT` and returns what happened (no assertion).</summary>
    public static Result RunRaw(string kase, string inDir, string outDir, int timeoutSeconds = 120)
    {
        if (!File.Exists(Loader)) Assert.Fail($"TorchSharp loader {Loader} is missing: {SetupHint}");
        if (!File.Exists(WorkerDll)) Assert.Fail($"worker {WorkerDll} is missing ({Configuration} build): {SetupHint}");
        var psi = new ProcessStartInfo(Loader) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in new[] { WorkerDll, "worker", kase, inDir, outDir }) psi.ArgumentList.Add(a);
        var sw = Stopwatch.StartNew();
        using var p = Process.Start(psi) ?? throw new InvalidOperationException($"could not start {Loader}");
        var so = p.StandardOutput.ReadToEndAsync();
        var se = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(timeoutSeconds * 1000))
        {
            p.Kill(entireProcessTree: true);
            Assert.Fail($"worker {kase} did not finish in {timeoutSeconds} s; stderr so far:\n{(se.IsCompleted ? se.Result : "")}");
        }
        p.WaitForExit();
        return new Result(p.ExitCode, so.Result, se.Result, sw.Elapsed.TotalSeconds);
    }

    /// <summary>Runs one case and returns every tensor of OUT/out.safetensors as double[] (with its shape).
    /// Fails the test with the worker's stderr when it exits non-zero.</summary>
    public static Dictionary<string, (long[] Shape, double[] Data)> Run(string kase, string inDir)
    {
        string outDir = Path.Combine(inDir, "out");
        var r = RunRaw(kase, inDir, outDir);
        if (r.ExitCode != 0)
            Assert.Fail($"worker {kase} exited with {r.ExitCode} ({SetupHint} if the loader or libtorch failed to start).\nstderr:\n{r.Stderr}\nstdout:\n{r.Stdout}");
        TestContext.Out.WriteLine($"[{kase}] worker: {r.Stdout.Trim()} (process {r.Seconds:F1} s)");
        var res = new Dictionary<string, (long[], double[])>();
        using var f = SafeTensors.Open(Path.Combine(outDir, "out.safetensors"));
        foreach (var name in f.Names)
        {
            var t = f.Read(name);
            Assert.That(t.Type, Is.EqualTo(StorageType.F64), $"worker output '{name}' should be F64");
            res[name] = (t.Shape.ToArray(), MemoryMarshal.Cast<byte, double>(t.Data).ToArray());
        }
        return res;
    }

    // ------------------------------------------------------------------ inputs, written with the engine's writer

    public static StoredTensor F64(string name, long[] shape, double[] values) =>
        new(name, StorageType.F64, shape, MemoryMarshal.AsBytes(values.AsSpan()).ToArray());

    public static StoredTensor I32(string name, long[] shape, int[] values) =>
        new(name, StorageType.I32, shape, MemoryMarshal.AsBytes(values.AsSpan()).ToArray());

    public static StoredTensor F32(string name, long[] shape, float[] values) => StoredTensor.FromFloat32(name, shape, values);
}

/// <summary>
/// Tensor comparison. For each tensor: max_abs = max_i |engine_i − torch_i| and, normwise,
/// rel = max_abs / max_i |torch_i| (relative to the tensor's scale, so that elements that happen to be
/// near zero do not blow up the ratio). A check passes when rel ≤ tol. Every comparison is printed.
/// </summary>
sealed class Comparer(string label)
{
    public double WorstRel { get; private set; }
    public string WorstName { get; private set; } = "";
    readonly List<string> _failures = new();

    public void Check(string name, ReadOnlySpan<double> engine, ReadOnlySpan<double> torch, double tol)
    {
        if (engine.Length != torch.Length) { _failures.Add($"{name}: engine has {engine.Length} values, torch {torch.Length}"); return; }
        double maxAbs = 0, scale = 0;
        int at = -1;
        for (int i = 0; i < engine.Length; i++)
        {
            double d = Math.Abs(engine[i] - torch[i]);
            if (!(d <= maxAbs)) { maxAbs = d; at = i; }               // NaN lands here too
            scale = Math.Max(scale, Math.Abs(torch[i]));
        }
        double rel = scale > 0 ? maxAbs / scale : maxAbs;
        if (double.IsNaN(rel)) rel = double.PositiveInfinity;
        TestContext.Out.WriteLine($"  {label,-10} {name,-64} max|e−t| {maxAbs,10:E2}  max|t| {scale,10:E2}  rel {rel,10:E2}  (tol {tol:E0})");
        if (rel > WorstRel || WorstName == "") { WorstRel = rel; WorstName = name; }
        if (!(rel <= tol)) _failures.Add($"{name}: rel error {rel:E3} > {tol:E0} (max abs {maxAbs:E3} at [{at}], engine {(at >= 0 ? engine[at] : double.NaN):R}, torch {(at >= 0 ? torch[at] : double.NaN):R}, scale {scale:E3})");
    }

    public void Check(string name, ReadOnlySpan<float> engine, ReadOnlySpan<double> torch, double tol)
    {
        var e = new double[engine.Length];
        for (int i = 0; i < e.Length; i++) e[i] = engine[i];
        Check(name, e, torch, tol);
    }

    public void Fail(string message) => _failures.Add(message);

    /// <summary>Prints the worst tensor and fails the test listing every tensor beyond tolerance.</summary>
    public void AssertAll()
    {
        TestContext.Out.WriteLine($"  {label}: worst rel {WorstRel:E2} ({WorstName})");
        if (_failures.Count > 0) Assert.Fail($"{label}: {_failures.Count} mismatches with TorchSharp:\n" + string.Join("\n", _failures));
    }
}
