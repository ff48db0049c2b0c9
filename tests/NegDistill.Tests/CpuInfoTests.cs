using System.Runtime.Intrinsics.X86;
using NegDistill.Cpu;

namespace NegDistill.Tests;

/// <summary>
/// Cache detection (sysfs parsing, CPUID), the GEMM blocking derived from it, and the FMA peak measurement.
/// </summary>
public class CpuInfoTests
{
    string _dir = "";

    [SetUp] public void SetUp() => _dir = Directory.CreateTempSubdirectory("negdistill-cpuinfo-").FullName;
    [TearDown] public void TearDown() => Directory.Delete(_dir, true);

    void Index(int i, string level, string type, string size, string? ways = null, string? shared = null)
    {
        var d = Directory.CreateDirectory(Path.Combine(_dir, $"index{i}")).FullName;
        File.WriteAllText(Path.Combine(d, "level"), level + "\n");
        File.WriteAllText(Path.Combine(d, "type"), type + "\n");
        File.WriteAllText(Path.Combine(d, "size"), size + "\n");
        if (ways != null) File.WriteAllText(Path.Combine(d, "ways_of_associativity"), ways + "\n");
        if (shared != null) File.WriteAllText(Path.Combine(d, "shared_cpu_list"), shared + "\n");
    }

    [Test]
    public void ReadSysfs_TakesDataAndUnifiedLevels_SkipsInstruction()
    {
        // A Zen 3 as the issue describes it: 32 KiB 8-way L1d, 512 KiB L2, 32 MiB L3 over 8 CPUs.
        Index(0, "1", "Data", "32K", "8", "0");
        Index(1, "1", "Instruction", "64K", "4", "0");
        Index(2, "2", "Unified", "512K", "8", "0");
        Index(3, "3", "Unified", "32768K", "16", "0-3,8,10-12");
        var c = CpuInfo.ReadSysfs(_dir)!;
        Assert.That((c.L1d, c.L1dWays, c.L2, c.L3, c.L3SharedBy, c.Source), Is.EqualTo((32L << 10, 8, 512L << 10, 32L << 20, 8, "sysfs")));
    }

    [Test]
    public void ReadSysfs_WithoutL1d_ReturnsNull_AndMissingWaysDefaultToEight()
    {
        Index(0, "2", "Unified", "1024K");
        Assert.That(CpuInfo.ReadSysfs(_dir), Is.Null);
        Index(1, "1", "Data", "48K");
        var c = CpuInfo.ReadSysfs(_dir)!;
        Assert.That((c.L1d, c.L1dWays, c.L2, c.L3), Is.EqualTo((48L << 10, 8, 1L << 20, 0L)));
        Assert.That(CpuInfo.ReadSysfs(Path.Combine(_dir, "absent")), Is.Null);
    }

    [TestCase("48K", 48L << 10)]
    [TestCase("1024K", 1L << 20)]
    [TestCase("32M", 32L << 20)]
    [TestCase("4096", 4096L)]
    public void ParseSize(string s, long bytes) => Assert.That(CpuInfo.ParseSize(s), Is.EqualTo(bytes));

    [TestCase("0", 1)]
    [TestCase("0-1", 2)]
    [TestCase("0-3,8,10-11", 7)]
    public void CountCpus(string list, int n) => Assert.That(CpuInfo.CountCpus(list), Is.EqualTo(n));

    [Test]
    public void Derive_Zen5Avx512_KeepsTheBlockingTunedThere()
    {
        // The machine the constants before issue 14 were tuned on: KC 256, MC 144, NC 4096 with the 12×32 tile.
        var b = GemmBlocking.Derive(new CacheInfo(48 << 10, 12, 1 << 20, 32 << 20, 2, "test"), 64);
        Assert.That((b.Mr, b.Nr, b.Kc, b.Mc, b.Nc), Is.EqualTo((12, 32, 256, 144, 4096)));
    }

    [Test]
    public void Derive_Zen3Avx2_FitsTheL1()
    {
        var b = GemmBlocking.Derive(new CacheInfo(32 << 10, 8, 512 << 10, 32 << 20, 8, "test"), 32);
        Assert.That((b.Mr, b.Nr, b.Kc, b.Mc, b.Nc), Is.EqualTo((6, 16, 320, 144, 4096)));
        // one A sliver and the B sliver leave a way of the 8 free
        Assert.That((long)b.Kc * (b.Mr + b.Nr) * sizeof(float), Is.LessThanOrEqualTo(32L * 1024 * 7 / 8));
    }

