// ─────────────────────────────────────────────────────────────────────────────
// What the CPU code needs to know about the machine it runs on, read once:
//   caches   L1d (size, ways), L2, L3 and how many CPUs share them — from Linux sysfs
//            (/sys/devices/system/cpu/cpu0/cache/index*/{level,type,size,ways_of_associativity,
//            shared_cpu_list}), else from CPUID (Intel leaf 4, AMD leaf 0x8000001D, AMD legacy
//            leaves 0x80000005/6), else conservative defaults (32 KiB 8-way L1d, 256 KiB L2, 8 MiB L3);
//            the GEMM derives its blocking from them (Gemm.Blocking);
//   ISA      the vector width the JIT accelerates (Vector512/256/128.IsHardwareAccelerated, which the
//            runtime's DOTNET_EnableAVX512=0 / DOTNET_EnableAVX2=0 switches lower) and whether FMA is in
//            hardware;
//   peak     the fp32 FMA peak, cores × clock × lanes × 2 × FMA pipes, each factor found as
//            MeasurePeak says (the clock and the pipes are measured, not looked up: in a VM
//            /proc/cpuinfo's "cpu MHz" is the nominal clock, and the cores may run well above it).
// ─────────────────────────────────────────────────────────────────────────────
using System.Diagnostics;
using System.Globalization;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.Arm;
using System.Runtime.Intrinsics.X86;

namespace NegDistill.Cpu;

/// <summary>Data cache sizes in bytes (0: no such level), L1d associativity, and the CPUs sharing L3.</summary>
public sealed record CacheInfo(long L1d, int L1dWays, long L2, long L3, int L3SharedBy, string Source)
{
    public override string ToString() =>
        $"L1d {Size(L1d)} {L1dWays}-way, L2 {Size(L2)}, L3 {(L3 > 0 ? $"{Size(L3)} shared by {L3SharedBy} CPU{(L3SharedBy == 1 ? "" : "s")}" : "none")} ({Source})";

    static string Size(long b) => b >= 1 << 20 && b % (1 << 20) == 0 ? $"{b >> 20} MiB" : $"{b >> 10} KiB";
}

/// <summary>The fp32 FMA peak of this machine and how each factor was obtained.</summary>
public sealed record FmaPeak(int Cores, string CoresFrom, double ClockGHz, string ClockFrom, int Lanes, string LanesFrom,
    int FmaPipes, double FmaPerCycleMeasured, double NominalGHz)
{
    /// <summary>cores × clock × lanes × 2 (an FMA is two flops) × FMA pipes, in GFLOP/s.</summary>
    public double GflopPerS => Cores * ClockGHz * Lanes * 2 * FmaPipes;

    public override string ToString()
    {
        var ic = CultureInfo.InvariantCulture;
        string nominal = NominalGHz > 0 ? string.Create(ic, $"; /proc/cpuinfo says {NominalGHz:F2}") : "";
        return string.Create(ic, $"fp32 FMA peak {GflopPerS:F0} GFLOP/s = {Cores} cores ({CoresFrom}) × {ClockGHz:F2} GHz ({ClockFrom}{nominal}) × {Lanes} fp32 lanes ({LanesFrom}) × 2 × {FmaPipes} FMA pipes (measured {FmaPerCycleMeasured:F2} vector FMAs per cycle on one core)");
    }
}

/// <summary>Caches, vector ISA and FMA peak of the running CPU.</summary>
public static class CpuInfo
{
    const string SysCache = "/sys/devices/system/cpu/cpu0/cache";

    /// <summary>The data caches, read once at first use.</summary>
    public static CacheInfo Caches { get; } = DetectCaches();

    static CacheInfo DetectCaches()
    {
        try
        {
            if (ReadSysfs(SysCache) is { } fromSys) return fromSys;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException) { }
        if (FromCpuid() is { } fromCpuid) return fromCpuid;
        return Defaults;
    }

    /// <summary>What the GEMM assumes when neither sysfs nor CPUID says: a small core of the last ten years.</summary>
    public static CacheInfo Defaults => new(32 << 10, 8, 256 << 10, 8 << 20, Environment.ProcessorCount, "defaults");

