using NegDistill.Kernels;

namespace NegDistill.Tests;

/// <summary>
/// Static GPU checks with no GPU: every kernel's PTX (as <see cref="KernelCatalog"/> compiles it, at the
/// engine's optimisation level) is assembled by ptxas for sm_80 and sm_90 with -v; a kernel fails when it
/// does not assemble, spills registers, or has a stack frame (local memory: slow, and for inline-PTX
/// kernels a sign that operands left registers). ptxas and cuobjdump come from Debian's CUDA 11.8 toolkit
/// via `bash tools/cuda/setup.sh` (CI runs it); without them these tests fail and say so.
/// The resource table of the same run is written by `negdistill ptx` (tools/gpu/ptxas-report.sh).
/// </summary>
[TestFixture]
public class PtxasTests
{
    internal static string Bin => Ptxas.FindBin(TestContext.CurrentContext.TestDirectory)
        ?? throw new AssertionException("ptxas not found: run `bash tools/cuda/setup.sh` (fetches Debian's CUDA 11.8 ptxas into .cache/cuda/bin) or set NEGDISTILL_CUDA_BIN");

    static IEnumerable<TestCaseData> Cases() =>
        from m in KernelCatalog.All
        from arch in KernelCatalog.Architectures
        select new TestCaseData(KernelCatalog.Name(m), KernelCatalog.ArchName(arch)).SetName($"Ptxas_{KernelCatalog.Name(m)}_{KernelCatalog.ArchName(arch)}");

    [TestCaseSource(nameof(Cases))]
    public void AssemblesWithoutSpillsOrStack(string kernel, string arch)
    {
        var a = KernelCatalog.Architectures.Single(x => KernelCatalog.ArchName(x) == arch);
        var r = Ptxas.Run(Bin, kernel, arch, KernelCatalog.CompilePtx(KernelCatalog.Find(kernel), a), sass: true);
        Assert.That(r.Assembled, Is.True, $"ptxas rejected {kernel} for {arch}:\n{r.Log}");
        Assert.That(r.SpillStores + r.SpillLoads, Is.Zero, $"{kernel} spills on {arch}:\n{r.Log}");
        Assert.That(r.StackBytes, Is.Zero, $"{kernel} has a stack frame on {arch}:\n{r.Log}");
        Assert.That(r.Count("LDL") + r.Count("STL"), Is.Zero, $"{kernel} uses local memory on {arch}");
        Assert.That(r.Registers, Is.InRange(1, 255));
    }

    [TestCase("sm_80")]
    [TestCase("sm_90")]
    public void TensorCoreMatMul_IsOnTheTensorCorePath(string arch)
    {
        // MatMulKernels version 2: per k16 step 16 HMMA fed by 6 LDSM (4 for A, 2 for B; a .trans and a plain
        // variant each), tiles staged by cp.async (LDGSTS); no local memory anywhere (the operands of ILGPU's
        // inline PTX would otherwise pass through it)
        var a = KernelCatalog.Architectures.Single(x => KernelCatalog.ArchName(x) == arch);
        string ptx = KernelCatalog.CompilePtx(KernelCatalog.Find("MatMulKernels.MmaKernel"), a);
        Assert.That(ptx, Does.Contain(".extern .shared").And.Contain("__dyn_shared_alloca"), "the strings address ILGPU's dynamic shared array by name");
        Assert.That(ptx, Does.Not.Contain("__shared_alloca"), "no static shared memory before the dynamic array");
        var r = Ptxas.Run(Bin, "MatMulKernels.MmaKernel", arch, ptx, sass: true);
        Assert.That(r.Clean, Is.True, r.Log);
        Assert.That(r.Count("HMMA"), Is.GreaterThanOrEqualTo(16), "HMMA.16816");
        Assert.That(System.Text.RegularExpressions.Regex.Matches(r.Sass!, @"HMMA\.16816\.F32\.BF16").Count, Is.GreaterThanOrEqualTo(16));
        Assert.That(r.Count("LDSM"), Is.GreaterThanOrEqualTo(6));
        Assert.That(r.Count("LDGSTS"), Is.GreaterThanOrEqualTo(2));
        Assert.That(r.Count("LDL") + r.Count("STL"), Is.Zero);
        Assert.That(r.Registers, Is.LessThanOrEqualTo(128), "two groups of 256 threads per SM need ≤ 128 registers");
    }

