using System.Buffers;
using System.Numerics;
using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using NegDistill.Cpu;
using NegDistill.Ops;

namespace NegDistill.Runtime;

/// <summary>Storage of the CPU twin: a window (offset, length) onto a managed array, so that
/// views share storage with their parent. "F32" tensors are held in the backend's T (float for the
/// fast path, double for the fp64 oracle).</summary>
public sealed class CpuTensor<T> : Tensor where T : unmanaged, IFloatingPointIeee754<T>
{
    internal CpuTensor(string name, DType dtype, int[] shape, Action<long>? onFree = null) : base(name, dtype, shape)
    {
        _onFree = onFree;
        if (Length > Array.MaxLength) throw new ArgumentException($"tensor '{name}' has {Length} elements, more than one CPU array holds");
        switch (dtype)
        {
            case DType.F32: FArr = new T[Length]; break;
            case DType.I32: IArr = new int[Length]; break;
            default: HArr = new ushort[Length]; break;
        }
    }
    internal CpuTensor(CpuTensor<T> parent, long offset, int[] shape) : base(parent.Name + $"@{offset}", parent.DType, shape)
    {
        if (offset < 0 || offset + Length > parent.Length) throw new ArgumentException($"view [{offset}, {offset + Length}) is outside {parent}");
        (FArr, HArr, IArr, Offset) = (parent.FArr, parent.HArr, parent.IArr, parent.Offset + (int)offset);
    }
    internal T[]? FArr { get; }
    internal ushort[]? HArr { get; }
    internal int[]? IArr { get; }
    internal int Offset { get; }
    public ArraySegment<T> F => new(FArr ?? throw new ArgumentException($"tensor {this} is {DType}, the op needs F32"), Offset, (int)Length);
    public ArraySegment<int> I => new(IArr ?? throw new ArgumentException($"tensor {this} is {DType}, the op needs I32"), Offset, (int)Length);
    public ArraySegment<ushort> H => new(HArr ?? throw new ArgumentException($"tensor {this} is {DType}, the op needs F16/BF16"), Offset, (int)Length);
    readonly Action<long>? _onFree;
    int _freed;
    /// <summary>The storage is managed; disposing only tells the owning backend the bytes are free (once).</summary>
    public override void Dispose()
    {
        if (_onFree != null && Interlocked.Exchange(ref _freed, 1) == 0) _onFree(Bytes);
    }
}

/// <summary>The SIMD CPU twin in fp32: the fast host path.</summary>
public sealed class CpuBackend : CpuBackend<float>;

/// <summary>
/// The CPU twin behind <see cref="IBackend"/>: each op calls the generic implementation in Ops/
/// with this backend's T, split over rows with Parallel.For where rows are independent (so results
/// do not depend on the thread count), and the packed SIMD GEMM for matmuls. T = float is the fast
/// path (<see cref="CpuBackend"/>); T = double is the numerical oracle for gradient checks.
/// </summary>
public class CpuBackend<T> : IBackend where T : unmanaged, IFloatingPointIeee754<T>
{
    public string Name => typeof(T) == typeof(float) ? "cpu" : $"cpu-{typeof(T).Name.ToLowerInvariant()}";
    public DType DefaultKvCache => DType.F32;

    static CpuTensor<T> C(Tensor t) => t as CpuTensor<T> ?? throw new ArgumentException($"tensor {t} does not belong to the {typeof(T).Name} CPU backend");
    static ArraySegment<T> F(Tensor t) => C(t).F;

    /// <summary>Full-precision access for tests and the oracle.</summary>
    public T[] Read(Tensor t) => F(t).ToArray();
    public void Write(Tensor t, ReadOnlySpan<T> src) => src.CopyTo(F(t));
    static ArraySegment<int> I(Tensor t) => C(t).I;

    /// <summary>Bytes allocated so far by <see cref="Alloc"/>, freed or not (views excluded; F32 counted
    /// at 4 bytes as on a GPU even when T is double).</summary>
    public long AllocatedBytes => Interlocked.Read(ref _allocated);
    /// <summary>Bytes of tensors allocated and not yet disposed.</summary>
    public long LiveBytes => Interlocked.Read(ref _live);
    /// <summary>The most <see cref="LiveBytes"/> ever held at once: what a device of this size would need,
    /// and what the memory planner is checked against.</summary>
    public long PeakBytes => Interlocked.Read(ref _peak);
    long _allocated, _live, _peak;

