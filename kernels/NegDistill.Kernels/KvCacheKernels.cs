using ILGPU;
using ILGPU.Runtime;

namespace NegDistill.Kernels;

/// <summary>
/// KV cache of batched decoding: cache write, cached attention, row gather. CPU twin and the math:
/// src/NegDistill.Core/Ops/KvCache.cs. A forward is R rows, row r = one token of slot rowSlot[r] at
/// position rowPos[r]; the caches are (S, Tmax, C) per layer.
///
///   WriteKernel      one thread per (row, channel): k and v rows scattered to their (slot, pos).
///   AttentionKernel  one group per (row, head). Pass 1: threads stride over the keys 0..p, each
///                    computing a whole hd-long dot product, scores to a (R·H, Tmax) scratch; group
///                    max and Σexp by GroupReduce trees. Pass 2: threads stride over the head
///                    dimension (coalesced V reads), each summing P_j·v_j over j = 0..p in key order,
///                    the twin's order. No atomics; the group size is read at run time.
///   GatherKernel     one thread per (output row, channel).
///
/// Napkin math, decode at LLaMA-7b (C = 4096, 32 layers), 64 rows at an average position of 256:
/// every row reads its slot's K and V up to p, 2·257·4096·4 B ≈ 8.4 MB per row per layer, so
/// 64·32·8.4 MB ≈ 17 GB per decode step — 5 ms at 3.35 TB/s, against 13.5 GB of fp16 weights per
/// step (≈ 4 ms): past ~250 tokens of context the cache, not the weights, bounds decoding speed.
/// This version reads K with strided (uncoalesced) per-thread dot products and uses hd of the
/// group's threads in pass 2; a split-K ("flash-decoding") version that spreads one row's keys over
/// several groups and keeps the cache in fp16 is the next version of this family.
/// </summary>
public static class KvCacheKernels
{
    public struct Dims { public int Tmax, H, Hd; public float Scale; }

    /// <summary>Grid: R·C threads. kCache, vCache (S,Tmax,C); k, v (R,C); rowSlot, rowPos (R).</summary>
    public static void WriteKernel(Index1D i, ArrayView<float> kCache, ArrayView<float> vCache, ArrayView<float> k, ArrayView<float> v,
        ArrayView<int> rowSlot, ArrayView<int> rowPos, int tmax, int c)
    {
        int r = i / c, ch = i % c;
        long dst = ((long)rowSlot[r] * tmax + rowPos[r]) * c + ch;
        kCache[dst] = k[i];
        vCache[dst] = v[i];
    }

    /// <summary>Grid: R·H groups. outp, q (R,C); kCache, vCache (S,Tmax,C); scores (R·H, Tmax) scratch.</summary>
    public static void AttentionKernel(ArrayView<float> outp, ArrayView<float> q, ArrayView<float> kCache, ArrayView<float> vCache,
        ArrayView<int> rowSlot, ArrayView<int> rowPos, ArrayView<float> scores, Dims d)
    {
        var sh = SharedMemory.Allocate<float>(GroupReduce.MaxGroup);
        int rh = Grid.IdxX, r = rh / d.H, h = rh % d.H;
        int C = d.H * d.Hd, p = rowPos[r];
        long qo = (long)r * C + h * d.Hd;
        long kv = (long)rowSlot[r] * d.Tmax * C + h * d.Hd;
        long so = (long)rh * d.Tmax;
        float max = float.NegativeInfinity;
        for (int s = Group.IdxX; s <= p; s += Group.DimX)
        {
            long ko = kv + (long)s * C;
            float dot = 0f;
            for (int i = 0; i < d.Hd; i++) dot += q[qo + i] * kCache[ko + i];
            dot *= d.Scale;
            scores[so + s] = dot;
            if (dot > max) max = dot;
        }
        max = GroupReduce.Max(max, sh);
        float sum = 0f;
        for (int s = Group.IdxX; s <= p; s += Group.DimX)
        {
            float e = MathF.Exp(scores[so + s] - max);
            scores[so + s] = e;
            sum += e;
        }
        sum = GroupReduce.Sum(sum, sh);
        float inv = 1f / sum;
        Group.Barrier();
        for (int i = Group.IdxX; i < d.Hd; i += Group.DimX)
        {
            float acc = 0f;
            for (int s = 0; s <= p; s++)
            {
                float w = scores[so + s] * inv;
                if (w != 0f) acc += w * vCache[kv + (long)s * C + i];
            }
            outp[qo + i] = acc;
        }
    }

    /// <summary>Grid: R2·C threads. dst (R2,C) = src[rows, :].</summary>
    public static void GatherKernel(Index1D i, ArrayView<float> dst, ArrayView<float> src, ArrayView<int> rows, int c)
        => dst[i] = src[(long)rows[i / c] * c + i % c];

    public sealed class Launcher(Accelerator acc, int group)
    {
        readonly Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<int>, int, int> _write =
            acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<int>, int, int>(WriteKernel);
        readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<int>, ArrayView<float>, Dims> _attn =
            acc.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<int>, ArrayView<float>, Dims>(AttentionKernel);
        readonly Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<int>, int> _gather =
            acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<int>, int>(GatherKernel);
        MemoryBuffer1D<float, Stride1D.Dense>? _scores;

        public void Write(ArrayView<float> kCache, ArrayView<float> vCache, ArrayView<float> k, ArrayView<float> v, ArrayView<int> rowSlot, ArrayView<int> rowPos,
            int r, int tmax, int c)
            => _write(r * c, kCache, vCache, k, v, rowSlot, rowPos, tmax, c);

        public void Attention(ArrayView<float> outp, ArrayView<float> q, ArrayView<float> kCache, ArrayView<float> vCache, ArrayView<int> rowSlot, ArrayView<int> rowPos,
            int r, int tmax, int h, int hd)
        {
            long need = (long)r * h * tmax;
            if (_scores == null || _scores.Length < need)
            {
                acc.Synchronize();                             // a launch in flight may still read the old scratch
                _scores?.Dispose();
                _scores = acc.Allocate1D<float>(need);
            }
            _attn(new KernelConfig(r * h, group), outp, q, kCache, vCache, rowSlot, rowPos, _scores.View,
                new Dims { Tmax = tmax, H = h, Hd = hd, Scale = 1f / MathF.Sqrt(hd) });
        }

        public void Gather(ArrayView<float> dst, ArrayView<float> src, ArrayView<int> rows, int r2, int c) => _gather(r2 * c, dst, src, rows, c);
    }
}
