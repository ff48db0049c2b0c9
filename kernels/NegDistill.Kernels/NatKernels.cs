using ILGPU;
using ILGPU.Runtime;
using NegDistill.Ops;

namespace NegDistill.Kernels;

/// <summary>
/// NAT's dynamic integration unit, the fused per-row part (method.md Step 1.2). The math, its
/// derivation and what is kept between forward and backward are written once, beside the CPU twin:
/// src/NegDistill.Core/Ops/Integration.cs (<see cref="Integration"/>). The linear parts (LoRA deltas,
/// Q, K, U1, U2) are matmuls in NatAdapter; these two kernels do the per-row rest, one group per row of
/// D (= 128) features: two tree reductions for the scores and one for dα.
///
/// Memory traffic per row: forward reads 5·D and writes D + 1 floats, backward reads 6·D and
/// read-modify-writes 5·D — a few KB per row, negligible next to the N×d_out matmuls around it.
/// Loops over features are strided by the group size, so neighbouring threads touch neighbouring
/// addresses (coalesced). GELU uses <see cref="Gelu.PhiF"/>, the same function as the fp32 CPU twin.
/// Group reductions: version 1 (ForwardKernel, BackwardKernel) by GroupReduce's shared-memory tree, version 2
/// (ForwardV2Kernel, BackwardV2Kernel, the default) by its warp shuffles.
/// </summary>
public static class NatKernels
{
    public struct Dims
    {
        public int D;
        public float Beta, InvTemp;
    }

    /// <summary>Grid: N groups. mix(N,D), aNeg(N) written; q, kPos, kNeg, uPos, uNeg (N,D) read. Version 1: shared-memory trees.</summary>
    public static void ForwardKernel(ArrayView<float> mix, ArrayView<float> aNeg, ArrayView<float> q, ArrayView<float> kPos, ArrayView<float> kNeg,
        ArrayView<float> uPos, ArrayView<float> uNeg, Dims p)
        => Forward(mix, aNeg, q, kPos, kNeg, uPos, uNeg, p, 1);

    /// <summary>Version 2 of <see cref="ForwardKernel"/>: warp shuffles.</summary>
    public static void ForwardV2Kernel(ArrayView<float> mix, ArrayView<float> aNeg, ArrayView<float> q, ArrayView<float> kPos, ArrayView<float> kNeg,
        ArrayView<float> uPos, ArrayView<float> uNeg, Dims p)
        => Forward(mix, aNeg, q, kPos, kNeg, uPos, uNeg, p, 2);

    static void Forward(ArrayView<float> mix, ArrayView<float> aNeg, ArrayView<float> q, ArrayView<float> kPos, ArrayView<float> kNeg,
        ArrayView<float> uPos, ArrayView<float> uNeg, Dims p, int rv)
    {
        var sh = SharedMemory.Allocate<float>(GroupReduce.MaxGroup);
        long row = Grid.IdxX, o = row * p.D;
        float sp = 0f, sn = 0f;
        for (int j = Group.IdxX; j < p.D; j += Group.DimX)
        {
            float qj = q[o + j];
            sp += qj * kPos[o + j];
            sn += qj * kNeg[o + j];
        }
        sp = GroupReduce.Sum(sp, sh, rv);
        sn = GroupReduce.Sum(sn, sh, rv);
        float a = Integration.NegWeightF(sp * p.InvTemp, sn * p.InvTemp);
        if (Group.IdxX == 0) aNeg[row] = a;
        float alpha = 2f * p.Beta * a - p.Beta;
        for (int j = Group.IdxX; j < p.D; j += Group.DimX)
            mix[o + j] = (1f - alpha) * Gelu.ForwardF(uPos[o + j]) + alpha * Gelu.ForwardF(uNeg[o + j]);
    }

    /// <summary>Grid: N groups. Accumulates into dq, dkPos, dkNeg, duPos, duNeg (N,D). Version 1: shared-memory tree.</summary>
    public static void BackwardKernel(ArrayView<float> dq, ArrayView<float> dkPos, ArrayView<float> dkNeg, ArrayView<float> duPos, ArrayView<float> duNeg,
        ArrayView<float> dmix, ArrayView<float> q, ArrayView<float> kPos, ArrayView<float> kNeg, ArrayView<float> uPos, ArrayView<float> uNeg,
        ArrayView<float> aNeg, Dims p)
        => Backward(dq, dkPos, dkNeg, duPos, duNeg, dmix, q, kPos, kNeg, uPos, uNeg, aNeg, p, 1);