    public Tensor Alloc(string name, DType dtype, params int[] shape)
    {
        var t = new CpuTensor<T>(name, dtype, shape, b => Interlocked.Add(ref _live, -b));
        Interlocked.Add(ref _allocated, t.Bytes);
        long live = Interlocked.Add(ref _live, t.Bytes), peak;
        while (live > (peak = Interlocked.Read(ref _peak)) && Interlocked.CompareExchange(ref _peak, live, peak) != peak) { }
        return t;
    }
    public Tensor View(Tensor t, long offset, params int[] shape) => new CpuTensor<T>(C(t), offset, shape);

    public void Upload(Tensor t, ReadOnlySpan<float> src)
    {
        if (src.Length > t.Length) throw new ArgumentException($"upload of {src.Length} values into {t}");
        if (t.DType == DType.F32) { var f = F(t).AsSpan(); for (int i = 0; i < src.Length; i++) f[i] = T.CreateTruncating(src[i]); return; }
        var h = C(t).H; bool bf = t.DType == DType.BF16;
        for (int i = 0; i < src.Length; i++) h[i] = Checkpoints.HalfPrecision.Narrow(src[i], bf);
    }
    public void Upload(Tensor t, ReadOnlySpan<int> src) => src.CopyTo(I(t));
    public void UploadRaw16(Tensor t, ReadOnlySpan<ushort> src) => src.CopyTo(C(t).H);
    public void Download(Tensor t, Span<float> dst)
    {
        int n = (int)Math.Min(t.Length, dst.Length);
        if (t.DType == DType.F32) { var f = F(t).AsSpan(); for (int i = 0; i < n; i++) dst[i] = float.CreateTruncating(f[i]); return; }
        var h = C(t).H; bool bf = t.DType == DType.BF16;
        for (int i = 0; i < n; i++) dst[i] = Checkpoints.HalfPrecision.Widen(h[i], bf);
    }
    public void Download(Tensor t, Span<int> dst) => I(t).AsSpan(0, (int)Math.Min(dst.Length, t.Length)).CopyTo(dst);
    public void DownloadRaw16(Tensor t, Span<ushort> dst) => C(t).H.AsSpan(0, (int)Math.Min(dst.Length, t.Length)).CopyTo(dst);
    public void Fill(Tensor t, float value)
    {
        switch (t.DType)
        {
            case DType.F32: F(t).AsSpan().Fill(T.CreateTruncating(value)); break;
            case DType.I32: I(t).AsSpan().Fill((int)value); break;
            default: C(t).H.AsSpan().Fill(Checkpoints.HalfPrecision.Narrow(value, t.DType == DType.BF16)); break;
        }
    }
    public void FillNormal(Tensor t, float std, ulong seed)
    {
        // chunks in parallel; each element is a pure function of (seed, i), so the bits do not depend on the split
        const int chunk = 1 << 16;
        long n = t.Length;
        var ct = C(t);
        Parallel.For(0, (int)((n + chunk - 1) / chunk), c =>
        {
            long i0 = (long)c * chunk, i1 = Math.Min(n, i0 + chunk);
            if (t.DType == DType.F32) { var f = ct.F.AsSpan(); for (long i = i0; i < i1; i++) f[(int)i] = T.CreateTruncating(Model.Init.NormalAt(std, seed, i)); }
            else if (t.DType is DType.F16 or DType.BF16) { var h = ct.H.AsSpan(); bool bf = t.DType == DType.BF16; for (long i = i0; i < i1; i++) h[(int)i] = Checkpoints.HalfPrecision.Narrow(Model.Init.NormalAt(std, seed, i), bf); }
            else throw new ArgumentException($"FillNormal of {t}: an I32 tensor holds no normal draws");
        });
    }
    public void Copy(Tensor dst, Tensor src)
    {
        if (dst.DType != src.DType) throw new ArgumentException($"copy {src} → {dst}: storage kinds differ");
        int n = (int)Math.Min(src.Length, dst.Length);
        switch (src.DType)
        {
            case DType.F32: F(src).AsSpan(0, n).CopyTo(F(dst)); break;
            case DType.I32: I(src).AsSpan(0, n).CopyTo(I(dst)); break;
            default: C(src).H.AsSpan(0, n).CopyTo(C(dst).H); break;
        }
    }
    public void Synchronize() { }

