using NegDistill.Kernels;
using NegDistill.Runtime;

namespace NegDistill.Cli;

static class Backends
{
    public const string Help = "cpu (SIMD CPU twin, default), ilgpu-cpu (the kernels on ILGPU's CPU accelerator: slow, for checking), cuda (the kernels on an NVIDIA GPU), auto (cuda when present, else cpu)";

    public static IBackend Create(string name) => name.ToLowerInvariant() switch
    {
        "cpu" => new CpuBackend(),
        "ilgpu-cpu" => new IlgpuBackend(IlgpuDevice.Cpu),
        "cuda" => new IlgpuBackend(IlgpuDevice.Cuda),
        "auto" => TryCuda() ?? new CpuBackend(),
        _ => throw new ArgumentException($"--device: unknown device '{name}' ({Help})"),
    };

    static IBackend? TryCuda()
    {
        try { return new IlgpuBackend(IlgpuDevice.Cuda); }
        catch (InvalidOperationException) { return null; }
    }
}
