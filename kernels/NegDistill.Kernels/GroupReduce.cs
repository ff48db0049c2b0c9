using ILGPU;

namespace NegDistill.Kernels;

/// <summary>Reductions across a 1-D group. Every thread of the group must call them (they contain barriers);
/// the group size must be a power of two ≤ <see cref="MaxGroup"/> and a multiple of the warp size. Both
/// versions fix the order of additions, so results repeat run to run, and every thread gets the same value.
///   version 1  <see cref="Sum"/>, <see cref="Max"/>: a tree through shared memory, log2(G) levels each behind a
///              barrier (G = 256: 8 levels, 10 barriers in all).
///   version 2  <see cref="SumV2"/>, <see cref="MaxV2"/>: a shuffle tree inside each warp (no shared memory, no
///              barrier), lane 0 of each warp writes its warp's value, then every warp reduces those G/32
///              values by shuffles in warp order and takes lane 0's result: 2 barriers. The float sum is
///              associated differently from version 1 (the max is the same: it is exact).
/// The integer-valued sums of the sampling kernels are exact in either (counts far below 2^24); they keep
/// version 1.</summary>
public static class GroupReduce
{
    public const int MaxGroup = 256;

    public enum Version { V1Tree = 1, V2Warp = 2 }

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

    /// <summary>Lane 0 gets lane 0 + lane 16, then + lane 8, …: the warp's sum in a fixed tree.</summary>
    static float WarpSum(float v)
    {
        for (int off = Warp.WarpSize / 2; off > 0; off >>= 1) v += Warp.ShuffleDown(v, off);
        return v;
    }

    static float WarpMax(float v)
    {
        for (int off = Warp.WarpSize / 2; off > 0; off >>= 1) { float o = Warp.ShuffleDown(v, off); if (o > v) v = o; }
        return v;
    }

    public static float SumV2(float v, ArrayView<float> scratch)
    {
        int w = Warp.WarpSize, lane = Warp.LaneIdx, warps = Group.DimX / w;
        v = WarpSum(v);
        if (lane == 0) scratch[Group.IdxX / w] = v;
        Group.Barrier();
        float p = 0f;                                          // lane l: warps l, l + w, … (one each when G ≤ w²)
        for (int i = lane; i < warps; i += w) p += scratch[i];
        float r = Warp.Broadcast(WarpSum(p), 0);
        Group.Barrier();                                       // the scratch may be written by the next call
        return r;
    }

    public static float MaxV2(float v, ArrayView<float> scratch)
    {
        int w = Warp.WarpSize, lane = Warp.LaneIdx, warps = Group.DimX / w;
        v = WarpMax(v);
        if (lane == 0) scratch[Group.IdxX / w] = v;
        Group.Barrier();
        float p = float.NegativeInfinity;
        for (int i = lane; i < warps; i += w) { float o = scratch[i]; if (o > p) p = o; }
        float r = Warp.Broadcast(WarpMax(p), 0);
        Group.Barrier();
        return r;
    }

    /// <summary>The sum by <paramref name="version"/> (a launch-wide constant, so the branch is uniform).</summary>
    public static float Sum(float v, ArrayView<float> scratch, int version) => version == 2 ? SumV2(v, scratch) : Sum(v, scratch);
    public static float Max(float v, ArrayView<float> scratch, int version) => version == 2 ? MaxV2(v, scratch) : Max(v, scratch);
}
