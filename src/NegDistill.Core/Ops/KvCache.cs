using System.Numerics;
using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using NegDistill.Cpu;
namespace NegDistill.Ops;

/// <summary>
/// The KV cache of batched decoding. A forward is a set of R rows; row r is one token of slot
/// rowSlot[r] at absolute position rowPos[r]. The cache holds, per layer, K and V as (S, Tmax, C)
/// with C = H·hd: slot s, position t, channel c at ((s·Tmax + t)·C + c), in F32 or in 16 bits (BF16/F16:
/// half the bytes, so twice the slots; values narrowed once when written, widened when read).
///
///   CacheWrite       kCache[slot_r, pos_r, :] = k_r,   vCache[slot_r, pos_r, :] = v_r
///   CachedAttention  for row r and head h, with p = pos_r and s = slot_r:
///                      a_j = q_rh · K[s, j, h] / √hd          j = 0..p
///                      P_j = exp(a_j − max a) / Σ_j' exp(a_j' − max a)
///                      out_rh = Σ_j P_j V[s, j, h]
///   GatherRows       dst[i, :] = src[rows[i], :]
///
/// Row r sees its slot's positions 0..p inclusive, so causality holds by construction: the prefill
/// of many tokens of one slot (rows at p, p+1, ..., written to the cache before attention runs) and
/// a single-token decode are the same op. Cache rows past p are never read, so a freed slot needs
/// no clearing. One (row, head) follows <see cref="Attention.ForwardRows{T}"/> over the same keys (max,
/// Σexp in key order, P = e·(1/Σ), out += P·v in key order, each output element a sequential sum
/// over keys), except that the q·k dot products are SIMD (lane partial sums), so the two agree to
/// fp32 rounding, not bit for bit. The result of a row does not depend on the other rows of the call.
/// Float runs <see cref="AttendOneF{TV, TS}"/> with the vectors written out (a tenth of the time of the
/// span primitives at batch 16); double, the fp64 oracle, the generic form.
/// CPU twin of kernels/NegDistill.Kernels/KvCacheKernels.cs.
/// </summary>
public static class KvCacheOps
{
    /// <param name="kCache">(S,Tmax,C)</param><param name="vCache">(S,Tmax,C)</param>
    /// <param name="k">(R,C)</param><param name="v">(R,C)</param>
    /// <param name="rowSlot">(R)</param><param name="rowPos">(R)</param>
    public static void Write<T>(Span<T> kCache, Span<T> vCache, ReadOnlySpan<T> k, ReadOnlySpan<T> v,
        ReadOnlySpan<int> rowSlot, ReadOnlySpan<int> rowPos, int R, int tmax, int C)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int slots = kCache.Length / (tmax * C);
        for (int r = 0; r < R; r++)
        {
            CheckRow(rowSlot[r], rowPos[r], slots, tmax, r);
            int o = (rowSlot[r] * tmax + rowPos[r]) * C;
            k.Slice(r * C, C).CopyTo(kCache.Slice(o, C));
            v.Slice(r * C, C).CopyTo(vCache.Slice(o, C));
        }
    }

    internal static void CheckRow(int slot, int pos, int slots, int tmax, int r)
    {
        if ((uint)slot >= (uint)slots) throw new ArgumentOutOfRangeException(nameof(slot), $"row {r}: slot {slot} outside the cache's {slots} slots");
        if ((uint)pos >= (uint)tmax) throw new ArgumentOutOfRangeException(nameof(pos), $"row {r}: position {pos} outside the cache's {tmax} positions");
    }

    /// <summary>One (row, head) of cached attention.</summary>
    /// <param name="outRow">(hd) out: the head's slice of the output row</param>
    /// <param name="qRow">(hd) the head's slice of q</param>
    /// <param name="kSlot">the slot's K cache (Tmax,C), at the head's channel offset</param>
    /// <param name="vSlot">likewise V</param>
    /// <param name="scores">(≥ p+1) scratch</param>
    public static void AttendOne<T>(Span<T> outRow, ReadOnlySpan<T> qRow, ReadOnlySpan<T> kSlot, ReadOnlySpan<T> vSlot,
        Span<T> scores, int p, int C, int hd)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        if (typeof(T) == typeof(float))
        {
            Span<float> of = MemoryMarshal.Cast<T, float>(outRow), sf = MemoryMarshal.Cast<T, float>(scores);
            ReadOnlySpan<float> qf = MemoryMarshal.Cast<T, float>(qRow), kf = MemoryMarshal.Cast<T, float>(kSlot), vf = MemoryMarshal.Cast<T, float>(vSlot);
            if (Vector512.IsHardwareAccelerated && hd >= 16) AttendOneF<Vector512<float>, V512>(of, qf, kf, vf, sf, p, C, hd);
            else if (Vector256.IsHardwareAccelerated && hd >= 8) AttendOneF<Vector256<float>, V256>(of, qf, kf, vf, sf, p, C, hd);
            else AttendOneF<Vector128<float>, V128>(of, qf, kf, vf, sf, p, C, hd);
            return;
        }
        T scale = T.One / T.Sqrt(T.CreateTruncating(hd));
        T max = T.NegativeInfinity;
        for (int s = 0; s <= p; s++)
        {
            T dot = TensorPrimitives.Dot(qRow.Slice(0, hd), kSlot.Slice(s * C, hd)) * scale;
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
            TensorPrimitives.MultiplyAdd(vSlot.Slice(s * C, hd), w, o, o);          // o += w·v_s, element by element
        }
    }

    /// <summary>
    /// <see cref="AttendOne{T}"/> for float with the vectors written out (the library's span primitives cost a call
    /// and a dispatch per key): the same steps, the q·k products in W-lane partial sums (FMA where it is an
    /// instruction), exp and the softmax scalar as in the generic form, out += P·v element by element (a multiply
    /// and an add, as there).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static unsafe void AttendOneF<TV, TS>(Span<float> outRow, ReadOnlySpan<float> qRow, ReadOnlySpan<float> kSlot, ReadOnlySpan<float> vSlot,
        Span<float> scores, int p, int C, int hd) where TV : unmanaged where TS : IVecF<TV>
    {
        int w = TS.Count, full = hd / w * w;
        bool fma = System.Runtime.Intrinsics.X86.Fma.IsSupported || System.Runtime.Intrinsics.Arm.AdvSimd.IsSupported;
        float scale = 1f / MathF.Sqrt(hd);
        fixed (float* o = outRow) fixed (float* q = qRow) fixed (float* k = kSlot) fixed (float* v = vSlot) fixed (float* sc = scores)
        {
            float max = float.NegativeInfinity;
            for (int s = 0; s <= p; s++)
            {
                float* ks = k + (nint)s * C;
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
                float* vs = v + (nint)s * C;
                var vw = TS.Splat(wgt);
                for (int i = 0; i < full; i += w) TS.Store(o + i, TS.Add(TS.Mul(TS.Load(vs + i), vw), TS.Load(o + i)));
                for (int i = full; i < hd; i++) o[i] = vs[i] * wgt + o[i];
            }
        }
    }

    /// <summary>Rows [r0, r1) of cached attention (every head).</summary>
    /// <param name="outp">(R,C)</param><param name="q">(R,C)</param>
    /// <param name="kCache">(S,Tmax,C)</param><param name="vCache">(S,Tmax,C)</param>
    public static void Attend<T>(Span<T> outp, ReadOnlySpan<T> q, ReadOnlySpan<T> kCache, ReadOnlySpan<T> vCache,
        ReadOnlySpan<int> rowSlot, ReadOnlySpan<int> rowPos, int r0, int r1, int tmax, int H, int hd)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int C = H * hd, slots = kCache.Length / (tmax * C);
        var scores = new T[tmax];
        for (int r = r0; r < r1; r++)
        {
            int slot = rowSlot[r], p = rowPos[r];
            CheckRow(slot, p, slots, tmax, r);
            long so = (long)slot * tmax * C;
            for (int h = 0; h < H; h++)
                AttendOne(outp.Slice(r * C + h * hd, hd), q.Slice(r * C + h * hd, hd),
                    kCache.Slice((int)so + h * hd, tmax * C - h * hd), vCache.Slice((int)so + h * hd, tmax * C - h * hd), scores, p, C, hd);
        }
    }

    /// <summary><see cref="Write{T}"/> into 16-bit caches (BF16, or F16): each value narrowed once, as the
    /// kernels' 16-bit cache write does.</summary>
    public static void Write16<T>(Span<ushort> kCache, Span<ushort> vCache, ReadOnlySpan<T> k, ReadOnlySpan<T> v,
        ReadOnlySpan<int> rowSlot, ReadOnlySpan<int> rowPos, int R, int tmax, int C, bool bf16)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int slots = kCache.Length / (tmax * C);
        for (int r = 0; r < R; r++)
        {
            CheckRow(rowSlot[r], rowPos[r], slots, tmax, r);
            int o = (rowSlot[r] * tmax + rowPos[r]) * C;
            for (int c = 0; c < C; c++)
            {
                kCache[o + c] = Checkpoints.HalfPrecision.Narrow(float.CreateTruncating(k[r * C + c]), bf16);
                vCache[o + c] = Checkpoints.HalfPrecision.Narrow(float.CreateTruncating(v[r * C + c]), bf16);
            }
        }
    }

    /// <summary><see cref="Attend{T}"/> over 16-bit caches: per (row, head) the slot's keys and values up to the
    /// row's position are widened into a (p+1, hd) scratch, then <see cref="AttendOne{T}"/> runs on it.</summary>
    public static void Attend16<T>(Span<T> outp, ReadOnlySpan<T> q, ReadOnlySpan<ushort> kCache, ReadOnlySpan<ushort> vCache,
        ReadOnlySpan<int> rowSlot, ReadOnlySpan<int> rowPos, int r0, int r1, int tmax, int H, int hd, bool bf16)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int C = H * hd, slots = kCache.Length / (tmax * C);
        var pool = System.Buffers.ArrayPool<T>.Shared;
        T[] scores = pool.Rent(tmax), kw = pool.Rent(tmax * hd), vw = pool.Rent(tmax * hd);
        try
        {
            for (int r = r0; r < r1; r++)
            {
                int slot = rowSlot[r], p = rowPos[r];
                CheckRow(slot, p, slots, tmax, r);
                long so = (long)slot * tmax * C;
                for (int h = 0; h < H; h++)
                {
                    for (int j = 0; j <= p; j++)
                        for (int i = 0; i < hd; i++)
                        {
                            long src = so + (long)j * C + h * hd + i;
                            kw[j * hd + i] = T.CreateTruncating(Checkpoints.HalfPrecision.Widen(kCache[(int)src], bf16));
                            vw[j * hd + i] = T.CreateTruncating(Checkpoints.HalfPrecision.Widen(vCache[(int)src], bf16));
                        }
                    AttendOne(outp.Slice(r * C + h * hd, hd), q.Slice(r * C + h * hd, hd), kw, vw, scores, p, hd, hd);
                }
            }
        }
        finally { pool.Return(scores); pool.Return(kw); pool.Return(vw); }
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