    public void Axpy(Tensor y, Tensor x, float a, long n)
    {
        var ys = F(y).AsSpan(0, (int)n);
        TensorPrimitives.MultiplyAdd(F(x).AsSpan(0, (int)n), T.CreateTruncating(a), ys, ys);
    }
    public void Scale(Tensor y, float a, long n) { var s = F(y).AsSpan(0, (int)n); TensorPrimitives.Multiply(s, T.CreateTruncating(a), s); }
    public double Sum(Tensor x, long n)
    {
        var f = F(x).AsSpan(); double acc = 0;
        for (long i = 0; i < n; i += 4096) acc += double.CreateTruncating(TensorPrimitives.Sum<T>(f.Slice((int)i, (int)Math.Min(4096, n - i))));
        return acc;
    }
    public double SumSquares(Tensor x, long n)
    {
        // Sum in fixed 4096-element blocks, each block in fp32 by SIMD, blocks in double: the order is
        // fixed, so the value is the same for every run.
        var f = F(x).AsSpan(); double acc = 0;
        for (long i = 0; i < n; i += 4096)
        {
            var s = f.Slice((int)i, (int)Math.Min(4096, n - i));
            acc += double.CreateTruncating(TensorPrimitives.Dot<T>(s, s));
        }
        return acc;
    }
    public bool HasNonFinite(Tensor x, long n)
    {
        var f = F(x).AsSpan(0, (int)n);
        foreach (T v in f) if (!T.IsFinite(v)) return true;
        return false;
    }

    public void MatMul(Tensor c, Tensor a, Tensor b, int m, int n, int k, bool transA, bool transB, float alpha = 1f, float beta = 0f)
    {
        a.Expect((long)m * k, "MatMul A"); b.Expect((long)n * k, "MatMul B"); c.Expect((long)m * n, "MatMul C");
        int lda = transA ? m : k, ldb = transB ? k : n;
        if (b.DType == DType.F32)
            Gemm.Compute<T>(transA, transB, m, n, k, T.CreateTruncating(alpha), F(a), lda, F(b), ldb, T.CreateTruncating(beta), F(c), n);
        else if (typeof(T) == typeof(float))
        {
            var (af, cf) = (F(a), F(c));
            Gemm.ComputeWide16(transA, transB, m, n, k, alpha, MemoryMarshal.Cast<T, float>(af.AsSpan()), lda, C(b).H, ldb, b.DType == DType.BF16, beta, MemoryMarshal.Cast<T, float>(cf.AsSpan()), n);
        }
        else
        {
            // oracle precision: widen the 16-bit weights exactly, then multiply in T
            var h = C(b).H; bool bf = b.DType == DType.BF16;
            var wide = new T[h.Count];
            for (int i = 0; i < wide.Length; i++) wide[i] = T.CreateTruncating(Checkpoints.HalfPrecision.Widen(h[i], bf));
            Gemm.Compute<T>(transA, transB, m, n, k, T.CreateTruncating(alpha), F(a), lda, wide, ldb, T.CreateTruncating(beta), F(c), n);
        }
    }

    public void EmbeddingForward(Tensor outp, Tensor tokens, Tensor wte, int n, int c) => Embedding.Forward<T>(F(outp), I(tokens), F(wte), n, c);
    public void EmbeddingBackward(Tensor dwte, Tensor tokens, Tensor dout, int n, int c) => Embedding.Backward<T>(F(dwte), I(tokens), F(dout), n, c);

