using System.Reflection;
using System.Text.RegularExpressions;
using ILGPU;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;

namespace NegDistill.Kernels;

/// <summary>
/// Every kernel of this assembly and its PTX, compiled without a GPU through ILGPU's PTXBackend at the
/// optimisation level the engine runs with. Used by the PTX and ptxas tests, by `negdistill ptx` (which
/// writes the PTX, the ptxas resource table and the SASS of every kernel) and by <see cref="IlgpuBackend"/>
/// for its context settings, so what is checked statically is what runs.
/// A kernel is a public static method named *Kernel in a class named *Kernels: a new kernel is covered
/// by every check without editing a list.
/// </summary>
public static partial class KernelCatalog
{
    /// <summary>ILGPU O2: global loads come out as ld.global (LDG) instead of generic ld, and inline-PTX
    /// operands stay in registers (at O1 they went through local memory around each mma).</summary>
    public const OptimizationLevel Level = OptimizationLevel.O2;

    /// <summary>The context settings every ILGPU context of the engine uses.</summary>
    public static Context.Builder Configure(Context.Builder b) => b.Optimize(Level).EnableAlgorithms();

    public static IReadOnlyList<MethodInfo> All { get; } = typeof(KernelCatalog).Assembly.GetTypes()
        .Where(t => t.Name.EndsWith("Kernels", StringComparison.Ordinal))
        .SelectMany(t => t.GetMethods(BindingFlags.Public | BindingFlags.Static))
        .Where(m => m.Name.EndsWith("Kernel", StringComparison.Ordinal))
        .OrderBy(Name, StringComparer.Ordinal)
        .ToList();

    public static string Name(MethodInfo m) => $"{m.DeclaringType!.Name}.{m.Name}";

    public static MethodInfo Find(string name) =>
        All.SingleOrDefault(m => Name(m) == name) ?? throw new ArgumentException($"no kernel named {name} (see `negdistill ptx --list`)");

    /// <summary>The architectures the engine is compiled for and checked against.</summary>
    public static readonly CudaArchitecture[] Architectures = [CudaArchitecture.SM_80, CudaArchitecture.SM_90];

    public static string ArchName(CudaArchitecture a) => $"sm_{a.Major}{a.Minor}";

    /// <summary>PTX of one kernel for <paramref name="arch"/>, as ILGPU would hand it to the driver.</summary>
    public static string CompilePtx(MethodInfo kernel, CudaArchitecture arch)
    {
        using var ctx = Context.Create(b => Configure(b.Cuda()));
        var isa = arch.Major >= 9 ? CudaInstructionSet.ISA_83 : CudaInstructionSet.ISA_80;
        using var backend = new PTXBackend(ctx, arch, isa, null!);
        var p0 = kernel.GetParameters().FirstOrDefault()?.ParameterType;
        bool implicitIndex = p0 == typeof(Index1D) || p0 == typeof(Index2D) || p0 == typeof(Index3D);
        var entry = implicitIndex ? EntryPointDescription.FromImplicitlyGroupedKernel(kernel) : EntryPointDescription.FromExplicitlyGroupedKernel(kernel);
        return ((PTXCompiledKernel)backend.Compile(entry, default)).PTXAssembly;
    }

    /// <summary>The same PTX with its `.version` line lowered to 7.8, the newest that Debian's ptxas 11.8
    /// accepts (ILGPU writes 8.0 for SM_80 and 8.3 for SM_90; every instruction the kernels use exists
    /// in 7.8: mma.sync m16n8k16 bf16, ldmatrix and cp.async since 7.0).</summary>
    public static string ForPtxas118(string ptx) => VersionLine().Replace(ptx, ".version 7.8", 1);

    [GeneratedRegex(@"^\.version\s+\d+\.\d+", RegexOptions.Multiline)]
    private static partial Regex VersionLine();
}
