using System.Numerics;
using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using NegDistill.Cpu;
namespace NegDistill.Ops;

/// <summary>
/// The KV cache of batched decoding. A forward is a set of R rows; row r is one token at absolute
/// position rowPos[r] of some sequence. The cache holds, per layer, K and V as a pool of P cache rows
/// of C = H·hd channels, (P, C), in F32 or in 16 bits (BF16/F16: half the bytes, so twice the slots;
/// values narrowed once when written, widened when read). Where a row's sequence lives is its map
/// rowMap[r] = (pb, L, ob): position j of the sequence is cache row
///
///   at(j) = pb + j           for j &lt; L   (a prefix: the shared prompt of a question's N candidates)
///   at(j) = ob + (j − L)     for j ≥ L   (the sequence's own rows)
///
/// A plain slot s of Tmax positions is (0, 0, s·Tmax); a candidate whose first L prompt positions sit
/// in a prompt slot at cache row b is (b, L, own); the prompt's own prefill rows are (b, Tp, 0) with
/// their positions below Tp. The ops:
///
///   CacheWrite       K[at(pos_r)] = k_r,   V[at(pos_r)] = v_r
///   CachedAttention  for row r and head h, with p = pos_r:
///                      a_j = q_rh · K[at(j), h] / √hd          j = 0..p
///                      P_j = exp(a_j − max a) / Σ_j' exp(a_j' − max a)
///                      out_rh = Σ_j P_j V[at(j), h]
///   GatherRows       dst[i, :] = src[rows[i], :]
///
/// Row r sees its sequence's positions 0..p inclusive, so causality holds by construction: the prefill
/// of many tokens of one slot (rows at p, p+1, ..., written to the cache before attention runs) and
/// a single-token decode are the same op, and so are rows that read a shared prefix written in the same
/// call. Cache rows past p are never read, so a freed slot needs no clearing. Which cache row holds a
/// key changes nothing in the arithmetic: a sequence split over a prefix and its own rows gives bit for
/// bit what it gives in one slot. One (row, head) follows <see cref="Attention.ForwardRows{T}"/> over the
/// same keys (max, Σexp in key order, P = e·(1/Σ), out += P·v in key order, each output element a
/// sequential sum over keys), except that the q·k dot products are SIMD (lane partial sums), so the two
/// agree to fp32 rounding, not bit for bit. The result of a row does not depend on the other rows of the
/// call. Float runs <see cref="AttendOneF{TV, TS}"/> with the vectors written out (a tenth of the time of
/// the span primitives at batch 16); double, the fp64 oracle, the generic form.
/// CPU twin of kernels/NegDistill.Kernels/KvCacheKernels.cs.
/// </summary>
public static class KvCacheOps
{
    /// <summary>The cache row of position <paramref name="j"/> under the map (pb, L, ob).</summary>
    public static long At(int pb, int len, int ob, int j) => j < len ? (long)pb + j : (long)ob + (j - len);

    /// <summary>Checks that every cache row row r reads or writes lies in the pool of <paramref name="pool"/> rows.</summary>
    internal static void CheckRow(ReadOnlySpan<int> rowMap, int pos, long pool, int r)
    {
        int pb = rowMap[3 * r], len = rowMap[3 * r + 1], ob = rowMap[3 * r + 2];
        if (pos < 0) throw new ArgumentOutOfRangeException(nameof(pos), $"row {r}: position {pos} is negative");
        if (pb < 0 || len < 0 || ob < 0) throw new ArgumentOutOfRangeException(nameof(rowMap), $"row {r}: map ({pb}, {len}, {ob}) has a negative entry");
        long last = At(pb, len, ob, pos), prefixEnd = len > 0 ? pb + (long)Math.Min(len, pos + 1) - 1 : -1;
        if (last >= pool || prefixEnd >= pool)
            throw new ArgumentOutOfRangeException(nameof(rowMap), $"row {r}: position {pos} under map ({pb}, {len}, {ob}) reaches cache row {Math.Max(last, prefixEnd)}, outside the cache's {pool}");
    }