    /// <summary>
    /// Parses a Linux cache folder (…/cpuN/cache with index*/ subfolders). Returns null when it has no L1 data
    /// cache entry; missing L2/L3 entries give 0.
    /// </summary>
    public static CacheInfo? ReadSysfs(string cacheDir)
    {
        if (!Directory.Exists(cacheDir)) return null;
        long l1 = 0, l2 = 0, l3 = 0;
        int ways = 0, l3Shared = 1;
        foreach (var dir in Directory.GetDirectories(cacheDir, "index*"))
        {
            string? Read(string name) => File.Exists(Path.Combine(dir, name)) ? File.ReadAllText(Path.Combine(dir, name)).Trim() : null;
            string? type = Read("type"), level = Read("level"), size = Read("size");
            if (type is null || level is null || size is null || type == "Instruction") continue;
            long bytes = ParseSize(size);
            switch (level)
            {
                case "1":
                    l1 = bytes;
                    ways = int.TryParse(Read("ways_of_associativity"), out int w) && w > 0 ? w : 8;
                    break;
                case "2": l2 = bytes; break;
                case "3":
                    l3 = bytes;
                    l3Shared = Read("shared_cpu_list") is { } list ? CountCpus(list) : 1;
                    break;
            }
        }
        return l1 > 0 ? new CacheInfo(l1, ways, l2, l3, Math.Max(1, l3Shared), "sysfs") : null;
    }

    /// <summary>"48K", "1024K", "32M" or a plain byte count.</summary>
    public static long ParseSize(string s)
    {
        s = s.Trim();
        long mult = 1;
        if (s.EndsWith('K')) mult = 1 << 10;
        else if (s.EndsWith('M')) mult = 1 << 20;
        else if (s.EndsWith('G')) mult = 1 << 30;
        string digits = mult == 1 ? s : s[..^1];
        return long.Parse(digits, NumberStyles.None, CultureInfo.InvariantCulture) * mult;
    }

    /// <summary>Number of CPUs in a sysfs list such as "0-3,8,10-11".</summary>
    public static int CountCpus(string list)
    {
        int n = 0;
        foreach (var part in list.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            int dash = part.IndexOf('-');
            n += dash < 0 ? 1 : int.Parse(part[(dash + 1)..], CultureInfo.InvariantCulture) - int.Parse(part[..dash], CultureInfo.InvariantCulture) + 1;
        }
        return n;
    }

    /// <summary>Cache sizes from CPUID (x86 only): the deterministic cache parameter leaves, else AMD's legacy leaves.</summary>
    public static CacheInfo? FromCpuid()
    {
        if (!X86Base.IsSupported) return null;
        var (_, vb, vc, vd) = X86Base.CpuId(0, 0);
        bool amd = vb == 0x68747541 && vd == 0x69746E65 && vc == 0x444D4163;   // "AuthenticAMD"
        uint maxExt = (uint)X86Base.CpuId(unchecked((int)0x80000000), 0).Eax;
        int leaf = amd ? unchecked((int)0x8000001D) : 4;
        bool hasLeaf = amd ? maxExt >= 0x8000001D : X86Base.CpuId(0, 0).Eax >= 4;
        long l1 = 0, l2 = 0, l3 = 0;
        int ways = 8, l3Shared = 1;
        if (hasLeaf)
        {
            for (int sub = 0; sub < 16; sub++)
            {
                var (a, b, c, _) = X86Base.CpuId(leaf, sub);
                int type = a & 0x1F;                     // 0 none, 1 data, 2 instruction, 3 unified
                if (type == 0) break;
                if (type == 2) continue;
                int level = (a >> 5) & 0x7;
                int w = ((b >> 22) & 0x3FF) + 1, parts = ((b >> 12) & 0x3FF) + 1, line = (b & 0xFFF) + 1;
                long size = (long)w * parts * line * ((long)(uint)c + 1);
                int shared = ((a >> 14) & 0xFFF) + 1;
                if (level == 1) { l1 = size; ways = w; }
                else if (level == 2) l2 = size;
                else if (level == 3) { l3 = size; l3Shared = shared; }
            }
        }
        if (l1 == 0 && amd && maxExt >= 0x80000006)
        {
            // Legacy AMD: L1d KiB in ECX[31:24] and ways in ECX[23:16] of 0x80000005; L2 KiB in ECX[31:16], L3 in 512 KiB units in EDX[31:18] of 0x80000006.
            var l1c = (uint)X86Base.CpuId(unchecked((int)0x80000005), 0).Ecx;
            var (_, _, c6, d6) = X86Base.CpuId(unchecked((int)0x80000006), 0);
            l1 = (long)(l1c >> 24) << 10;
            ways = (int)((l1c >> 16) & 0xFF) is int w and > 0 and < 255 ? w : 8;
            l2 = (long)((uint)c6 >> 16) << 10;
            l3 = (long)((uint)d6 >> 18) * (512 << 10);
            l3Shared = Environment.ProcessorCount;
        }
        return l1 > 0 ? new CacheInfo(l1, ways, l2, l3, Math.Max(1, l3Shared), "CPUID") : null;
    }

