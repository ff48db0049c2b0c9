using System.Diagnostics;

namespace NegDistill.Runtime;

/// <summary>
/// Wraps a backend and times every op (synchronising the device after each, so GPU times are real),
/// for the per-op share of a training or decoding step. Memory transfers pass through untimed.
/// The members are one line each, generated from <see cref="IBackend"/> by tools/gen-profiling-backend.py.
/// </summary>
public sealed class ProfilingBackend(IBackend inner) : IBackend
{
    readonly IBackend _inner = inner;
    readonly Dictionary<string, (long Ticks, long Calls)> _stats = new();

    public IBackend Inner => _inner;
    public string Name => _inner.Name + "+profile";
    public DType DefaultKvCache => _inner.DefaultKvCache;

    /// <summary>(op, seconds, calls), most expensive first.</summary>
    public IReadOnlyList<(string Op, double Seconds, long Calls)> Report() =>
        _stats.Select(kv => (kv.Key, kv.Value.Ticks / (double)Stopwatch.Frequency, kv.Value.Calls)).OrderByDescending(x => x.Item2).ToList();

    public void Reset() => _stats.Clear();

    /// <summary>Off: every op passes through untimed (a model can live on the profiler and be timed for
    /// one run only).</summary>
    public bool Enabled { get; set; } = true;

    long Start() => Enabled ? Stopwatch.GetTimestamp() : 0;

    void Stop(string op, long t0)
    {
        if (!Enabled) return;
        _inner.Synchronize();
        long dt = Stopwatch.GetTimestamp() - t0;
        _stats[op] = _stats.TryGetValue(op, out var s) ? (s.Ticks + dt, s.Calls + 1) : (dt, 1);
    }

