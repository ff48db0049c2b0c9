using ILGPU;
using ILGPU.Runtime;
using NegDistill.Checkpoints;
using NegDistill.Kernels;

namespace NegDistill.Tests;

/// <summary>
/// KV-cache kernels version 2 (flash decoding over a 16-bit cache, keys split into chunks of 64 over
/// warps) against version 1 (F32 cache, one group per row and head) on ILGPU's CPU accelerator: the same
/// K and V, rounded to 16 bits once, written by each version's own write kernel; rows at positions on
/// either side of the chunk boundaries. fp32 arithmetic on both sides, different orders: 1e-5 + 1e-4 relative.
/// </summary>
[TestFixture]
public class FlashDecodingTests
{
    [Test]
    public void Version2_EqualsVersion1_OnTheSameRoundedCache([Values] bool bf16, [Values(8, 20)] int hd)
    {
        var acc = TestUtil.Ilgpu.Accelerator;
        var l = new KvCacheKernels.Launcher(acc, Math.Min(16, acc.MaxNumThreadsPerGroup));
        int H = 2, C = H * hd, tmax = 200, slots = 3;
        int[] pos = [0, 63, 64, 130, 199];
        int R = pos.Length;
        int[] slot = [0, 1, 2, 1, 0];
        // fill every slot's positions 0..tmax−1 with rounded values, through both write kernels
        var kAll = TestUtil.Rand(slots * tmax * C, 1).Select(x => HalfPrecision.Widen(HalfPrecision.Narrow(x, bf16), bf16)).ToArray();
        var vAll = TestUtil.Rand(slots * tmax * C, 2).Select(x => HalfPrecision.Widen(HalfPrecision.Narrow(x, bf16), bf16)).ToArray();
        using var k32 = acc.Allocate1D<float>(slots * tmax * C); using var v32 = acc.Allocate1D<float>(slots * tmax * C);
        using var k16 = acc.Allocate1D<ushort>(slots * tmax * C); using var v16 = acc.Allocate1D<ushort>(slots * tmax * C);
        int rowsAll = slots * tmax;
        using var kr = acc.Allocate1D(kAll); using var vr = acc.Allocate1D(vAll);
        using var sAll = acc.Allocate1D(Enumerable.Range(0, rowsAll).SelectMany(i => new[] { 0, 0, i / tmax * tmax }).ToArray());
        using var pAll = acc.Allocate1D(Enumerable.Range(0, rowsAll).Select(i => i % tmax).ToArray());
        l.Write(k32.View, v32.View, kr.View, vr.View, sAll.View, pAll.View, rowsAll, C);
        l.Write16(k16.View, v16.View, kr.View, vr.View, sAll.View, pAll.View, rowsAll, C, bf16);
        using var q = acc.Allocate1D(TestUtil.Rand(R * C, 3));
        using var bs = acc.Allocate1D(slot.SelectMany(x => new[] { 0, 0, x * tmax }).ToArray()); using var bp = acc.Allocate1D(pos);
        using var o1 = acc.Allocate1D<float>(R * C); using var o2 = acc.Allocate1D<float>(R * C);
        o2.CopyFromCPU(Enumerable.Repeat(float.NaN, R * C).ToArray());   // unwritten elements fail
        l.Attention(o1.View, q.View, k32.View, v32.View, bs.View, bp.View, R, tmax, H, hd);
        l.Attention16(o2.View, q.View, k16.View, v16.View, bs.View, bp.View, R, tmax, H, hd, bf16);
        acc.Synchronize();
        TestUtil.Close(o2.GetAsArray1D(), o1.GetAsArray1D(), 1e-5f, 1e-4f, "cached attention");
        // the 16-bit write keeps exactly the rounded values
        var back = k16.GetAsArray1D().Select(w => HalfPrecision.Widen(w, bf16)).ToArray();
        Assert.That(back, Is.EqualTo(kAll));
    }
}
