using ILGPU;
using ILGPU.Runtime;

namespace NegDistill.Kernels;

/// <summary>
/// Fused softmax cross-entropy and its gradient, in place over the logits rows. CPU twin and the
/// math: src/NegDistill.Core/Ops/CrossEntropy.cs. One group per row, three strided passes
/// (max, Σexp, write gradient); the target logit is read before the row is overwritten. Version 1 (Kernel)
/// reduces through GroupReduce's shared-memory tree, version 2 (V2Kernel, the default) by warp shuffles.
/// Napkin math: 3 reads + 1 write of V floats per row — bandwidth-bound, ~16 bytes per vocabulary
/// entry, so 2,048 rows × 32,000 at 3 TB/s ≈ 0.35 ms.
/// </summary>
public static class CrossEntropyKernels
{
    /// <summary>Grid: rows groups. Version 1: <see cref="GroupReduce"/>'s shared-memory trees.</summary>
    public static void Kernel(ArrayView<float> logits, ArrayView<float> losses, ArrayView<int> targets, int v, float weight, int computeGrad)
        => Fused(logits, losses, targets, v, weight, computeGrad, 1);

    /// <summary>Version 2: warp shuffles (<see cref="GroupReduce.SumV2"/>, <see cref="GroupReduce.MaxV2"/>).</summary>
    public static void V2Kernel(ArrayView<float> logits, ArrayView<float> losses, ArrayView<int> targets, int v, float weight, int computeGrad)
        => Fused(logits, losses, targets, v, weight, computeGrad, 2);

    static void Fused(ArrayView<float> logits, ArrayView<float> losses, ArrayView<int> targets, int v, float weight, int computeGrad, int rv)
    {
        var sh = SharedMemory.Allocate<float>(GroupReduce.MaxGroup);
        long row = Grid.IdxX, o = row * v;
        int y = targets[row];
        if (y < 0)
        {
            if (Group.IdxX == 0) losses[row] = 0f;
            if (computeGrad != 0)
                for (int j = Group.IdxX; j < v; j += Group.DimX) logits[o + j] = 0f;
            return;
        }
        float zy = logits[o + y];
        float max = float.NegativeInfinity;
        for (int j = Group.IdxX; j < v; j += Group.DimX) { float z = logits[o + j]; if (z > max) max = z; }
        max = GroupReduce.Max(max, sh, rv);
        float sum = 0f;
        for (int j = Group.IdxX; j < v; j += Group.DimX) sum += MathF.Exp(logits[o + j] - max);
        sum = GroupReduce.Sum(sum, sh, rv);
        if (Group.IdxX == 0) losses[row] = max + MathF.Log(sum) - zy;
        if (computeGrad == 0) return;
        float inv = 1f / sum;
        for (int j = Group.IdxX; j < v; j += Group.DimX)
        {
            float g = weight * MathF.Exp(logits[o + j] - max) * inv;
            logits[o + j] = j == y ? g - weight : g;
        }
    }

    public sealed class Launcher(Accelerator acc, int group)
    {
        readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<int>, int, float, int> _k =
            acc.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<int>, int, float, int>(Kernel);
        readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<int>, int, float, int> _k2 =
            acc.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<int>, int, float, int>(V2Kernel);

        public void Fused(ArrayView<float> logits, ArrayView<float> losses, ArrayView<int> targets, int n, int v, float weight, bool grad,
            GroupReduce.Version rv = GroupReduce.Version.V2Warp)
            => (rv == GroupReduce.Version.V1Tree ? _k : _k2)(new KernelConfig(n, group), logits, losses, targets, v, weight, grad ? 1 : 0);
    }
}