    public void RmsNormForward(Tensor outp, Tensor rstd, Tensor x, Tensor w, int n, int c, float eps)
    {
        var (o, r, xs, ws) = (F(outp), F(rstd), F(x), F(w));
        Rows(n, (lo, hi) => RmsNorm.Forward<T>(o.AsSpan(lo * c, (hi - lo) * c), r.AsSpan(lo, hi - lo), xs.AsSpan(lo * c, (hi - lo) * c), ws, hi - lo, c, T.CreateTruncating(eps)));
    }
    public void RmsNormBackward(Tensor dx, Tensor? dw, Tensor dout, Tensor x, Tensor w, Tensor rstd, int n, int c)
    {
        // Fixed blocks of rows, in parallel: each adds its rows' dx and sums its own part of dw; the parts are
        // then added to dw in block order, so the bits do not depend on the thread count. A frozen weight
        // (dw null) skips the parts.
        var (gx, dy, xs, ws, rs) = (F(dx), F(dout), F(x), F(w), F(rstd));
        int rows = RmsNorm.BlockRows, blocks = (n + rows - 1) / rows;
        if (dw == null)
        {
            Blocks(blocks, bi =>
            {
                int lo = bi * rows, m = Math.Min(rows, n - lo);
                RmsNorm.BackwardBlock<T>(gx.AsSpan(lo * c, m * c), [], dy.AsSpan(lo * c, m * c), xs.AsSpan(lo * c, m * c), ws, rs.AsSpan(lo, m), m, c);
            });
            return;
        }
        var gw = F(dw);
        T[] parts = System.Buffers.ArrayPool<T>.Shared.Rent(blocks * c);   // (blocks, C); each block overwrites its row
        try
        {
            Blocks(blocks, bi =>
            {
                int lo = bi * rows, m = Math.Min(rows, n - lo);
                RmsNorm.BackwardBlock<T>(gx.AsSpan(lo * c, m * c), parts.AsSpan(bi * c, c), dy.AsSpan(lo * c, m * c), xs.AsSpan(lo * c, m * c), ws, rs.AsSpan(lo, m), m, c);
            });
            RmsNorm.AddParts<T>(gw, parts.AsSpan(0, blocks * c), blocks, c);
        }
        finally { System.Buffers.ArrayPool<T>.Shared.Return(parts); }
    }

    public void Rope(Tensor x, Tensor pos, int n, int nHeads, int headDim, float theta, bool inverse)
    {
        var (xs, ps) = (F(x), I(pos));
        int c = nHeads * headDim;
        Rows(n, (lo, hi) => Ops.Rope.Apply<T>(xs.AsSpan(lo * c, (hi - lo) * c), ps.AsSpan(lo, hi - lo), hi - lo, nHeads, headDim, theta, inverse));
    }

    public void AttentionForward(Tensor outp, Tensor lse, Tensor q, Tensor k, Tensor v, Tensor keyMask, int b, int t, int nHeads, int headDim)
    {
        var (o, l, qs, ks, vs, ms) = (F(outp), F(lse), F(q), F(k), F(v), F(keyMask));
        // one task per (batch, head) pair: its columns of out and its row of lse belong to it alone; its (T,T)
        // block of P lives in a scratch of the task's own (pooled), not in the contract
        Parallel.For(0, b * nHeads, p =>
        {
            var scratch = ArrayPool<T>.Shared.Rent(t * t);
            try { Attention.ForwardHead<T>(o, l, scratch, qs, ks, vs, ms, p / nHeads, p % nHeads, t, nHeads, headDim); }
            finally { ArrayPool<T>.Shared.Return(scratch); }
        });
    }
    public void AttentionBackward(Tensor dq, Tensor dk, Tensor dv, Tensor dout, Tensor outp, Tensor lse, Tensor q, Tensor k, Tensor v, Tensor keyMask,
        int b, int t, int nHeads, int headDim)
    {
        var (dqs, dks, dvs, dos, l, qs, ks, vs, ms) = (F(dq), F(dk), F(dv), F(dout), F(lse), F(q), F(k), F(v), F(keyMask));
        // per pair as in the forward: its columns of dq, dk, dv belong to it alone; P and dS in its own scratch
        Parallel.For(0, b * nHeads, p =>
        {
            var ps = ArrayPool<T>.Shared.Rent(t * t);
            var ds = ArrayPool<T>.Shared.Rent(t * t);
            try { Attention.BackwardHead<T>(dqs, dks, dvs, dos, l, ps, ds, qs, ks, vs, ms, p / nHeads, p % nHeads, t, nHeads, headDim); }
            finally { ArrayPool<T>.Shared.Return(ps); ArrayPool<T>.Shared.Return(ds); }
        });
    }

