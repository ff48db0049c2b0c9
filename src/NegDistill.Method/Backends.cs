using NegDistill.Kernels;
using NegDistill.Runtime;

namespace NegDistill.Method;

/// <summary>The backends a run can compute on, by the name `--device` and the config's <c>device</c> take.</summary>
public static class Backends
{
    public const string Help = "cpu (SIMD CPU twin, default), ilgpu-cpu (the kernels on ILGPU's CPU accelerator: slow, for checking), cuda (the kernels on an NVIDIA GPU), auto (cuda when present, else cpu)";

    public static readonly string[] Names = ["cpu", "ilgpu-cpu", "cuda", "auto"];

    /// <summary>A backend by name (one of <see cref="Names"/>, checked before).</summary>
    public static IBackend Create(string name) => name switch
    {
        "cpu" => new CpuBackend(),
        "ilgpu-cpu" => new IlgpuBackend(IlgpuDevice.Cpu),
        "cuda" => Cuda(),
        "auto" => TryCuda() ?? new CpuBackend(),
        _ => throw new ArgumentException($"unknown device '{name}' ({string.Join(", ", Names)})"),
    };

    /// <summary>The CUDA backend, or the exact reason there is none (driver library not found, no device,
    /// an accelerator that would not start) with what to use instead.</summary>
    static IBackend Cuda()
    {
        try { return new IlgpuBackend(IlgpuDevice.Cuda); }
        catch (InvalidOperationException e) { throw new DeviceUnavailableException($"--device cuda: {e.Message.Replace("; use --device cpu", "")} (use --device cpu, or auto to take a GPU when there is one)"); }
    }

    static IBackend? TryCuda()
    {
        try { return new IlgpuBackend(IlgpuDevice.Cuda); }
        catch (InvalidOperationException) { return null; }
    }
}
