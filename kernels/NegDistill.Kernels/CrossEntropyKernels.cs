using ILGPU;
using ILGPU.Runtime;

namespace NegDistill.Kernels;

/// <summary>
/// Fused softmax cross-entropy and its gradient, in place over the logits rows. CPU twin and the
/// math: src/NegDistill.Core/Ops/CrossEntropy.cs. One group per row, three strided passes
/// (max, Σexp, write gradient); the target logit is read before the row is overwritten. Version 1 (Kernel)
/// reduces through GroupReduce's shared-memory tree, version 2 (V2Kernel) by warp shuffles, version 3 (V3Kernel, the
/// default where V is a multiple of 4 and the logits 16-byte aligned) is version 2 with 128-bit loads and stores
/// (thread j reads entries 4j … 4j+3, 4(j+G) …: another order of the Σexp).
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

    /// <summary>Version 3: version 2 over <see cref="Float4"/>s; v = V (a multiple of 4).</summary>
    public static void V3Kernel(ArrayView<Float4> logits, ArrayView<float> losses, ArrayView<int> targets, int v, float weight, int computeGrad)
    {
        var sh = SharedMemory.Allocate<float>(GroupReduce.MaxGroup);
        int v4 = v / 4;
        long row = Grid.IdxX, o = row * v4;
        int y = targets[row];
        if (y < 0)
        {
            if (Group.IdxX == 0) losses[row] = 0f;
            if (computeGrad != 0)
                for (int j = Group.IdxX; j < v4; j += Group.DimX) logits[o + j] = default;
            return;
        }
        Float4 zt = logits[o + (y >> 2)];
        int q = y & 3;
        float zy = q == 0 ? zt.X : q == 1 ? zt.Y : q == 2 ? zt.Z : zt.W;
        float max = float.NegativeInfinity;
        for (int j = Group.IdxX; j < v4; j += Group.DimX)
        {
            Float4 z = logits[o + j];
            if (z.X > max) max = z.X;
            if (z.Y > max) max = z.Y;
            if (z.Z > max) max = z.Z;
            if (z.W > max) max = z.W;
        }
        max = GroupReduce.MaxV2(max, sh);
        float sum = 0f;
        for (int j = Group.IdxX; j < v4; j += Group.DimX)
        {
            Float4 z = logits[o + j];
            sum += (MathF.Exp(z.X - max) + MathF.Exp(z.Y - max)) + (MathF.Exp(z.Z - max) + MathF.Exp(z.W - max));
        }
        sum = GroupReduce.SumV2(sum, sh);
        if (Group.IdxX == 0) losses[row] = max + MathF.Log(sum) - zy;
        if (computeGrad == 0) return;
        float inv = 1f / sum;
        for (int j = Group.IdxX; j < v4; j += Group.DimX)
        {
            Float4 z = logits[o + j];
            int b = 4 * j;
            logits[o + j] = new Float4(Grad(z.X, b == y, max, inv, weight), Grad(z.Y, b + 1 == y, max, inv, weight),
                                       Grad(z.Z, b + 2 == y, max, inv, weight), Grad(z.W, b + 3 == y, max, inv, weight));
        }
    }

    static float Grad(float z, bool target, float max, float inv, float weight)
    {
        float g = weight * MathF.Exp(z - max) * inv;
        return target ? g - weight : g;
    }

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
        readonly Action<KernelConfig, ArrayView<Float4>, ArrayView<float>, ArrayView<int>, int, float, int> _k3 =
            acc.LoadStreamKernel<ArrayView<Float4>, ArrayView<float>, ArrayView<int>, int, float, int>(V3Kernel);

        /// <summary>Version 3 when <paramref name="rv"/> and <paramref name="sv"/> are 2 and the rows fit 128-bit
        /// accesses; else version <paramref name="rv"/>.</summary>
        public void Fused(ArrayView<float> logits, ArrayView<float> losses, ArrayView<int> targets, int n, int v, float weight, bool grad,
            GroupReduce.Version rv = GroupReduce.Version.V2Warp, Wide.Version sv = Wide.Version.V2Float4)
        {
            long nv = (long)n * v;
            if (rv == GroupReduce.Version.V2Warp && sv == Wide.Version.V2Float4 && (v & 3) == 0 && Wide.Fits(nv, logits))
                _k3(new KernelConfig(n, group), Wide.As4(logits, nv), losses, targets, v, weight, grad ? 1 : 0);
            else (rv == GroupReduce.Version.V1Tree ? _k : _k2)(new KernelConfig(n, group), logits, losses, targets, v, weight, grad ? 1 : 0);
        }
    }
}