    public void CacheWrite(Tensor kCache, Tensor vCache, Tensor k, Tensor v, Tensor rowMap, Tensor rowPos, int r, int c)
    {
        k.Expect((long)r * c, "CacheWrite k"); v.Expect((long)r * c, "CacheWrite v"); rowMap.Expect(3L * r, "CacheWrite rowMap");
        if (kCache.DType is DType.BF16 or DType.F16)
            KvCacheOps.Write16<T>(C(kCache).H, C(vCache).H, F(k), F(v), I(rowMap), I(rowPos), r, c, kCache.DType == DType.BF16);
        else KvCacheOps.Write<T>(F(kCache), F(vCache), F(k), F(v), I(rowMap), I(rowPos), r, c);
    }
    public void CachedAttention(Tensor outp, Tensor q, Tensor kCache, Tensor vCache, Tensor rowMap, Tensor rowPos, int r, int maxContext, int nHeads, int headDim)
    {
        int c = nHeads * headDim;
        outp.Expect((long)r * c, "CachedAttention out"); q.Expect((long)r * c, "CachedAttention q"); rowMap.Expect(3L * r, "CachedAttention rowMap");
        var (o, qs, map, ps) = (F(outp), F(q), I(rowMap), I(rowPos));
        bool serial = r == 1 || (long)r * maxContext * c < 1 << 16;   // rows are independent; split them once that pays
        if (kCache.DType is DType.BF16 or DType.F16)
        {
            var (kc, vc, bf) = (C(kCache).H, C(vCache).H, kCache.DType == DType.BF16);
            if (serial) KvCacheOps.Attend16<T>(o, qs, kc, vc, map, ps, 0, r, nHeads, headDim, bf);
            else Parallel.For(0, r, ri => KvCacheOps.Attend16<T>(o, qs, kc, vc, map, ps, ri, ri + 1, nHeads, headDim, bf));
        }
        else
        {
            var (kc, vc) = (F(kCache), F(vCache));
            if (serial) KvCacheOps.Attend<T>(o, qs, kc, vc, map, ps, 0, r, nHeads, headDim);
            else Parallel.For(0, r, ri => KvCacheOps.Attend<T>(o, qs, kc, vc, map, ps, ri, ri + 1, nHeads, headDim));
        }
    }
    public void GatherRows(Tensor dst, Tensor src, Tensor rows, int r2, int c)
    {
        dst.Expect((long)r2 * c, "GatherRows dst");
        KvCacheOps.Gather<T>(F(dst), F(src), I(rows), r2, c);
    }
    public void SampleRows(Tensor logits, Tensor tokens, Tensor logProbs, Tensor rowSeed, Tensor rowCounter, int r, int v, float temperature, int topK, float topP)
    {
        logits.Expect((long)r * v, "SampleRows logits"); rowSeed.Expect(2L * r, "SampleRows rowSeed");
        var (z, tk, lp, sd, ct) = (F(logits), I(tokens), F(logProbs), I(rowSeed), I(rowCounter));
        Rows(r, (lo, hi) => Sampling.Rows<T>(z, tk, lp, sd, ct, lo, hi, v, temperature, topK, topP));
    }
    /// <summary><see cref="SampleRows"/> in version 1's summation order (<see cref="SamplingV1"/>): the
    /// reference of the kernels' version 1 in gpu-check.</summary>
    public void SampleRowsV1(Tensor logits, Tensor tokens, Tensor logProbs, Tensor rowSeed, Tensor rowCounter, int r, int v, float temperature, int topK, float topP)
    {
        logits.Expect((long)r * v, "SampleRows logits"); rowSeed.Expect(2L * r, "SampleRows rowSeed");
        var (z, tk, lp, sd, ct) = (F(logits), I(tokens), F(logProbs), I(rowSeed), I(rowCounter));
        Rows(r, (lo, hi) => SamplingV1.Rows<T>(z, tk, lp, sd, ct, lo, hi, v, temperature, topK, topP));
    }

