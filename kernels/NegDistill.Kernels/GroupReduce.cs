using ILGPU;

namespace NegDistill.Kernels;

/// <summary>Tree reductions across a 1-D group through shared memory. Every thread of the group must
/// call them (they contain barriers); the group size must be a power of two ≤ <see cref="MaxGroup"/>.
/// The order of additions is fixed by the tree, so results are repeatable run to run.</summary>
public static class GroupReduce
{
    public const int MaxGroup = 256;

    public static float Sum(float v, ArrayView<float> scratch)
    {
        int tid = Group.IdxX;
        scratch[tid] = v;
        Group.Barrier();
        for (int s = Group.DimX / 2; s > 0; s >>= 1)
        {
            if (tid < s) scratch[tid] += scratch[tid + s];
            Group.Barrier();
        }
        float r = scratch[0];
        Group.Barrier();
        return r;
    }

    public static float Max(float v, ArrayView<float> scratch)
    {
        int tid = Group.IdxX;
        scratch[tid] = v;
        Group.Barrier();
        for (int s = Group.DimX / 2; s > 0; s >>= 1)
        {
            if (tid < s) { float o = scratch[tid + s]; if (o > scratch[tid]) scratch[tid] = o; }
            Group.Barrier();
        }
        float r = scratch[0];
        Group.Barrier();
        return r;
    }
}