    /// <param name="kCache">(P,C)</param><param name="vCache">(P,C)</param>
    /// <param name="k">(R,C)</param><param name="v">(R,C)</param>
    /// <param name="rowMap">(R,3) (pb, L, ob)</param><param name="rowPos">(R)</param>
    public static void Write<T>(Span<T> kCache, Span<T> vCache, ReadOnlySpan<T> k, ReadOnlySpan<T> v,
        ReadOnlySpan<int> rowMap, ReadOnlySpan<int> rowPos, int R, int C)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        long pool = kCache.Length / C;
        for (int r = 0; r < R; r++)
        {
            CheckRow(rowMap, rowPos[r], pool, r);
            int o = (int)(At(rowMap[3 * r], rowMap[3 * r + 1], rowMap[3 * r + 2], rowPos[r]) * C);
            k.Slice(r * C, C).CopyTo(kCache.Slice(o, C));
            v.Slice(r * C, C).CopyTo(vCache.Slice(o, C));
        }
    }

    /// <summary>One (row, head) of cached attention over keys 0..p: key s &lt; nA at row s of
    /// <paramref name="kA"/>/<paramref name="vA"/>, key s ≥ nA at row s − nA of <paramref name="kB"/>/<paramref name="vB"/>
    /// (rows C apart).</summary>
    /// <param name="outRow">(hd) out: the head's slice of the output row</param>
    /// <param name="qRow">(hd) the head's slice of q</param>
    /// <param name="kA">the prefix's first key row, at the head's channel offset</param>
    /// <param name="vA">likewise V</param>
    /// <param name="nA">keys in the prefix</param>
    /// <param name="kB">the sequence's own first key row (position nA), at the head's channel offset</param>
    /// <param name="vB">likewise V</param>
    /// <param name="scores">(≥ p+1) scratch</param>
    public static void AttendOne<T>(Span<T> outRow, ReadOnlySpan<T> qRow, ReadOnlySpan<T> kA, ReadOnlySpan<T> vA, int nA,
        ReadOnlySpan<T> kB, ReadOnlySpan<T> vB, Span<T> scores, int p, int C, int hd)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        if (typeof(T) == typeof(float))
        {
            Span<float> of = MemoryMarshal.Cast<T, float>(outRow), sf = MemoryMarshal.Cast<T, float>(scores);
            ReadOnlySpan<float> qf = MemoryMarshal.Cast<T, float>(qRow), kaf = MemoryMarshal.Cast<T, float>(kA), vaf = MemoryMarshal.Cast<T, float>(vA),
                kbf = MemoryMarshal.Cast<T, float>(kB), vbf = MemoryMarshal.Cast<T, float>(vB);
            if (Vector512.IsHardwareAccelerated && hd >= 16) AttendOneF<Vector512<float>, V512>(of, qf, kaf, vaf, nA, kbf, vbf, sf, p, C, hd);
            else if (Vector256.IsHardwareAccelerated && hd >= 8) AttendOneF<Vector256<float>, V256>(of, qf, kaf, vaf, nA, kbf, vbf, sf, p, C, hd);
            else AttendOneF<Vector128<float>, V128>(of, qf, kaf, vaf, nA, kbf, vbf, sf, p, C, hd);
            return;
        }
        T scale = T.One / T.Sqrt(T.CreateTruncating(hd));
        T max = T.NegativeInfinity;
        for (int s = 0; s <= p; s++)
        {
            var key = s < nA ? kA.Slice(s * C, hd) : kB.Slice((s - nA) * C, hd);
            T dot = TensorPrimitives.Dot(qRow.Slice(0, hd), key) * scale;
            scores[s] = dot;
            if (dot > max) max = dot;
        }
        T sum = T.Zero;
        for (int s = 0; s <= p; s++)
        {
            T e = T.Exp(scores[s] - max);
            scores[s] = e;
            sum += e;
        }
        T inv = T.One / sum;
        var o = outRow.Slice(0, hd);
        o.Clear();
        for (int s = 0; s <= p; s++)
        {
            T w = scores[s] * inv;
            if (w == T.Zero) continue;
            var val = s < nA ? vA.Slice(s * C, hd) : vB.Slice((s - nA) * C, hd);
            TensorPrimitives.MultiplyAdd(val, w, o, o);                                // o += w·v_s, element by element
        }
    }

    /// <summary>
    /// <see cref="AttendOne{T}"/> for float with the vectors written out (the library's span primitives cost a call
    /// and a dispatch per key): the same steps, the q·k products in W-lane partial sums (FMA where it is an
    /// instruction), exp and the softmax scalar as in the generic form, out += P·v element by element (a multiply
    /// and an add, as there).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static unsafe void AttendOneF<TV, TS>(Span<float> outRow, ReadOnlySpan<float> qRow, ReadOnlySpan<float> kA, ReadOnlySpan<float> vA, int nA,
        ReadOnlySpan<float> kB, ReadOnlySpan<float> vB, Span<float> scores, int p, int C, int hd) where TV : unmanaged where TS : IVecF<TV>
    {
        int w = TS.Count, full = hd / w * w;
        bool fma = System.Runtime.Intrinsics.X86.Fma.IsSupported || System.Runtime.Intrinsics.Arm.AdvSimd.IsSupported;
        float scale = 1f / MathF.Sqrt(hd);
        fixed (float* o = outRow) fixed (float* q = qRow) fixed (float* ka = kA) fixed (float* va = vA) fixed (float* kb = kB) fixed (float* vb = vB) fixed (float* sc = scores)
        {
            float max = float.NegativeInfinity;
            for (int s = 0; s <= p; s++)
            {
                float* ks = s < nA ? ka + (nint)s * C : kb + (nint)(s - nA) * C;
                var acc = TS.Splat(0f);
                for (int i = 0; i < full; i += w) acc = TS.Fma(TS.Load(q + i), TS.Load(ks + i), acc);
                float dot = TS.Sum(acc);
                for (int i = full; i < hd; i++) dot = fma ? MathF.FusedMultiplyAdd(q[i], ks[i], dot) : q[i] * ks[i] + dot;
                dot *= scale;
                sc[s] = dot;
                if (dot > max) max = dot;
            }
            float sum = 0f;
            for (int s = 0; s <= p; s++)
            {
                float e = MathF.Exp(sc[s] - max);
                sc[s] = e;
                sum += e;
            }
            float inv = 1f / sum;
            for (int i = 0; i < hd; i++) o[i] = 0f;
            for (int s = 0; s <= p; s++)
            {
                float wgt = sc[s] * inv;
                if (wgt == 0f) continue;
                float* vs = s < nA ? va + (nint)s * C : vb + (nint)(s - nA) * C;
                var vw = TS.Splat(wgt);
                for (int i = 0; i < full; i += w) TS.Store(o + i, TS.Add(TS.Mul(TS.Load(vs + i), vw), TS.Load(o + i)));
                for (int i = full; i < hd; i++) o[i] = vs[i] * wgt + o[i];
            }
        }
    }

    /// <summary>Rows [r0, r1) of cached attention (every head).</summary>
    /// <param name="outp">(R,C)</param><param name="q">(R,C)</param>
    /// <param name="kCache">(P,C)</param><param name="vCache">(P,C)</param>
    /// <param name="rowMap">(R,3)</param><param name="rowPos">(R)</param>
    public static void Attend<T>(Span<T> outp, ReadOnlySpan<T> q, ReadOnlySpan<T> kCache, ReadOnlySpan<T> vCache,
        ReadOnlySpan<int> rowMap, ReadOnlySpan<int> rowPos, int r0, int r1, int H, int hd)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int C = H * hd;
        long pool = kCache.Length / C;
        var pool2 = System.Buffers.ArrayPool<T>.Shared;
        for (int r = r0; r < r1; r++)
        {
            int p = rowPos[r];
            CheckRow(rowMap, p, pool, r);
            int pb = rowMap[3 * r], len = Math.Min(rowMap[3 * r + 1], p + 1), ob = rowMap[3 * r + 2];
            var scores = pool2.Rent(p + 1);
            for (int h = 0; h < H; h++)
            {
                // a segment the row does not read starts at row 0 (its base need not lie in the pool)
                int a = (len > 0 ? pb * C : 0) + h * hd, b = (p >= len ? ob * C : 0) + h * hd;
                AttendOne(outp.Slice(r * C + h * hd, hd), q.Slice(r * C + h * hd, hd),
                    kCache[a..], vCache[a..], len, kCache[b..], vCache[b..], scores, p, C, hd);
            }
            pool2.Return(scores);
        }
    }

    /// <summary><see cref="Write{T}"/> into 16-bit caches (BF16, or F16): each value narrowed once, as the
    /// kernels' 16-bit cache write does.</summary>
    public static void Write16<T>(Span<ushort> kCache, Span<ushort> vCache, ReadOnlySpan<T> k, ReadOnlySpan<T> v,
        ReadOnlySpan<int> rowMap, ReadOnlySpan<int> rowPos, int R, int C, bool bf16)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        long pool = kCache.Length / C;
        for (int r = 0; r < R; r++)
        {
            CheckRow(rowMap, rowPos[r], pool, r);
            int o = (int)(At(rowMap[3 * r], rowMap[3 * r + 1], rowMap[3 * r + 2], rowPos[r]) * C);
            for (int c = 0; c < C; c++)
            {
                kCache[o + c] = Checkpoints.HalfPrecision.Narrow(float.CreateTruncating(k[r * C + c]), bf16);
                vCache[o + c] = Checkpoints.HalfPrecision.Narrow(float.CreateTruncating(v[r * C + c]), bf16);
            }
        }
    }

    /// <summary><see cref="Attend{T}"/> over 16-bit caches: per (row, head) the sequence's keys and values up to the
    /// row's position are widened into a (p+1, hd) scratch, then <see cref="AttendOne{T}"/> runs on it.</summary>
    public static void Attend16<T>(Span<T> outp, ReadOnlySpan<T> q, ReadOnlySpan<ushort> kCache, ReadOnlySpan<ushort> vCache,
        ReadOnlySpan<int> rowMap, ReadOnlySpan<int> rowPos, int r0, int r1, int H, int hd, bool bf16)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int C = H * hd;
        long pool = kCache.Length / C;
        var pool2 = System.Buffers.ArrayPool<T>.Shared;
        for (int r = r0; r < r1; r++)
        {
            int p = rowPos[r];
            CheckRow(rowMap, p, pool, r);
            int pb = rowMap[3 * r], len = rowMap[3 * r + 1], ob = rowMap[3 * r + 2];
            T[] scores = pool2.Rent(p + 1), kw = pool2.Rent((p + 1) * hd), vw = pool2.Rent((p + 1) * hd);
            for (int h = 0; h < H; h++)
            {
                for (int j = 0; j <= p; j++)
                {
                    long src = At(pb, len, ob, j) * C + h * hd;
                    for (int i = 0; i < hd; i++)
                    {
                        kw[j * hd + i] = T.CreateTruncating(Checkpoints.HalfPrecision.Widen(kCache[(int)src + i], bf16));
                        vw[j * hd + i] = T.CreateTruncating(Checkpoints.HalfPrecision.Widen(vCache[(int)src + i], bf16));
                    }
                }
                AttendOne(outp.Slice(r * C + h * hd, hd), q.Slice(r * C + h * hd, hd), kw, vw, p + 1, kw, vw, scores, p, hd, hd);
            }
            pool2.Return(scores); pool2.Return(kw); pool2.Return(vw);
        }
    }

    /// <param name="dst">(R2,C)</param><param name="src">(R,C)</param><param name="rows">(R2) indices into src</param>
    public static void Gather<T>(Span<T> dst, ReadOnlySpan<T> src, ReadOnlySpan<int> rows, int r2, int C)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int n = src.Length / C;
        for (int i = 0; i < r2; i++)
        {
            if ((uint)rows[i] >= (uint)n) throw new ArgumentOutOfRangeException(nameof(rows), $"gather row {i}: source row {rows[i]} outside {n} rows");
            src.Slice(rows[i] * C, C).CopyTo(dst.Slice(i * C, C));
        }
    }
}
