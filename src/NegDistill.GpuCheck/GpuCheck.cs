using System.Diagnostics;
using System.Text;
using NegDistill.Kernels;
using NegDistill.Method;
using NegDistill.Runtime;

namespace NegDistill.GpuCheck;

/// <summary>A wall-clock budget that parts consult before each item, so a run stops cleanly and still
/// writes its report.</summary>
public sealed class Budget(double seconds)
{
    readonly Stopwatch _sw = Stopwatch.StartNew();
    public double Elapsed => _sw.Elapsed.TotalSeconds;
    public double Left => seconds - Elapsed;
    /// <summary>True when at least <paramref name="need"/> seconds remain.</summary>
    public bool Has(double need) => Left >= need;
}

/// <summary>
/// `negdistill gpu-check`: verifies and times the engine on an accelerator in one command. In order:
/// every kernel family forward and backward against the CPU twin at tiny shapes, the ceilings (copy
/// bandwidth, best matmul), every kernel at LLaMA-7b shapes (checked, then timed: median of ≥ 10
/// synchronised runs with the napkin math beside it), whole-model steps against the twin, whole stages
/// at 7B shape with random BF16 weights made on the device (LoRA, NAT, NCE; with and without
/// recompute) with their peak memory beside the plan, and decoding at batch 1, 16 and 64. Each part
/// stops when --budget runs out; report.md / report.json are always written.
/// On the CPU accelerator and the CPU twin, --quick runs every part at tiny shapes (what CI runs).
/// </summary>
public static class GpuCheck
{
    public static readonly string[] AllParts = ["kernels", "model", "stages", "decode"];

    public static int Run(string device, bool quick, double budgetSeconds, string outDir, string partsList)
    {
        if (!(budgetSeconds > 0)) throw new ArgumentException($"--budget: {budgetSeconds} is not a positive number of seconds");
        var parts = partsList.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(p => p.ToLowerInvariant()).ToHashSet();
        foreach (var p in parts) if (!AllParts.Contains(p)) throw new ArgumentException($"--parts: '{p}' is not one of {string.Join(", ", AllParts)}");
        if (device is not ("cuda" or "ilgpu-cpu" or "cpu")) throw new ArgumentException($"--device: '{device}' is not cuda, ilgpu-cpu or cpu");
        Directory.CreateDirectory(outDir);

        var budget = new Budget(budgetSeconds);
        var rep = new GpuReport();
        rep.Header.Add($"negdistill gpu-check, {rep.Started}, pack {PackInfo()}");
        rep.Header.Add($"host: {CpuModel()}, {Environment.ProcessorCount} logical CPUs, .NET {Environment.Version}");
        rep.Header.Add(CudaDriver.Probe());
        Say($"gpu-check: {rep.Header[0]}");
        Say(rep.Header[1]);
        Say(rep.Header[2]);

        IBackend dev;
        try { dev = Backends.Create(device); }
        catch (Exception e) when (e is DeviceUnavailableException or InvalidOperationException or DllNotFoundException or TypeInitializationException or ILGPU.Runtime.Cuda.CudaException)
        {
            rep.Device = $"{device}: could not initialise: {e.Message}";
            Say(rep.Device);
            rep.NotReached.Add("everything: the device did not initialise");
            rep.Seconds = budget.Elapsed;
            rep.Write(outDir);
            Console.WriteLine(rep.Summary());
            return ExitCodes.Failure;
        }
        using var _dev = dev;
        rep.DeviceReady = true;
        rep.Device = dev is IlgpuBackend ib ? $"{ib.Name}: {ib.Describe()}" : $"{dev.Name} (the CPU twin itself: checks compare it with a second copy of itself)";
        rep.MatMulPath = MatMulTolerance.For(dev).Path;
        if (dev is IlgpuBackend lb) rep.Header.Add($"cuBLASLt: {lb.LibraryStatus}");
        Say($"device: {rep.Device}");
        bool cuda = dev is IlgpuBackend { IsCuda: true };
        if (!cuda && !quick)
        {
            quick = true;
            rep.Notes.Add($"--device {device}: LLaMA-7b shapes need a GPU; ran the tiny shapes (as with --quick)");
            Say(rep.Notes[^1]);
        }
        var mmTol = MatMulTolerance.For(dev);
        using var twin = new CpuBackend();
        var run = new CheckRun(dev, twin, rep, budget);

        try
        {
            if (parts.Contains("kernels"))
            {
                run.Ceilings(quick ? 1 << 20 : 1L << 28);
                run.Cases("tiny", OpCases.All(OpCases.Shapes.Tiny, mmTol), time: quick);
                if (!quick) run.Cases("7B", OpCases.All(OpCases.Shapes.Llama7B, mmTol), time: true);
                if (!quick && dev is IlgpuBackend { IsCuda: true } cb) run.MatMulVersions(cb);
            }
            var stages = new StageRuns(dev, twin, rep, budget, quick);
            if (parts.Contains("model")) stages.ModelChecks();
            if (parts.Contains("stages")) stages.TrainingSteps();
            if (parts.Contains("decode")) stages.Decode();
        }
        finally
        {
            rep.Seconds = budget.Elapsed;
            rep.Write(outDir);
        }
        Console.WriteLine(rep.Summary());
        Console.WriteLine($"report: {Path.Combine(outDir, "report.md")} and report.json");
        return rep.Failed > 0 ? ExitCodes.Failure : ExitCodes.Ok;
    }