    // Element-wise ops: any split of [0, n) gives the same bits (see each op's header), so ranges run in parallel.
    public void SwiGluForward(Tensor h, Tensor gate, Tensor up, long n)
    {
        var (hs, gs, us) = (F(h), F(gate), F(up));
        Elements(n, (lo, len) => SwiGlu.Forward<T>(hs.AsSpan(lo, len), gs.AsSpan(lo, len), us.AsSpan(lo, len), len));
    }
    public void SwiGluBackward(Tensor dgate, Tensor dup, Tensor dh, Tensor gate, Tensor up, long n)
    {
        var (dgs, dus, dhs, gs, us) = (F(dgate), F(dup), F(dh), F(gate), F(up));
        Elements(n, (lo, len) => SwiGlu.Backward<T>(dgs.AsSpan(lo, len), dus.AsSpan(lo, len), dhs.AsSpan(lo, len), gs.AsSpan(lo, len), us.AsSpan(lo, len), len));
    }

    public void DropoutForward(Tensor y, Tensor x, float p, ulong seed, long n)
    {
        var (ys, xs) = (F(y), F(x));
        Elements(n, (lo, len) => Dropout.Forward<T>(ys.AsSpan(lo, len), xs.AsSpan(lo, len), p, seed, len, lo));
    }
    public void DropoutBackward(Tensor dx, Tensor dy, float p, ulong seed, long n)
    {
        var (dxs, dys) = (F(dx), F(dy));
        Elements(n, (lo, len) => Dropout.Backward<T>(dxs.AsSpan(lo, len), dys.AsSpan(lo, len), p, seed, len, lo));
    }

    public void CrossEntropyFused(Tensor logits, Tensor losses, Tensor targets, int n, int v, double weight, bool computeGrad)
    {
        var (z, l, y) = (F(logits), F(losses), I(targets));
        Rows(n, (lo, hi) => CrossEntropy.Fused<T>(z.AsSpan(lo * v, (hi - lo) * v), l.AsSpan(lo, hi - lo), y.AsSpan(lo, hi - lo), hi - lo, v, T.CreateTruncating(weight), computeGrad));
    }

    public void NceKl(Tensor zNat, Tensor zNeg, Tensor kl, int n, int v, float temperature)
    {
        var (zt, zg, k) = (F(zNat), F(zNeg), F(kl));
        Rows(n, (lo, hi) => Nce.Kl<T>(zt.AsSpan(lo * v, (hi - lo) * v), zg.AsSpan(lo * v, (hi - lo) * v), k.AsSpan(lo, hi - lo), hi - lo, v, temperature));
    }

    public void NceDistillFused(Tensor zs, Tensor zNat, Tensor targets, Tensor rowWeight, Tensor lossCe, Tensor lossKd, int n, int v,
        float temperature, float a, double ceScale, double kdScale, bool computeGrad)
    {
        var (z, zt, y, w, lc, lk) = (F(zs), F(zNat), I(targets), F(rowWeight), F(lossCe), F(lossKd));
        Rows(n, (lo, hi) => Nce.DistillFused<T>(z.AsSpan(lo * v, (hi - lo) * v), zt.AsSpan(lo * v, (hi - lo) * v), y.AsSpan(lo, hi - lo),
            w.AsSpan(lo, hi - lo), lc.AsSpan(lo, hi - lo), lk.AsSpan(lo, hi - lo), hi - lo, v, temperature, a, ceScale, kdScale, computeGrad));
    }

    public void AdamW(Tensor param, Tensor grad, Tensor m, Tensor v, long n, float lr, float beta1, float beta2, float eps, float weightDecay, int t)
        => Ops.AdamW.Step<T>(F(param), F(grad), F(m), F(v), n, lr, beta1, beta2, eps, weightDecay, t);

