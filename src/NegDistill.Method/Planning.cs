using NegDistill.Kernels;
using NegDistill.Model;
using NegDistill.Runtime;

namespace NegDistill.Method;

/// <summary>The plan did not fit the device; the message names what to lower. Exit code 3.</summary>
public sealed class PlanDoesNotFitException(string message) : Exception(message);

/// <summary>
/// Prints a memory plan before anything is allocated and refuses, naming what to lower, when it does
/// not fit the device: a CUDA GPU's memory, or for the CPU backends the memory the .NET runtime may use.
/// </summary>
public static class Planning
{
    /// <summary>Bytes the backend may allocate: the GPU's memory, or the runtime's available memory on the CPU.</summary>
    public static long DeviceBytes(IBackend ops) =>
        ops is IlgpuBackend { IsCuda: true } g ? g.Accelerator.MemorySize : GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;

    /// <summary>Reports <paramref name="plan"/> against the device and throws <see cref="PlanDoesNotFitException"/>
    /// when it does not fit. <paramref name="lower"/> says which options shrink it.</summary>
    public static void Check(IReporter report, IBackend ops, MemoryPlan plan, string title, string lower, long? deviceBytes = null)
    {
        long device = deviceBytes ?? DeviceBytes(ops);
        foreach (var line in plan.Render($"{title} on {ops.Name}", device).TrimEnd('\n').Split('\n')) report.Line(line);
        if (plan.Total > device)
            throw new PlanDoesNotFitException(
                $"the plan needs {MemoryPlan.Gib(plan.Total)} and {ops.Name} has {MemoryPlan.Gib(device)}: lower {lower}");
    }

    /// <summary>The most KV-cache slots (at most <paramref name="sequences"/>, halving from there) whose
    /// sampling plan fits in <paramref name="device"/>; at least 1.</summary>
    public static int FitSlots(LlamaConfig cfg, DType weights, LoraConfig? lora, int sequences, int maxSeq, int extraRows, long device,
        MemoryPlan.NatPlan? nat = null, DType cache = DType.F32) =>
        FitSlots(cfg, weights, lora, sequences, s => new CacheShape(s, maxSeq, s + extraRows, cache), device, nat);

    /// <summary>The most slots (at most <paramref name="sequences"/>, halving from there) whose sampling plan with the
    /// cache shape <paramref name="shapeFor"/> gives fits in <paramref name="device"/>; at least 1.</summary>
    public static int FitSlots(LlamaConfig cfg, DType weights, LoraConfig? lora, int sequences, Func<int, CacheShape> shapeFor, long device,
        MemoryPlan.NatPlan? nat = null)
    {
        int s = Math.Max(1, sequences);
        while (s > 1 && Plan(cfg, weights, lora, shapeFor(s), nat).Total > device) s = (s + 1) / 2;
        return s;
    }

    /// <summary>The sampling plan of <paramref name="shape"/>.</summary>
    public static MemoryPlan Plan(LlamaConfig cfg, DType weights, LoraConfig? lora, CacheShape shape, MemoryPlan.NatPlan? nat = null) =>
        MemoryPlan.ForSampling(cfg, weights, lora, shape.Slots, shape.MaxSeq, shape.Rows, nat, shape.Cache, shape.Layout);
}