    internal static void Say(string s) { Console.WriteLine(s); Console.Out.Flush(); }

    static string PackInfo()
    {
        var f = Path.Combine(AppContext.BaseDirectory, "PACK-INFO");
        return File.Exists(f) ? string.Join(" ", File.ReadAllLines(f).Skip(1).Take(2)) : "none (run from a build, not tools/gpu/pack.sh)";
    }

    static string CpuModel()
    {
        try
        {
            var line = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal));
            return line?.Split(':', 2)[1].Trim() ?? "unknown CPU";
        }
        catch (IOException) { return "unknown CPU"; }
    }
}

/// <summary>Runs op cases on the device and the twin, compares, and times.</summary>
public sealed class CheckRun(IBackend dev, IBackend twin, GpuReport rep, Budget budget)
{
    public void Cases(string part, IEnumerable<OpCase> cases, bool time)
    {
        foreach (var c in cases)
        {
            if (!budget.Has(time ? 20 : 3)) { rep.NotReached.Add($"{part}: {c.Family} {c.Name} ({c.Shape}) and the cases after it"); break; }
            var host = c.Inputs();
            var d = Bind(dev, host);
            try
            {
                Poison(dev, c, d);
                c.Run(dev, d);
                dev.Synchronize();
                bool same = ReferenceEquals(dev, twin);
                if (!same || part.StartsWith("tiny", StringComparison.Ordinal)) Compare(part, c, host, d);
                if (time)
                {
                    var (ms, samples) = Time(() => c.Run(dev, d));
                    rep.Timings.Add(new TimingRow(c.Family, c.Name, c.Shape, ms, c.Flops, c.Bytes, samples));
                    var t = rep.Timings[^1];
                    GpuCheck.Say($"  time  {c.Family,-12} {c.Name,-40} {c.Shape,-24} {ms,9:F3} ms {(t.Flops > 0 ? $"{t.Tflops,7:F2} TFLOP/s" : ""),-16} {(t.Bytes > 0 ? $"{t.Gbps,7:F0} GB/s" : "")}");
                }
            }
            finally { foreach (var t in d.Values) t.Dispose(); }
        }
    }

