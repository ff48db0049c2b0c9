using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using NegDistill.Cpu;

namespace NegDistill.Tests;

/// <summary>
/// Which vector path this test run exercises. .ci/run runs the GEMM and op tests again with the runtime's ISA
/// switches and says what it expects through NEGDISTILL_EXPECT_ISA:
///   avx2     DOTNET_EnableAVX512=0 (AVX2 + FMA, 256-bit kernels, AVX 8×8 transposes; on .NET 10 the
///            documented DOTNET_EnableAVX512F=0 leaves AVX-512 on)
///   sse+avx  DOTNET_EnableAVX2=0 (128-bit kernels, no FMA; AVX itself, hence the AVX transposes, stays on)
///   sse      DOTNET_EnableAVX=0 (128-bit kernels, no FMA, scalar transposes)
/// Without the variable the run must take the best path the CPU offers, as CPUID reports it. So two runs that
/// were meant to differ cannot silently test the same path.
/// </summary>
public class IsaTests
{
    [Test]
    public void ActivePath_IsTheOneThisRunAskedFor()
    {
        string? expect = Environment.GetEnvironmentVariable("NEGDISTILL_EXPECT_ISA");
        TestContext.Out.WriteLine($"NEGDISTILL_EXPECT_ISA={expect ?? "(unset)"}; {CpuInfo.Isa}; GEMM {Gemm.Path}, {Gemm.Blocking}");
        if (expect == null)
        {
            if (!X86Base.IsSupported) Assert.Ignore("not x86: CPUID cannot say what the best path is");
            expect = BestByCpuid();
        }
        switch (expect)
        {
            case "avx512":
                Assert.That(Vector512.IsHardwareAccelerated, Is.True, "Vector512 accelerated");
                Assert.That(Gemm.Path, Is.EqualTo("512-bit"));
                Assert.That((Gemm.Blocking.Mr, Gemm.Blocking.Nr), Is.EqualTo((12, 32)));
                break;
            case "avx2":
                Assert.That(Vector512.IsHardwareAccelerated, Is.False, "Vector512 accelerated");
                Assert.That(Avx512F.IsSupported, Is.False, "AVX-512F intrinsics (the 16×16 transposes) still on");
                Assert.That(Vector256.IsHardwareAccelerated && Avx2.IsSupported && Fma.IsSupported, Is.True, "AVX2 + FMA");
                Assert.That(Gemm.Path, Is.EqualTo("256-bit"));
                Assert.That((Gemm.Blocking.Mr, Gemm.Blocking.Nr), Is.EqualTo((6, 16)));
                break;
            case "sse+avx":
            case "sse":
                Assert.That(Vector256.IsHardwareAccelerated, Is.False, "Vector256 accelerated");
                Assert.That(Fma.IsSupported, Is.False, "FMA still on");
                Assert.That(CpuInfo.HardwareFma, Is.False);
                Assert.That(Avx.IsSupported, Is.EqualTo(expect == "sse+avx"), "AVX");
                Assert.That(Gemm.Path, Is.EqualTo("128-bit"));
                Assert.That((Gemm.Blocking.Mr, Gemm.Blocking.Nr), Is.EqualTo((6, 8)));
                break;
            default:
                Assert.Fail($"NEGDISTILL_EXPECT_ISA={expect}: expected avx512, avx2, sse+avx or sse");
                break;
        }
    }

    /// <summary>The widest path the CPU has, from CPUID itself (not from what the runtime enabled).</summary>
    static string BestByCpuid()
    {
        var (_, b7, _, _) = X86Base.CpuId(7, 0);
        var (_, _, c1, _) = X86Base.CpuId(1, 0);
        bool Bit(int reg, int bit) => (reg >> bit & 1) != 0;
        bool avx512 = Bit(b7, 16) && Bit(b7, 17) && Bit(b7, 28) && Bit(b7, 30) && Bit(b7, 31);   // F, DQ, CD, BW, VL
        bool avx2 = Bit(b7, 5) && Bit(c1, 12) && Bit(c1, 28);                                    // AVX2, FMA, AVX
        return avx512 ? "avx512" : avx2 ? "avx2" : Bit(c1, 28) ? "sse+avx" : "sse";
    }
}
