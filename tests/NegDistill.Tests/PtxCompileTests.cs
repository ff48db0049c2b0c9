using ILGPU.Runtime.Cuda;
using NegDistill.Kernels;

namespace NegDistill.Tests;

/// <summary>
/// Every kernel compiles to PTX for SM_80 and SM_90 through ILGPU's PTXBackend at the engine's
/// optimisation level, without a GPU. This catches what the CPU accelerator forgives (unsupported
/// intrinsics, managed calls, shared memory misuse). Kernels come from <see cref="KernelCatalog"/>
/// (every public static *Kernel method of a *Kernels class), so a new kernel is covered without
/// editing this file. <see cref="PtxasTests"/> then assembles the same PTX.
/// </summary>
[TestFixture]
public class PtxCompileTests
{
    static IEnumerable<TestCaseData> Cases() =>
        from m in KernelCatalog.All
        from arch in KernelCatalog.Architectures
        select new TestCaseData(KernelCatalog.Name(m), KernelCatalog.ArchName(arch)).SetName($"Ptx_{KernelCatalog.Name(m)}_{KernelCatalog.ArchName(arch)}");

    [Test]
    public void EveryKernelFamilyIsFound() => Assert.That(KernelCatalog.All.Count, Is.GreaterThanOrEqualTo(17));

    [TestCaseSource(nameof(Cases))]
    public void CompilesToPtx(string kernel, string arch)
    {
        var a = KernelCatalog.Architectures.Single(x => KernelCatalog.ArchName(x) == arch);
        string ptx = KernelCatalog.CompilePtx(KernelCatalog.Find(kernel), a);
        Assert.That(ptx, Does.Contain(".entry"));
        // Observed with ILGPU 1.5.3: the emitted module says ".target sm_80" for the SM_90 backend too
        // (sm_80 code runs on sm_90); the code generator still ran with SM_90 capabilities.
        Assert.That(ptx, Does.Contain(".target sm_80"));
    }
}