    [TestCase("sm_80")]
    [TestCase("sm_90")]
    public void Float4Kernels_Use128BitLoadsAndStores(string arch)
    {
        // version 2 of the streaming kernels reads ArrayView<Float4>: one LDG.E.128 per operand and one STG.E.128 per
        // output (SwiGLU backward: dg, du, dh, g, u in, dg, du out), no 32-bit global access left; version 1 has none
        var a = KernelCatalog.Architectures.Single(x => KernelCatalog.ArchName(x) == arch);
        PtxasResult Sass(string k) => Ptxas.Run(Bin, k, arch, KernelCatalog.CompilePtx(KernelCatalog.Find(k), a), sass: true);
        var v2 = Sass("SwiGluKernels.BackwardV2Kernel");
        Assert.That(v2.Clean, Is.True, v2.Log);
        Assert.That(v2.Count("LDG.E.128"), Is.EqualTo(5), v2.Sass);
        Assert.That(v2.Count("STG.E.128"), Is.EqualTo(2), v2.Sass);
        // Count("LDG.E") also matches LDG.E.128
        Assert.That(v2.Count("LDG.E") - v2.Count("LDG.E.128") + v2.Count("STG.E") - v2.Count("STG.E.128"), Is.Zero, "32-bit global accesses left in version 2");
        foreach (var k in new[] { "SwiGluKernels.ForwardV2Kernel", "AdamWKernels.V2Kernel", "ElementwiseKernels.AxpyV2Kernel", "RmsNormKernels.ForwardV3Kernel", "RmsNormKernels.BackwardDxV3Kernel", "CrossEntropyKernels.V3Kernel", "NceKernels.DistillV3Kernel" })
        {
            var r = Sass(k);
            Assert.That(r.Count("LDG.E.128"), Is.GreaterThan(0), $"{k}:\n{r.Sass}");
            Assert.That(r.Count("STG.E.128"), Is.GreaterThan(0), $"{k}:\n{r.Sass}");
        }
        // NCE's KL version 3 reads both rows as Float4s and writes one float per row: no 32-bit global load
        var kl = Sass("NceKernels.KlV3Kernel");
        Assert.That(kl.Count("LDG.E.128"), Is.GreaterThan(0), kl.Sass);
        Assert.That(kl.Count("LDG.E") - kl.Count("LDG.E.128"), Is.Zero, "32-bit global loads left in KlV3Kernel");
        var v1 = Sass("SwiGluKernels.BackwardKernel");
        Assert.That(v1.Count("LDG.E.128") + v1.Count("STG.E.128"), Is.Zero, "version 1 reads one float per thread");
        Assert.That(v1.Count("LDG.E"), Is.EqualTo(5));
    }

    [TestCase("sm_80")]
    [TestCase("sm_90")]
    public void DropoutV2_OnlyUses128BitGlobalAccesses(string arch)
    {
        // version 2 of dropout: the mask hash runs in registers; backward reads dy and dx as one LDG.E.128 each and
        // writes dx as one STG.E.128, forward one of each; no 32-bit global access
        var a = KernelCatalog.Architectures.Single(x => KernelCatalog.ArchName(x) == arch);
        PtxasResult Sass(string k) => Ptxas.Run(Bin, k, arch, KernelCatalog.CompilePtx(KernelCatalog.Find(k), a), sass: true);
        foreach (var (k, loads, stores) in new[] { ("DropoutKernels.BackwardV2Kernel", 2, 1), ("DropoutKernels.ForwardV2Kernel", 1, 1) })
        {
            var r = Sass(k);
            Assert.That(r.Clean, Is.True, r.Log);
            Assert.That(r.Count("LDG.E.128"), Is.EqualTo(loads), $"{k}:\n{r.Sass}");
            Assert.That(r.Count("STG.E.128"), Is.EqualTo(stores), $"{k}:\n{r.Sass}");
            Assert.That(r.Count("LDG.E") - r.Count("LDG.E.128") + r.Count("STG.E") - r.Count("STG.E.128"), Is.Zero, $"{k}: 32-bit global accesses left");
        }
    }

    [Test]
    public void GlobalLoadsAreLdgAtTheEngineLevel()
    {
        // at O1 ILGPU wrote generic ld (SASS LD.E); the engine's level must give LDG
        var r = Ptxas.Run(Bin, "RmsNormKernels.ForwardKernel", "sm_90",
            KernelCatalog.CompilePtx(KernelCatalog.Find("RmsNormKernels.ForwardKernel"), ILGPU.Runtime.Cuda.CudaArchitecture.SM_90), sass: true);
        Assert.That(r.Count("LDG"), Is.GreaterThan(0), r.Sass);
        Assert.That(r.Count("LD"), Is.Zero, "generic LD.E loads left");
    }

    [Test]
    public void ParserReadsAKnownLog()
    {
        // a broken PTX must come back as not assembled with ptxas's message, never as a clean result
        var r = Ptxas.Run(Bin, "broken", "sm_80", ".version 8.0\n.target sm_80\n.address_size 64\n.visible .entry k() { bogus; }\n", sass: false);
        Assert.That(r.Assembled, Is.False);
        Assert.That(r.Clean, Is.False);
        Assert.That(r.Log, Does.Contain("error").IgnoreCase);
    }
}