    public void IntegrationForward(Tensor mix, Tensor aNeg, Tensor q, Tensor kPos, Tensor kNeg, Tensor uPos, Tensor uNeg, int n, int d, float beta, float invTemp)
    {
        foreach (var t in new[] { mix, q, kPos, kNeg, uPos, uNeg }) t.Expect((long)n * d, "IntegrationForward");
        aNeg.Expect(n, "IntegrationForward aNeg");
        var (mx, an, qs, kp, kn, up, un) = (F(mix), F(aNeg), F(q), F(kPos), F(kNeg), F(uPos), F(uNeg));
        T b = T.CreateTruncating(beta), it = T.CreateTruncating(invTemp);
        Rows(n, (lo, hi) =>
        {
            int o = lo * d, len = (hi - lo) * d;
            Integration.Forward<T>(mx.AsSpan(o, len), an.AsSpan(lo, hi - lo), qs.AsSpan(o, len), kp.AsSpan(o, len), kn.AsSpan(o, len),
                up.AsSpan(o, len), un.AsSpan(o, len), hi - lo, d, b, it);
        });
    }

    public void IntegrationBackward(Tensor dq, Tensor dkPos, Tensor dkNeg, Tensor duPos, Tensor duNeg, Tensor dmix,
        Tensor q, Tensor kPos, Tensor kNeg, Tensor uPos, Tensor uNeg, Tensor aNeg, int n, int d, float beta, float invTemp)
    {
        foreach (var t in new[] { dq, dkPos, dkNeg, duPos, duNeg, dmix, q, kPos, kNeg, uPos, uNeg }) t.Expect((long)n * d, "IntegrationBackward");
        aNeg.Expect(n, "IntegrationBackward aNeg");
        var (gq, gkp, gkn, gup, gun, gm) = (F(dq), F(dkPos), F(dkNeg), F(duPos), F(duNeg), F(dmix));
        var (qs, kp, kn, up, un, an) = (F(q), F(kPos), F(kNeg), F(uPos), F(uNeg), F(aNeg));
        T b = T.CreateTruncating(beta), it = T.CreateTruncating(invTemp);
        Rows(n, (lo, hi) =>
        {
            int o = lo * d, len = (hi - lo) * d;
            Integration.Backward<T>(gq.AsSpan(o, len), gkp.AsSpan(o, len), gkn.AsSpan(o, len), gup.AsSpan(o, len), gun.AsSpan(o, len),
                gm.AsSpan(o, len), qs.AsSpan(o, len), kp.AsSpan(o, len), kn.AsSpan(o, len), up.AsSpan(o, len), un.AsSpan(o, len),
                an.AsSpan(lo, hi - lo), hi - lo, d, b, it);
        });
    }

    /// <summary>Elements per task of <see cref="Elements"/>: small enough to share a few hundred thousand elements
    /// between cores, large enough that a task outweighs its scheduling.</summary>
    const int ElementChunk = 1 << 14;

    /// <summary>Runs body(start, length) over [0, n) in chunks of <see cref="ElementChunk"/>, in parallel when there is more than one.</summary>
    static void Elements(long n, Action<int, int> body)
    {
        if (n <= ElementChunk) { body(0, (int)n); return; }
        int chunks = (int)((n + ElementChunk - 1) / ElementChunk);
        Parallel.For(0, chunks, ci => { int lo = ci * ElementChunk; body(lo, (int)Math.Min(ElementChunk, n - lo)); });
    }

    /// <summary>Runs body(i) for i in [0, count), in parallel when count &gt; 1.</summary>
    static void Blocks(int count, Action<int> body)
    {
        if (count <= 1) { for (int i = 0; i < count; i++) body(i); return; }
        Parallel.For(0, count, body);
    }

    /// <summary>Runs body over [lo, hi) row ranges in parallel; rows are independent.</summary>
    static void Rows(int n, Action<int, int> body)
    {
        int chunks = Math.Min(n, Environment.ProcessorCount * 4);
        if (chunks <= 1 || n < 64) { body(0, n); return; }
        Parallel.For(0, chunks, ci => body((int)((long)n * ci / chunks), (int)((long)n * (ci + 1) / chunks)));
    }

    public void Dispose() { }
}