    [Test]
    public void Derive_SmallCaches_ShrinkMcAndNc_WithinBounds()
    {
        // 128-bit vectors, 256 KiB L2: the A block takes at most half of L2.
        var b = GemmBlocking.Derive(new CacheInfo(32 << 10, 8, 256 << 10, 0, 1, "test"), 16);
        Assert.That((b.Mr, b.Nr, b.Kc), Is.EqualTo((6, 8, 512)));
        Assert.That(b.Mc, Is.EqualTo(60));
        Assert.That((long)b.Mc * b.Kc * sizeof(float), Is.LessThanOrEqualTo(128L << 10), "A block ≤ half of L2");
        // no L3: the B panel takes at most half of L2
        var n = GemmBlocking.Derive(new CacheInfo(32 << 10, 8, 2 << 20, 0, 1, "test"), 16);
        Assert.That(n.Nc, Is.EqualTo(512));
        Assert.That((long)n.Nc * n.Kc * sizeof(float), Is.LessThanOrEqualTo(1L << 20), "B panel ≤ half of L2");
        // tiny or absent caches still give a usable blocking
        var t = GemmBlocking.Derive(new CacheInfo(0, 0, 0, 0, 1, "test"), 32);
        Assert.That(t.Kc, Is.InRange(64, 512));
        Assert.That(t.Kc % 8, Is.Zero);
        Assert.That(t.Mc, Is.GreaterThanOrEqualTo(t.Mr));
        Assert.That(t.Mc % t.Mr, Is.Zero);
        Assert.That(t.Nc, Is.GreaterThanOrEqualTo(16 * t.Nr));
        Assert.That(t.Nc % t.Nr, Is.Zero);
    }

    [Test]
    public void Gemm_UsesTheBlockingOfThisMachine()
    {
        var b = Gemm.Blocking;
        Assert.That(b, Is.EqualTo(GemmBlocking.Derive(CpuInfo.Caches, CpuInfo.VectorBytes)));
        Assert.That(b.Nr, Is.EqualTo(2 * CpuInfo.VectorBytes / sizeof(float)));
        TestContext.Out.WriteLine($"{CpuInfo.ModelName}, {CpuInfo.Isa}: {b}");
    }

    [Test]
    public void Caches_OnLinux_AreSysfs_AndCpuidAgreesOnL1d()
    {
        const string sys = "/sys/devices/system/cpu/cpu0/cache";
        if (!Directory.Exists(sys)) Assert.Ignore("no Linux sysfs cache folder on this machine");
        Assert.That(CpuInfo.Caches, Is.EqualTo(CpuInfo.ReadSysfs(sys)));
        if (!X86Base.IsSupported) return;
        var fromCpuid = CpuInfo.FromCpuid();
        Assert.That(fromCpuid, Is.Not.Null, "CPUID reports no data cache");
        Assert.That(fromCpuid!.L1d, Is.EqualTo(CpuInfo.Caches.L1d), "L1d from CPUID vs sysfs");
        Assert.That(fromCpuid.L2, Is.EqualTo(CpuInfo.Caches.L2), "L2 from CPUID vs sysfs");
    }

    [Test]
    public void MeasurePeak_GivesAPlausibleMachine()
    {
        var p = CpuInfo.MeasurePeak(trials: 2);
        TestContext.Out.WriteLine(p);
        Assert.That(p.ClockGHz, Is.InRange(0.3, 8.0), "clock");
        Assert.That(p.FmaPipes, Is.InRange(1, 4), "FMA pipes");
        Assert.That(p.Lanes, Is.EqualTo(Math.Max(1, CpuInfo.VectorBytes / 4)));
        Assert.That(p.Cores, Is.InRange(1, Environment.ProcessorCount));
        Assert.That(p.GflopPerS, Is.EqualTo(p.Cores * p.ClockGHz * p.Lanes * 2 * p.FmaPipes).Within(1e-9));
    }
}