    public Tensor Alloc(string name, DType dtype, params int[] shape) => _inner.Alloc(name, dtype, shape);
    public Tensor View(Tensor t, long offset, params int[] shape) => _inner.View(t, offset, shape);
    public void Upload(Tensor t, ReadOnlySpan<float> src) => _inner.Upload(t, src);
    public void Upload(Tensor t, ReadOnlySpan<int> src) => _inner.Upload(t, src);
    public void UploadRaw16(Tensor t, ReadOnlySpan<ushort> src) => _inner.UploadRaw16(t, src);
    public void Download(Tensor t, Span<float> dst) => _inner.Download(t, dst);
    public void Download(Tensor t, Span<int> dst) => _inner.Download(t, dst);
    public void DownloadRaw16(Tensor t, Span<ushort> dst) => _inner.DownloadRaw16(t, dst);
    public void Fill(Tensor t, float value) { long t0__ = Start(); _inner.Fill(t, value); Stop("Fill", t0__); }
    public void FillNormal(Tensor t, float std, ulong seed) { long t0__ = Start(); _inner.FillNormal(t, std, seed); Stop("FillNormal", t0__); }
    public void Copy(Tensor dst, Tensor src) { long t0__ = Start(); _inner.Copy(dst, src); Stop("Copy", t0__); }
    public void Synchronize() { long t0__ = Start(); _inner.Synchronize(); Stop("Synchronize", t0__); }
    public void Axpy(Tensor y, Tensor x, float a, long n) { long t0__ = Start(); _inner.Axpy(y, x, a, n); Stop("Axpy", t0__); }
    public void Scale(Tensor y, float a, long n) { long t0__ = Start(); _inner.Scale(y, a, n); Stop("Scale", t0__); }
    public double Sum(Tensor x, long n) { long t0__ = Start(); var r__ = _inner.Sum(x, n); Stop("Sum", t0__); return r__; }
    public double SumSquares(Tensor x, long n) { long t0__ = Start(); var r__ = _inner.SumSquares(x, n); Stop("SumSquares", t0__); return r__; }
    public bool HasNonFinite(Tensor x, long n) { long t0__ = Start(); var r__ = _inner.HasNonFinite(x, n); Stop("HasNonFinite", t0__); return r__; }
    public void MatMul(Tensor c, Tensor a, Tensor b, int m, int n, int k, bool transA, bool transB, float alpha = 1f, float beta = 0f) { long t0__ = Start(); _inner.MatMul(c, a, b, m, n, k, transA, transB, alpha, beta); Stop("MatMul", t0__); }
    public void EmbeddingForward(Tensor outp, Tensor tokens, Tensor wte, int n, int c) { long t0__ = Start(); _inner.EmbeddingForward(outp, tokens, wte, n, c); Stop("EmbeddingForward", t0__); }
    public void EmbeddingBackward(Tensor dwte, Tensor tokens, Tensor dout, int n, int c) { long t0__ = Start(); _inner.EmbeddingBackward(dwte, tokens, dout, n, c); Stop("EmbeddingBackward", t0__); }
    public void RmsNormForward(Tensor outp, Tensor rstd, Tensor x, Tensor w, int n, int c, float eps) { long t0__ = Start(); _inner.RmsNormForward(outp, rstd, x, w, n, c, eps); Stop("RmsNormForward", t0__); }
    public void RmsNormBackward(Tensor dx, Tensor? dw, Tensor dout, Tensor x, Tensor w, Tensor rstd, int n, int c) { long t0__ = Start(); _inner.RmsNormBackward(dx, dw, dout, x, w, rstd, n, c); Stop("RmsNormBackward", t0__); }
    public void Rope(Tensor x, Tensor pos, int n, int nHeads, int headDim, float theta, bool inverse) { long t0__ = Start(); _inner.Rope(x, pos, n, nHeads, headDim, theta, inverse); Stop("Rope", t0__); }
    public void AttentionForward(Tensor outp, Tensor lse, Tensor q, Tensor k, Tensor v, Tensor keyMask, int b, int t, int nHeads, int headDim) { long t0__ = Start(); _inner.AttentionForward(outp, lse, q, k, v, keyMask, b, t, nHeads, headDim); Stop("AttentionForward", t0__); }
    public void AttentionBackward(Tensor dq, Tensor dk, Tensor dv, Tensor dout, Tensor outp, Tensor lse, Tensor q, Tensor k, Tensor v, Tensor keyMask, int b, int t, int nHeads, int headDim) { long t0__ = Start(); _inner.AttentionBackward(dq, dk, dv, dout, outp, lse, q, k, v, keyMask, b, t, nHeads, headDim); Stop("AttentionBackward", t0__); }
    public void CacheWrite(Tensor kCache, Tensor vCache, Tensor k, Tensor v, Tensor rowMap, Tensor rowPos, int r, int c) { long t0__ = Start(); _inner.CacheWrite(kCache, vCache, k, v, rowMap, rowPos, r, c); Stop("CacheWrite", t0__); }
    public void CachedAttention(Tensor outp, Tensor q, Tensor kCache, Tensor vCache, Tensor rowMap, Tensor rowPos, int r, int maxContext, int nHeads, int headDim) { long t0__ = Start(); _inner.CachedAttention(outp, q, kCache, vCache, rowMap, rowPos, r, maxContext, nHeads, headDim); Stop("CachedAttention", t0__); }
    public void GatherRows(Tensor dst, Tensor src, Tensor rows, int r2, int c) { long t0__ = Start(); _inner.GatherRows(dst, src, rows, r2, c); Stop("GatherRows", t0__); }
    public void SampleRows(Tensor logits, Tensor tokens, Tensor logProbs, Tensor rowSeed, Tensor rowCounter, int r, int v, float temperature, int topK, float topP) { long t0__ = Start(); _inner.SampleRows(logits, tokens, logProbs, rowSeed, rowCounter, r, v, temperature, topK, topP); Stop("SampleRows", t0__); }
    public void SwiGluForward(Tensor h, Tensor gate, Tensor up, long n) { long t0__ = Start(); _inner.SwiGluForward(h, gate, up, n); Stop("SwiGluForward", t0__); }
    public void SwiGluBackward(Tensor dgate, Tensor dup, Tensor dh, Tensor gate, Tensor up, long n) { long t0__ = Start(); _inner.SwiGluBackward(dgate, dup, dh, gate, up, n); Stop("SwiGluBackward", t0__); }
    public void DropoutForward(Tensor y, Tensor x, float p, ulong seed, long n) { long t0__ = Start(); _inner.DropoutForward(y, x, p, seed, n); Stop("DropoutForward", t0__); }
    public void DropoutBackward(Tensor dx, Tensor dy, float p, ulong seed, long n) { long t0__ = Start(); _inner.DropoutBackward(dx, dy, p, seed, n); Stop("DropoutBackward", t0__); }
    public void CrossEntropyFused(Tensor logits, Tensor losses, Tensor targets, int n, int v, double weight, bool computeGrad) { long t0__ = Start(); _inner.CrossEntropyFused(logits, losses, targets, n, v, weight, computeGrad); Stop("CrossEntropyFused", t0__); }
    public void NceKl(Tensor zNat, Tensor zNeg, Tensor kl, int n, int v, float temperature) { long t0__ = Start(); _inner.NceKl(zNat, zNeg, kl, n, v, temperature); Stop("NceKl", t0__); }
    public void NceDistillFused(Tensor zs, Tensor zNat, Tensor targets, Tensor rowWeight, Tensor lossCe, Tensor lossKd, int n, int v, float temperature, float a, double ceScale, double kdScale, bool computeGrad) { long t0__ = Start(); _inner.NceDistillFused(zs, zNat, targets, rowWeight, lossCe, lossKd, n, v, temperature, a, ceScale, kdScale, computeGrad); Stop("NceDistillFused", t0__); }
    public void AdamW(Tensor param, Tensor grad, Tensor m, Tensor v, long n, float lr, float beta1, float beta2, float eps, float weightDecay, int t) { long t0__ = Start(); _inner.AdamW(param, grad, m, v, n, lr, beta1, beta2, eps, weightDecay, t); Stop("AdamW", t0__); }
    public void IntegrationForward(Tensor mix, Tensor aNeg, Tensor q, Tensor kPos, Tensor kNeg, Tensor uPos, Tensor uNeg, int n, int d, float beta, float invTemp) { long t0__ = Start(); _inner.IntegrationForward(mix, aNeg, q, kPos, kNeg, uPos, uNeg, n, d, beta, invTemp); Stop("IntegrationForward", t0__); }
    public void IntegrationBackward(Tensor dq, Tensor dkPos, Tensor dkNeg, Tensor duPos, Tensor duNeg, Tensor dmix, Tensor q, Tensor kPos, Tensor kNeg, Tensor uPos, Tensor uNeg, Tensor aNeg, int n, int d, float beta, float invTemp) { long t0__ = Start(); _inner.IntegrationBackward(dq, dkPos, dkNeg, duPos, duNeg, dmix, q, kPos, kNeg, uPos, uNeg, aNeg, n, d, beta, invTemp); Stop("IntegrationBackward", t0__); }

    public void Dispose() => _inner.Dispose();
}