    // ───────────────────────────── ISA ─────────────────────────────

    /// <summary>Bytes per vector on the widest width the JIT accelerates: 64, 32, 16, or 0 (none).</summary>
    public static int VectorBytes => Vector512.IsHardwareAccelerated ? 64 : Vector256.IsHardwareAccelerated ? 32 : Vector128.IsHardwareAccelerated ? 16 : 0;

    /// <summary>Whether fused multiply-add is an instruction here (x86 FMA3, or Arm64) rather than a software routine.</summary>
    public static bool HardwareFma => Fma.IsSupported || AdvSimd.IsSupported;

    /// <summary>The active vector ISA in words, e.g. "AVX-512: 512-bit vectors, FMA".</summary>
    public static string Isa
    {
        get
        {
            string fma = HardwareFma ? "FMA" : "no FMA";
            if (Vector512.IsHardwareAccelerated) return $"AVX-512: 512-bit vectors, {fma}";
            if (Vector256.IsHardwareAccelerated) return $"{(Avx2.IsSupported ? "AVX2" : "AVX")}: 256-bit vectors, {fma}";
            if (Vector128.IsHardwareAccelerated) return $"{(AdvSimd.IsSupported ? "AdvSimd" : Avx.IsSupported ? "SSE (AVX on)" : "SSE")}: 128-bit vectors, {fma}";
            return "no SIMD";
        }
    }

    /// <summary>The CPU model: /proc/cpuinfo's "model name", else CPUID's brand string, else "unknown".</summary>
    public static string ModelName { get; } = ReadModelName();