    void Compare(string part, OpCase c, Dictionary<string, HostTensor> host, Dictionary<string, Tensor> d)
    {
        var w = Bind(twin, host);
        try
        {
            Poison(twin, c, w);
            c.Run(twin, w);
            foreach (var o in c.Outputs)
            {
                var (rel, bad) = Diff(Get(dev, d[o]), Get(twin, w[o]), agreeingInfinities: c.FiniteOnly.Contains(o));
                Add(part, c, o, rel, c.Tolerance, bad);
            }
            foreach (var o in c.ExactInts)
            {
                var a = GetInts(dev, d[o]); var b = GetInts(twin, w[o]);
                long differ = a.Zip(b).Count(x => x.First != x.Second);
                // a draw can land on the other side of a CDF boundary when exp differs in its last bits
                bool pass = differ <= Math.Max(0, a.Length / 50);
                rep.Checks.Add(new CheckRow(part, c.Family, $"{c.Name}: {o} equal", c.Shape, differ / (double)a.Length, 0.02, differ, pass, $"{a.Length - differ}/{a.Length} equal"));
                Print(rep.Checks[^1]);
            }
        }
        finally { foreach (var t in w.Values) t.Dispose(); }
    }

    void Add(string part, OpCase c, string output, double rel, double tol, long bad)
    {
        var row = new CheckRow(part, c.Family, c.Outputs.Length > 1 ? $"{c.Name}: {output}" : c.Name, c.Shape, rel, tol, bad, bad == 0 && rel <= tol);
        rep.Checks.Add(row);
        Print(row);
    }

    internal static void Print(CheckRow r) =>
        GpuCheck.Say($"  check {r.Family,-12} {r.Op,-40} {r.Shape,-24} ‖Δ‖/‖ref‖ {r.RelErr,9:0.0e+0} (tol {r.Tolerance:0.0e+0}){(r.BadElements > 0 ? $" {r.BadElements} bad elements" : "")}  {(r.Pass ? "pass" : "FAIL")}");

    /// <summary>Relative error in double, and the count of elements that are non-finite on one side only
    /// or on both (a declared output must be written everywhere).</summary>
    public static (double Rel, long Bad) Diff(float[] got, float[] want, bool agreeingInfinities = false)
    {
        double num = 0, den = 0; long bad = 0;
        for (long i = 0; i < want.Length; i++)
        {
            float g = got[i], r = want[i];
            if (agreeingInfinities && float.IsInfinity(r) && g == r) continue;
            if (!float.IsFinite(g) || !float.IsFinite(r)) { bad++; continue; }
            double e = (double)g - r;
            num += e * e; den += (double)r * r;
        }
        return (den > 0 ? Math.Sqrt(num / den) : Math.Sqrt(num), bad);
    }

    static void Poison(IBackend ops, OpCase c, Dictionary<string, Tensor> t)
    {
        foreach (var p in c.Poisoned) ops.Fill(t[p], float.NaN);
    }

    internal static Dictionary<string, Tensor> Bind(IBackend ops, Dictionary<string, HostTensor> host)
    {
        var r = new Dictionary<string, Tensor>();
        foreach (var (name, h) in host)
        {
            var t = ops.Alloc(name, h.DType, h.Shape);
            if (h.F != null) ops.Upload(t, h.F);
            else if (h.I != null) ops.Upload(t, h.I);
            r[name] = t;
        }
        return r;
    }

    internal static float[] Get(IBackend ops, Tensor t) { var r = new float[t.Length]; ops.Download(t, r); return r; }
    static int[] GetInts(IBackend ops, Tensor t) { var r = new int[t.Length]; ops.Download(t, r); return r; }

    /// <summary>Median seconds (as ms) of ≥ 10 synchronised samples after a warm-up; each sample repeats
    /// the op enough times to last about a millisecond, so launch and synchronisation costs stay small.</summary>
    public (double Ms, int Samples) Time(Action op, int samples = 10)
    {
        op(); dev.Synchronize();
        var sw = Stopwatch.StartNew();
        op(); dev.Synchronize();
        double one = sw.Elapsed.TotalSeconds;
        int reps = (int)Math.Clamp(1e-3 / Math.Max(one, 1e-7), 1, 200);
        var t = new double[samples];
        for (int s = 0; s < samples; s++)
        {
            sw.Restart();
            for (int i = 0; i < reps; i++) op();
            dev.Synchronize();
            t[s] = sw.Elapsed.TotalSeconds / reps;
        }
        Array.Sort(t);
        return (1e3 * (samples % 2 == 1 ? t[samples / 2] : 0.5 * (t[samples / 2 - 1] + t[samples / 2])), samples);
    }

