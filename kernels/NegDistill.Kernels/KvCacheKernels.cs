using ILGPU;
using ILGPU.Runtime;

namespace NegDistill.Kernels;

/// <summary>
/// KV cache of batched decoding: cache write, cached attention, row gather. CPU twin and the math:
/// src/NegDistill.Core/Ops/KvCache.cs. A forward is R rows, row r = one token at position rowPos[r];
/// the caches are a pool (P, C) per layer, and rowMap[r] = (pb, L, ob) places the row's sequence in it:
/// position j at cache row pb + j below L (a shared prompt), ob + j − L from L on (<see cref="CacheRow"/>).
///
///   WriteKernel      one thread per (row, channel): k and v rows scattered to their cache rows.
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
    /// <summary>Tmax: the most positions a row's sequence has (rowPos + 1 ≤ Tmax), the scratch's row length.</summary>
    public struct Dims { public int Tmax, H, Hd; public float Scale; }

    /// <summary>The cache row of position <paramref name="j"/> of row <paramref name="r"/>'s sequence under rowMap (R,3).</summary>
    public static long CacheRow(ArrayView<int> rowMap, int r, int j)
    {
        int len = rowMap[3 * r + 1];
        return j < len ? (long)rowMap[3 * r] + j : (long)rowMap[3 * r + 2] + (j - len);
    }

    /// <summary>Grid: R·C threads. kCache, vCache (P,C); k, v (R,C); rowMap (R,3), rowPos (R).</summary>
    public static void WriteKernel(Index1D i, ArrayView<float> kCache, ArrayView<float> vCache, ArrayView<float> k, ArrayView<float> v,
        ArrayView<int> rowMap, ArrayView<int> rowPos, int c)
    {
        int r = i / c, ch = i % c;
        long dst = CacheRow(rowMap, r, rowPos[r]) * c + ch;
        kCache[dst] = k[i];
        vCache[dst] = v[i];
    }

    /// <summary>Grid: R·H groups. outp, q (R,C); kCache, vCache (P,C); scores (R·H, Tmax) scratch.</summary>
    public static void AttentionKernel(ArrayView<float> outp, ArrayView<float> q, ArrayView<float> kCache, ArrayView<float> vCache,
        ArrayView<int> rowMap, ArrayView<int> rowPos, ArrayView<float> scores, Dims d)
    {
        var sh = SharedMemory.Allocate<float>(GroupReduce.MaxGroup);
        int rh = Grid.IdxX, r = rh / d.H, h = rh % d.H;
        int C = d.H * d.Hd, p = rowPos[r];
        long qo = (long)r * C + h * d.Hd;
        long so = (long)rh * d.Tmax;
        float max = float.NegativeInfinity;
        for (int s = Group.IdxX; s <= p; s += Group.DimX)
        {
            long ko = CacheRow(rowMap, r, s) * C + h * d.Hd;
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
                if (w != 0f) acc += w * vCache[CacheRow(rowMap, r, s) * C + h * d.Hd + i];
            }
            outp[qo + i] = acc;
        }
    }

    /// <summary>Grid: R2·C threads. dst (R2,C) = src[rows, :].</summary>
    public static void GatherKernel(Index1D i, ArrayView<float> dst, ArrayView<float> src, ArrayView<int> rows, int c)
        => dst[i] = src[(long)rows[i / c] * c + i % c];


    // ------------------------------------------------------------------------------------------
    // Version 2: flash decoding over a 16-bit cache (BF16 or F16; half the bytes of version 1's F32
    // cache, so twice the slots in the same memory). The keys of one (row, head) are split into chunks
    // of 64 over separate groups of one warp; a warp's lanes lie along the head dimension (lane l holds
    // dimensions [l·hd/W, (l+1)·hd/W)), so each key's K and V rows are read coalesced, and the score is a
    // warp reduction to lane 0 in a fixed order, broadcast back. Each chunk leaves (max, Σexp, Σexp·v);
    // a second pass combines the chunks of a (row, head) in chunk order. Online softmax inside a chunk.
    // Napkin math: bandwidth-bound like version 1 (K and V up to the row's position, now 2 B per value):
    // 64 rows × 32 heads at position 256 with chunks of 64: 8,192 warps in flight instead of 2,048 groups.
    // ------------------------------------------------------------------------------------------

    public const int DecodeChunk = 64;

    public struct DecodeDims { public int Tmax, H, Hd, Chunks, Bf16; public float Scale; }

    /// <summary>Grid: R·C threads. The 16-bit caches (P,C) ← k, v (R,C) narrowed.</summary>
    public static void Write16Kernel(Index1D i, ArrayView<ushort> kCache, ArrayView<ushort> vCache, ArrayView<float> k, ArrayView<float> v,
        ArrayView<int> rowMap, ArrayView<int> rowPos, int c, int bf16)
    {
        int r = i / c, ch = i % c;
        long dst = CacheRow(rowMap, r, rowPos[r]) * c + ch;
        kCache[dst] = Checkpoints.HalfPrecision.Narrow(k[i], bf16 != 0);
        vCache[dst] = Checkpoints.HalfPrecision.Narrow(v[i], bf16 != 0);
    }

    /// <summary>Grid: (Chunks, R·H) groups of one warp. partial ((R·H)·Chunks, hd + 2): max, Σexp, then Σexp·v per
    /// dimension, for keys [64c, 64c + 63] ∩ [0, rowPos].</summary>
    public static void DecodePartialKernel(ArrayView<float> partial, ArrayView<float> q, ArrayView<ushort> kCache, ArrayView<ushort> vCache,
        ArrayView<int> rowMap, ArrayView<int> rowPos, DecodeDims d)
    {
        int lane = Warp.LaneIdx, w = Warp.WarpSize;
        int chunk = Grid.IdxX, rh = Grid.IdxY, r = rh / d.H, h = rh % d.H;
        int hd = d.Hd, C = d.H * hd, p = rowPos[r];
        bool bf = d.Bf16 != 0;
        int dims = (hd + w - 1) / w, d0 = lane * dims, mine = Math.Min(dims, hd - d0);
        var qa = Acc32.AddScaled(default, 1f, q, r * C + h * hd + d0, mine);
        long ch = h * hd + d0;
        float m = float.NegativeInfinity, l = 0f;
        Acc32 o = default;
        int s0 = chunk * DecodeChunk, s1 = Math.Min(p, s0 + DecodeChunk - 1);
        for (int s = s0; s <= s1; s++)
        {
            long ko = CacheRow(rowMap, r, s) * C + ch;
            float part = Acc32.Dot16(qa, kCache, ko, mine, bf);
            for (int off = w / 2; off > 0; off >>= 1) part += Warp.ShuffleDown(part, off);
            float sc = Warp.Broadcast(part, 0) * d.Scale;
            float mNew = Math.Max(m, sc);
            float alpha = MathF.Exp(m - mNew), e = MathF.Exp(sc - mNew);
            l = l * alpha + e;
            o = Acc32.AddScaled16(Acc32.Scale(o, alpha), e, vCache, ko, mine, bf);
            m = mNew;
        }
        long po = ((long)rh * d.Chunks + chunk) * (hd + 2);
        if (lane == 0) { partial[po] = m; partial[po + 1] = l; }
        Acc32.Store(o, partial, po + 2 + d0, mine, 1f, accumulate: false);
    }

    /// <summary>Grid: R·H groups of one warp. out (R,C): the chunks of each (row, head) combined in chunk order.</summary>
    public static void DecodeCombineKernel(ArrayView<float> outp, ArrayView<float> partial, ArrayView<int> rowPos, DecodeDims d)
    {
        int lane = Warp.LaneIdx, w = Warp.WarpSize, rh = Grid.IdxX, r = rh / d.H, h = rh % d.H, hd = d.Hd;
        int used = rowPos[r] / DecodeChunk + 1;                 // chunks that hold keys of this row
        long pb = (long)rh * d.Chunks * (hd + 2);
        float mx = float.NegativeInfinity;
        for (int c = 0; c < used; c++) mx = Math.Max(mx, partial[pb + c * (hd + 2)]);
        float total = 0f;
        for (int c = 0; c < used; c++) total += partial[pb + c * (hd + 2) + 1] * MathF.Exp(partial[pb + c * (hd + 2)] - mx);
        float inv = 1f / total;
        for (int i = lane; i < hd; i += w)
        {
            float acc = 0f;
            for (int c = 0; c < used; c++) acc += partial[pb + c * (hd + 2) + 2 + i] * MathF.Exp(partial[pb + c * (hd + 2)] - mx);
            outp[(long)r * d.H * hd + h * hd + i] = acc * inv;
        }
    }

    public sealed class Launcher(Accelerator acc, int group)
    {
        readonly Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<int>, int> _write =
            acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<int>, int>(WriteKernel);
        readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<int>, ArrayView<float>, Dims> _attn =
            acc.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<int>, ArrayView<float>, Dims>(AttentionKernel);
        readonly Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<int>, int> _gather =
            acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<int>, int>(GatherKernel);
        MemoryBuffer1D<float, Stride1D.Dense>? _scores;

        public void Write(ArrayView<float> kCache, ArrayView<float> vCache, ArrayView<float> k, ArrayView<float> v, ArrayView<int> rowMap, ArrayView<int> rowPos,
            int r, int c)
            => _write(r * c, kCache, vCache, k, v, rowMap, rowPos, c);

        /// <param name="tmax">bound on rowPos + 1 (the scores scratch's row length)</param>
        public void Attention(ArrayView<float> outp, ArrayView<float> q, ArrayView<float> kCache, ArrayView<float> vCache, ArrayView<int> rowMap, ArrayView<int> rowPos,
            int r, int tmax, int h, int hd)
        {
            long need = (long)r * h * tmax;
            if (_scores == null || _scores.Length < need)
            {
                acc.Synchronize();                             // a launch in flight may still read the old scratch
                _scores?.Dispose();
                _scores = acc.Allocate1D<float>(need);
            }
            _attn(new KernelConfig(r * h, group), outp, q, kCache, vCache, rowMap, rowPos, _scores.View,
                new Dims { Tmax = tmax, H = h, Hd = hd, Scale = 1f / MathF.Sqrt(hd) });
        }

        public void Gather(ArrayView<float> dst, ArrayView<float> src, ArrayView<int> rows, int r2, int c) => _gather(r2 * c, dst, src, rows, c);

        // version 2
        readonly Action<Index1D, ArrayView<ushort>, ArrayView<ushort>, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<int>, int, int> _write16 =
            acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<ushort>, ArrayView<ushort>, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<int>, int, int>(Write16Kernel);
        readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<int>, ArrayView<int>, DecodeDims> _partial =
            acc.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<int>, ArrayView<int>, DecodeDims>(DecodePartialKernel);
        readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<int>, DecodeDims> _combine =
            acc.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<int>, DecodeDims>(DecodeCombineKernel);
        MemoryBuffer1D<float, Stride1D.Dense>? _partials;

        public void Write16(ArrayView<ushort> kCache, ArrayView<ushort> vCache, ArrayView<float> k, ArrayView<float> v, ArrayView<int> rowMap, ArrayView<int> rowPos,
            int r, int c, bool bf16)
            => _write16(r * c, kCache, vCache, k, v, rowMap, rowPos, c, bf16 ? 1 : 0);

        /// <summary>Flash decoding over 16-bit caches; the chunk partials live in a scratch grown to the largest
        /// R·H·⌈Tmax/64⌉·(hd + 2) seen.</summary>
        public void Attention16(ArrayView<float> outp, ArrayView<float> q, ArrayView<ushort> kCache, ArrayView<ushort> vCache, ArrayView<int> rowMap, ArrayView<int> rowPos,
            int r, int tmax, int h, int hd, bool bf16)
        {
            int w = acc.WarpSize;
            if (hd > 32 * w) throw new ArgumentException($"flash decoding: head dimension {hd} is above {32 * w} (32 per lane)");
            int chunks = (tmax + DecodeChunk - 1) / DecodeChunk;
            long need = (long)r * h * chunks * (hd + 2);
            if (_partials == null || _partials.Length < need)
            {
                acc.Synchronize();
                _partials?.Dispose();
                _partials = acc.Allocate1D<float>(need);
            }
            var d = new DecodeDims { Tmax = tmax, H = h, Hd = hd, Chunks = chunks, Bf16 = bf16 ? 1 : 0, Scale = 1f / MathF.Sqrt(hd) };
            _partial(new KernelConfig(new Index2D(chunks, r * h), new Index2D(w, 1)), _partials.View, q, kCache, vCache, rowMap, rowPos, d);
            _combine(new KernelConfig(r * h, w), outp, _partials.View, rowPos, d);
        }
    }
}