    /// <summary>Version 2 of <see cref="BackwardKernel"/>: warp shuffles.</summary>
    public static void BackwardV2Kernel(ArrayView<float> dq, ArrayView<float> dkPos, ArrayView<float> dkNeg, ArrayView<float> duPos, ArrayView<float> duNeg,
        ArrayView<float> dmix, ArrayView<float> q, ArrayView<float> kPos, ArrayView<float> kNeg, ArrayView<float> uPos, ArrayView<float> uNeg,
        ArrayView<float> aNeg, Dims p)
        => Backward(dq, dkPos, dkNeg, duPos, duNeg, dmix, q, kPos, kNeg, uPos, uNeg, aNeg, p, 2);

    static void Backward(ArrayView<float> dq, ArrayView<float> dkPos, ArrayView<float> dkNeg, ArrayView<float> duPos, ArrayView<float> duNeg,
        ArrayView<float> dmix, ArrayView<float> q, ArrayView<float> kPos, ArrayView<float> kNeg, ArrayView<float> uPos, ArrayView<float> uNeg,
        ArrayView<float> aNeg, Dims p, int rv)
    {
        var sh = SharedMemory.Allocate<float>(GroupReduce.MaxGroup);
        long row = Grid.IdxX, o = row * p.D;
        float a = aNeg[row], alpha = 2f * p.Beta * a - p.Beta;
        float dAlpha = 0f;
        for (int j = Group.IdxX; j < p.D; j += Group.DimX)
        {
            float g = dmix[o + j], up = uPos[o + j], un = uNeg[o + j];
            dAlpha += g * (Gelu.ForwardF(un) - Gelu.ForwardF(up));
            duPos[o + j] += (1f - alpha) * g * Gelu.GradF(up);
            duNeg[o + j] += alpha * g * Gelu.GradF(un);
        }
        dAlpha = GroupReduce.Sum(dAlpha, sh, rv);
        float dlNeg = 2f * p.Beta * dAlpha * a * (1f - a) * p.InvTemp, dlPos = -dlNeg;
        for (int j = Group.IdxX; j < p.D; j += Group.DimX)
        {
            float qj = q[o + j];
            dq[o + j] += dlPos * kPos[o + j] + dlNeg * kNeg[o + j];
            dkPos[o + j] += dlPos * qj;
            dkNeg[o + j] += dlNeg * qj;
        }
    }

    /// <summary>Typed launchers, loaded once per accelerator. The group is the backend's size, halved
    /// while half of it still covers D (so D = 128 runs 128-thread groups on a GPU, not 256 with half
    /// idle); it stays a power of two, as <see cref="GroupReduce"/> needs, and version 2 keeps at least one warp.</summary>
    public sealed class Launcher(Accelerator acc, int group)
    {
        readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, Dims> _fwd =
            acc.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, Dims>(ForwardKernel);
        readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, Dims> _fwd2 =
            acc.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, Dims>(ForwardV2Kernel);
        readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
            ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, Dims> _bwd =
            acc.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
                ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, Dims>(BackwardKernel);
        readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
            ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, Dims> _bwd2 =
            acc.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
                ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, Dims>(BackwardV2Kernel);

        readonly int _warp = acc.WarpSize;

        int GroupFor(int d, GroupReduce.Version rv)
        {
            int g = group, min = rv == GroupReduce.Version.V1Tree ? 16 : Math.Max(16, _warp);
            while (g > min && g / 2 >= d) g /= 2;
            return g;
        }

        public void Forward(ArrayView<float> mix, ArrayView<float> aNeg, ArrayView<float> q, ArrayView<float> kPos, ArrayView<float> kNeg,
            ArrayView<float> uPos, ArrayView<float> uNeg, int n, int d, float beta, float invTemp, GroupReduce.Version rv = GroupReduce.Version.V2Warp)
            => (rv == GroupReduce.Version.V1Tree ? _fwd : _fwd2)(new KernelConfig(n, GroupFor(d, rv)), mix, aNeg, q, kPos, kNeg, uPos, uNeg, new Dims { D = d, Beta = beta, InvTemp = invTemp });

        public void Backward(ArrayView<float> dq, ArrayView<float> dkPos, ArrayView<float> dkNeg, ArrayView<float> duPos, ArrayView<float> duNeg,
            ArrayView<float> dmix, ArrayView<float> q, ArrayView<float> kPos, ArrayView<float> kNeg, ArrayView<float> uPos, ArrayView<float> uNeg,
            ArrayView<float> aNeg, int n, int d, float beta, float invTemp, GroupReduce.Version rv = GroupReduce.Version.V2Warp)
            => (rv == GroupReduce.Version.V1Tree ? _bwd : _bwd2)(new KernelConfig(n, GroupFor(d, rv)), dq, dkPos, dkNeg, duPos, duNeg, dmix, q, kPos, kNeg, uPos, uNeg, aNeg, new Dims { D = d, Beta = beta, InvTemp = invTemp });
    }
}