    /// <summary>Every matmul version side by side (llm.c's dev/cuda way) at the 7B GEMMs with frozen BF16
    /// weights: each checked against the twin within its own tolerance, then timed.</summary>
    public void MatMulVersions(IlgpuBackend b)
    {
        var old = b.MatMulVersion;
        var versions = new List<(MatMulKernels.Version V, string Name, double Tol)> { (MatMulKernels.Version.V1Simt, "v1 SIMT", Tolerances.Fp32) };
        if (b.HasTensorCoreKernel) versions.Add((MatMulKernels.Version.V2Mma, "v2 mma.sync", Tolerances.Bf16));
        if (b.HasLibrary) versions.Add((MatMulKernels.Version.Library, "cuBLASLt", Tolerances.Bf16));
        else rep.Notes.Add($"cuBLASLt not timed: {b.LibraryStatus}");
        try
        {
            foreach (var (v, name, tol) in versions)
            {
                b.MatMulVersion = v;
                var cases = OpCases.All(OpCases.Shapes.Llama7B, new MatMulTolerance(tol, Tolerances.Fp32, name))
                    .Where(c => c.Family == "MatMul")
                    .Select(c => new OpCase
                    {
                        Family = $"MatMul {name}", Name = c.Name, Shape = c.Shape, Inputs = c.Inputs, Run = c.Run, Outputs = c.Outputs, Poisoned = c.Poisoned,
                        Tolerance = c.Tolerance, Flops = c.Flops, Bytes = c.Bytes,
                    })
                    .Where(c => !c.Name.StartsWith("LoRA", StringComparison.Ordinal) && !c.Name.StartsWith("square, F32", StringComparison.Ordinal));
                Cases($"7B matmul {name}", cases, time: true);
            }
        }
        finally { b.MatMulVersion = old; }
    }

    /// <summary>The two ceilings: a large device-to-device copy (bytes read + written) and the best
    /// matmul rate the device's matmul path reaches (square, BF16 B).</summary>
    public void Ceilings(long floats)
    {
        if (!budget.Has(10)) { rep.NotReached.Add("ceilings"); return; }
        using (var a = dev.Alloc("copy.src", DType.F32, (int)floats))
        using (var b = dev.Alloc("copy.dst", DType.F32, (int)floats))
        {
            dev.Fill(a, 1f);
            var (ms, _) = Time(() => dev.Copy(b, a));
            rep.CopyGbps = 2.0 * 4 * floats / (ms * 1e-3) / 1e9;
        }
        int n = floats >= 1L << 28 ? 8192 : 64;
        using (var x = dev.Alloc("mm.a", DType.F32, n, n))
        using (var w = dev.Alloc("mm.b", DType.BF16, n, n))
        using (var y = dev.Alloc("mm.c", DType.F32, n, n))
        {
            dev.FillNormal(x, 1f, 5); dev.FillNormal(w, 0.05f, 6);
            var (ms, _) = Time(() => dev.MatMul(y, x, w, n, n, n, false, true));
            rep.BestMatMulTflops = 2.0 * n * n * n / (ms * 1e-3) / 1e12;
            rep.BestMatMulWhat = $"{rep.MatMulPath}, {n}×{n}×{n} NT, F32 A × BF16 B";
        }
        GpuCheck.Say($"ceilings: copy {rep.CopyGbps:F0} GB/s, matmul {rep.BestMatMulTflops:F2} TFLOP/s ({rep.BestMatMulWhat})");
    }
}