    static string ReadModelName()
    {
        try
        {
            foreach (var line in File.ReadLines("/proc/cpuinfo"))
                if (line.StartsWith("model name", StringComparison.Ordinal) && line.IndexOf(':') is int i and > 0) return line[(i + 1)..].Trim();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        if (X86Base.IsSupported && (uint)X86Base.CpuId(unchecked((int)0x80000000), 0).Eax >= 0x80000004)
        {
            Span<int> regs = stackalloc int[12];
            for (int j = 0; j < 3; j++)
            {
                var (a, b, c, d) = X86Base.CpuId(unchecked((int)0x80000002) + j, 0);
                regs[4 * j] = a; regs[4 * j + 1] = b; regs[4 * j + 2] = c; regs[4 * j + 3] = d;
            }
            return System.Text.Encoding.ASCII.GetString(System.Runtime.InteropServices.MemoryMarshal.AsBytes(regs)).TrimEnd('\0').Trim();
        }
        return "unknown";
    }

    /// <summary>/proc/cpuinfo's first "cpu MHz" in GHz (the nominal or current clock as the kernel reports it), 0 if absent.</summary>
    public static double NominalGHz()
    {
        try
        {
            foreach (var line in File.ReadLines("/proc/cpuinfo"))
                if (line.StartsWith("cpu MHz", StringComparison.Ordinal) && line.IndexOf(':') is int i and > 0
                    && double.TryParse(line[(i + 1)..], NumberStyles.Float, CultureInfo.InvariantCulture, out double mhz)) return mhz / 1000;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        return 0;
    }

    /// <summary>Physical cores among the CPUs this process may use: distinct (package, core) pairs in sysfs
    /// topology, else <see cref="Environment.ProcessorCount"/>.</summary>
    public static (int Cores, string From) PhysicalCores()
    {
        try
        {
            var seen = new HashSet<(string, string)>();
            int cpus = 0;
            foreach (var dir in Directory.GetDirectories("/sys/devices/system/cpu", "cpu*"))
            {
                string topo = Path.Combine(dir, "topology");
                if (!int.TryParse(Path.GetFileName(dir)[3..], out _) || !Directory.Exists(topo)) continue;
                cpus++;
                seen.Add((File.ReadAllText(Path.Combine(topo, "physical_package_id")).Trim(), File.ReadAllText(Path.Combine(topo, "core_id")).Trim()));
            }
            if (cpus > 0 && cpus == Environment.ProcessorCount && seen.Count > 0)
                return (seen.Count, $"sysfs topology: {cpus} CPUs on {seen.Count} physical cores");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        return (Environment.ProcessorCount, "Environment.ProcessorCount");
    }

    // ───────────────────────────── FMA peak ─────────────────────────────

    /// <summary>
    /// Measures the fp32 FMA peak: cores from <see cref="PhysicalCores"/>; clock from a chain of dependent
    /// integer add/xor (one cycle each on every x86-64 and Arm64 core), run on every core at once; lanes from the
    /// active vector ISA (fp32 lanes of the widest accelerated vector); FMA pipes = the rate of independent vector
    /// FMAs on one core divided by that clock, rounded. Both loops are timed in the thread's own CPU time where
    /// the OS gives it (Linux CLOCK_THREAD_CPUTIME_ID), so time the thread spends preempted by other processes
    /// does not count, and each is the best of <paramref name="trials"/>. About 20 ms of CPU per trial.
    /// </summary>
    public static FmaPeak MeasurePeak(int trials = 5)
    {
        var (cores, coresFrom) = PhysicalCores();
        int threads = Environment.ProcessorCount;
        const long chainIters = 1_000_000, fmaIters = 500_000;
        double bestClock = 0, bestFma = 0;
        bool cpuTime = ThreadSeconds() > 0;
        for (int t = 0; t < trials; t++)
        {
            var rates = new double[threads];
            Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, i =>
            {
                double t0 = Now(cpuTime);
                AddChain(chainIters, 3 + i);
                rates[i] = 8.0 * chainIters / (Now(cpuTime) - t0);
            });
            bestClock = Math.Max(bestClock, rates.Max());
            double f0 = Now(cpuTime);
            FmaStream(fmaIters);
            bestFma = Math.Max(bestFma, 12.0 * fmaIters / (Now(cpuTime) - f0));
        }
        int lanes = Math.Max(1, VectorBytes / 4);
        double perCycle = bestFma / bestClock;
        string timer = cpuTime ? "thread CPU time" : "wall time";
        return new FmaPeak(cores, coresFrom, bestClock / 1e9, $"dependent add chain on every core at once, {timer}, best of {trials}",
            lanes, Isa, Math.Max(1, (int)Math.Round(perCycle)), perCycle, NominalGHz());
    }

    static double Now(bool cpuTime) => cpuTime ? ThreadSeconds() : Stopwatch.GetTimestamp() / (double)Stopwatch.Frequency;

    [StructLayout(LayoutKind.Sequential)]
    struct Timespec { public long Sec, Nsec; }

    [DllImport("libc", EntryPoint = "clock_gettime")]
    static extern int ClockGetTime(int clock, out Timespec ts);

    /// <summary>CPU time of the calling thread in seconds (Linux), or 0 where that clock is not available.</summary>
    static double ThreadSeconds()
    {
        if (!OperatingSystem.IsLinux()) return 0;
        try
        {
            const int ClockThreadCpuTime = 3;
            return ClockGetTime(ClockThreadCpuTime, out var ts) == 0 ? ts.Sec + ts.Nsec * 1e-9 : 0;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { return 0; }
    }

    /// <summary>8·n dependent one-cycle integer operations.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    static long AddChain(long n, long y)
    {
        long x = 0;
        for (long i = 0; i < n; i++) { x += y; x ^= y; x += y; x ^= y; x += y; x ^= y; x += y; x ^= y; }
        return x;
    }

    /// <summary>12·n independent vector FMAs (12 chains cover 2 pipes × up to 6 cycles of latency) at the widest accelerated width.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    static float FmaStream(long n)
    {
        if (Vector512.IsHardwareAccelerated) return Vector512.Sum(FmaStream512(n));
        if (Vector256.IsHardwareAccelerated) return Vector256.Sum(FmaStream256(n));
        return Vector128.Sum(FmaStream128(n));
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    static Vector512<float> FmaStream512(long n)
    {
        Vector512<float> a = Vector512.Create(1f), b = Vector512.Create(0.999f);
        Vector512<float> c0 = a, c1 = a, c2 = a, c3 = a, c4 = a, c5 = a, c6 = a, c7 = a, c8 = a, c9 = a, c10 = a, c11 = a;
        for (long i = 0; i < n; i++)
        {
            c0 = Vector512.FusedMultiplyAdd(c0, b, a); c1 = Vector512.FusedMultiplyAdd(c1, b, a); c2 = Vector512.FusedMultiplyAdd(c2, b, a);
            c3 = Vector512.FusedMultiplyAdd(c3, b, a); c4 = Vector512.FusedMultiplyAdd(c4, b, a); c5 = Vector512.FusedMultiplyAdd(c5, b, a);
            c6 = Vector512.FusedMultiplyAdd(c6, b, a); c7 = Vector512.FusedMultiplyAdd(c7, b, a); c8 = Vector512.FusedMultiplyAdd(c8, b, a);
            c9 = Vector512.FusedMultiplyAdd(c9, b, a); c10 = Vector512.FusedMultiplyAdd(c10, b, a); c11 = Vector512.FusedMultiplyAdd(c11, b, a);
        }
        return c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7 + c8 + c9 + c10 + c11;
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    static Vector256<float> FmaStream256(long n)
    {
        Vector256<float> a = Vector256.Create(1f), b = Vector256.Create(0.999f);
        Vector256<float> c0 = a, c1 = a, c2 = a, c3 = a, c4 = a, c5 = a, c6 = a, c7 = a, c8 = a, c9 = a, c10 = a, c11 = a;
        for (long i = 0; i < n; i++)
        {
            c0 = Vector256.FusedMultiplyAdd(c0, b, a); c1 = Vector256.FusedMultiplyAdd(c1, b, a); c2 = Vector256.FusedMultiplyAdd(c2, b, a);
            c3 = Vector256.FusedMultiplyAdd(c3, b, a); c4 = Vector256.FusedMultiplyAdd(c4, b, a); c5 = Vector256.FusedMultiplyAdd(c5, b, a);
            c6 = Vector256.FusedMultiplyAdd(c6, b, a); c7 = Vector256.FusedMultiplyAdd(c7, b, a); c8 = Vector256.FusedMultiplyAdd(c8, b, a);
            c9 = Vector256.FusedMultiplyAdd(c9, b, a); c10 = Vector256.FusedMultiplyAdd(c10, b, a); c11 = Vector256.FusedMultiplyAdd(c11, b, a);
        }
        return c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7 + c8 + c9 + c10 + c11;
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    static Vector128<float> FmaStream128(long n)
    {
        // Without hardware FMA a multiply and an add stand in for one FMA (the GEMM does the same).
        Vector128<float> a = Vector128.Create(1f), b = Vector128.Create(0.999f);
        Vector128<float> c0 = a, c1 = a, c2 = a, c3 = a, c4 = a, c5 = a, c6 = a, c7 = a, c8 = a, c9 = a, c10 = a, c11 = a;
        bool fma = HardwareFma;
        for (long i = 0; i < n; i++)
        {
            c0 = Mad(c0, b, a, fma); c1 = Mad(c1, b, a, fma); c2 = Mad(c2, b, a, fma); c3 = Mad(c3, b, a, fma);
            c4 = Mad(c4, b, a, fma); c5 = Mad(c5, b, a, fma); c6 = Mad(c6, b, a, fma); c7 = Mad(c7, b, a, fma);
            c8 = Mad(c8, b, a, fma); c9 = Mad(c9, b, a, fma); c10 = Mad(c10, b, a, fma); c11 = Mad(c11, b, a, fma);
        }
        return c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7 + c8 + c9 + c10 + c11;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector128<float> Mad(Vector128<float> x, Vector128<float> y, Vector128<float> z, bool fma) => fma ? Vector128.FusedMultiplyAdd(x, y, z) : x * y + z;
}
