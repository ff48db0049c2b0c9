using System.Numerics.Tensors;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Reports;
using NegDistill.Ops;
using NegDistill.Runtime;
using Tensor = NegDistill.Runtime.Tensor;

namespace NegDistill.Benchmarks;

/// <summary>
/// NCE's loss and gradient (method.md, Step 2) on the fp32 CPU twin at vocabulary 32,000, for 256 and
/// 2,048 tokens (sequences of 256): the fused ops (<see cref="IBackend.NceKl"/>, β on the host,
/// <see cref="IBackend.NceDistillFused"/>) against the same math done op by op the way an unfused
/// framework would (baseline): separate N×V softmax buffers for student, NAT and neg, then
/// log(p + 1e-7) twice, their difference, the KL row sums, β, log_softmax of the student, the cross
/// term, softmax again, and the gradient assembled in its own N×V buffer. Both variants split rows
/// over the cores the same way and use the same SIMD primitives, so the difference is passes over memory
/// and buffers. Inputs are the teacher and student logits; the matmuls producing them are not timed.
/// </summary>
[Config(typeof(NceConfig))]
public class NceLossBenchmarks
{
    const int V = 32000, SeqLen = 256;
    const float Tau = 1f, A = 0.5f;

    [Params(256, 2048)]
    public int Tokens;

    readonly CpuBackend _ops = new();
    Tensor _zs = null!, _zNat = null!, _zNeg = null!, _y = null!, _w = null!, _kl = null!, _ce = null!, _kd = null!;
    float[] _zsInit = [], _klHost = [], _mask = [];
    int[] _targets = [];
    float _scale, _kdScale;
    // op-by-op buffers, N×V each
    float[] _pS = [], _pNat = [], _pNeg = [], _logQ = [], _t1 = [], _t2 = [], _grad = [];
    float[] _klRef = [], _ceRef = [], _kdRef = [];

    int B => Tokens / SeqLen;

    [GlobalSetup]
    public void Setup()
    {
        int n = Tokens;
        var rnd = new Random(42);
        float[] Logits() { var z = new float[n * V]; for (int i = 0; i < z.Length; i++) z[i] = (rnd.NextSingle() * 2 - 1) * 4; return z; }
        _zsInit = Logits();
        var zNat = Logits();
        var zNeg = (float[])zNat.Clone();
        for (int i = 0; i < zNeg.Length; i++) zNeg[i] += (rnd.NextSingle() * 2 - 1) * 0.5f;     // a neg view near NAT's
        _mask = new float[n]; _targets = new int[n];
        for (int b = 0; b < B; b++)
        {
            int len = SeqLen - 16 * b;                                                          // right padding grows per sequence
            for (int t = 0; t < SeqLen; t++)
            {
                _mask[b * SeqLen + t] = t < len ? 1 : 0;
                _targets[b * SeqLen + t] = t + 1 < len ? rnd.Next(V) : -1;
            }
        }
        _scale = 1f / _targets.Count(y => y >= 0);                                            // CE over rows with a target
        _kdScale = 1f / _mask.Sum();                                                            // KD over the attention mask

        _zs = Upload(_zsInit, n, V); _zNat = Upload(zNat, n, V); _zNeg = Upload(zNeg, n, V);
        _y = _ops.Alloc("y", DType.I32, n); _ops.Upload(_y, _targets);
        _w = _ops.Alloc("w", DType.F32, n); _kl = _ops.Alloc("kl", DType.F32, n);
        _ce = _ops.Alloc("ce", DType.F32, n); _kd = _ops.Alloc("kd", DType.F32, n);
        _klHost = new float[n];
        _pS = new float[n * V]; _pNat = new float[n * V]; _pNeg = new float[n * V]; _logQ = new float[n * V];
        _t1 = new float[n * V]; _t2 = new float[n * V]; _grad = new float[n * V];
        _klRef = new float[n]; _ceRef = new float[n]; _kdRef = new float[n];

        // the two variants compute the same thing
        Fused();
        var (kl, ce, kd, grad) = ((float[])_klHost.Clone(), Get(_ce), Get(_kd), Get(_zs));
        ResetStudent();
        OpByOp();
        Check(kl, _klRef, 1e-6f, "KL"); Check(ce, _ceRef, 1e-5f, "CE"); Check(kd, _kdRef, 1e-5f, "KD");
        Check(grad, _grad, 1e-11f, "gradient");                                                // entries are O(scale/V) ≈ 1e-8
    }

    Tensor Upload(float[] data, params int[] shape) { var t = _ops.Alloc("x", DType.F32, shape); _ops.Upload(t, data); return t; }
    float[] Get(Tensor t) { var r = new float[t.Length]; _ops.Download(t, r); return r; }

    static void Check(float[] a, float[] b, float atol, string what)
    {
        for (int i = 0; i < a.Length; i++)
            if (!(Math.Abs(a[i] - b[i]) <= atol + 1e-3f * Math.Abs(b[i])))
                throw new InvalidOperationException($"fused and op-by-op NCE disagree on {what}[{i}]: {a[i]} vs {b[i]}");
    }

    /// <summary>The fused kernel overwrites the student logits with the gradient; restore them (untimed).</summary>
    [IterationSetup]
    public void ResetStudent() => _ops.Upload(_zs, _zsInit);

    [Benchmark(Description = "fused (NceKl + β + NceDistillFused)")]
    public void Fused()
    {
        int n = Tokens;
        _ops.NceKl(_zNat, _zNeg, _kl, n, V, Tau);
        _ops.Download(_kl, _klHost);
        var beta = Nce.SequenceBeta<float>(_klHost, _mask, B, SeqLen);
        _ops.Upload(_w, Nce.RowWeights(beta, SeqLen, _mask));
        _ops.NceDistillFused(_zs, _zNat, _y, _w, _ce, _kd, n, V, Tau, A, _scale, _kdScale, true);
    }

    [Benchmark(Baseline = true, Description = "op by op (N×V buffers per step)")]
    public void OpByOp()
    {
        int n = Tokens;
        var zs = ((CpuTensor<float>)_zs).F; var zNat = ((CpuTensor<float>)_zNat).F; var zNeg = ((CpuTensor<float>)_zNeg).F;
        const float eps = 1e-7f;
        // teachers: softmaxes, then KL = Σ p_neg (log(p_neg + ε) − log(p_nat + ε))
        Rows(n, (i, o) => Softmax(zNat.AsSpan(o, V), Tau, _pNat.AsSpan(o, V)));
        Rows(n, (i, o) => Softmax(zNeg.AsSpan(o, V), Tau, _pNeg.AsSpan(o, V)));
        Rows(n, (i, o) => { var t = _t1.AsSpan(o, V); TensorPrimitives.Add(_pNeg.AsSpan(o, V), eps, t); TensorPrimitives.Log(t, t); });
        Rows(n, (i, o) => { var t = _t2.AsSpan(o, V); TensorPrimitives.Add(_pNat.AsSpan(o, V), eps, t); TensorPrimitives.Log(t, t); });
        Rows(n, (i, o) => TensorPrimitives.Subtract(_t1.AsSpan(o, V), _t2.AsSpan(o, V), _t1.AsSpan(o, V)));
        Rows(n, (i, o) => _klRef[i] = TensorPrimitives.Dot(_pNeg.AsSpan(o, V), _t1.AsSpan(o, V)));
        // β per sequence and the row weights, on the host
        var beta = Nce.SequenceBeta<float>(_klRef, _mask, B, SeqLen);
        var w = Nce.RowWeights(beta, SeqLen, _mask);                                           // 0 on padding
        // student: log_softmax(z/τ), KD cross term, softmax, CE
        Rows(n, (i, o) => LogSoftmax(zs.AsSpan(o, V), Tau, _logQ.AsSpan(o, V)));
        Rows(n, (i, o) => _kdRef[i] = -Tau * Tau * w[i] * TensorPrimitives.Dot(_pNat.AsSpan(o, V), _logQ.AsSpan(o, V)));
        Rows(n, (i, o) => Softmax(zs.AsSpan(o, V), 1f, _pS.AsSpan(o, V)));
        Rows(n, (i, o) => _ceRef[i] = _targets[i] < 0 ? 0f : -MathF.Log(_pS[o + _targets[i]]));
        // gradient: (1−a)·s·(p − onehot) + a·s·τ·w·(exp(log q) − p_nat)
        Rows(n, (i, o) => TensorPrimitives.Exp(_logQ.AsSpan(o, V), _t1.AsSpan(o, V)));
        Rows(n, (i, o) => TensorPrimitives.Subtract(_t1.AsSpan(o, V), _pNat.AsSpan(o, V), _grad.AsSpan(o, V)));
        Rows(n, (i, o) => TensorPrimitives.Multiply(_grad.AsSpan(o, V), A * _kdScale * Tau * w[i], _grad.AsSpan(o, V)));
        Rows(n, (i, o) => TensorPrimitives.MultiplyAdd(_pS.AsSpan(o, V), _targets[i] < 0 ? 0f : (1 - A) * _scale, _grad.AsSpan(o, V), _grad.AsSpan(o, V)));
        for (int i = 0; i < n; i++) if (_targets[i] >= 0) _grad[(long)i * V + _targets[i]] -= (1 - A) * _scale;
    }

    static void Softmax(ReadOnlySpan<float> z, float tau, Span<float> p)
    {
        float max = TensorPrimitives.Max(z);
        TensorPrimitives.Subtract(z, max, p);
        if (tau != 1f) TensorPrimitives.Multiply(p, 1f / tau, p);
        TensorPrimitives.Exp(p, p);
        TensorPrimitives.Multiply(p, 1f / TensorPrimitives.Sum(p), p);
    }

    static void LogSoftmax(ReadOnlySpan<float> z, float tau, Span<float> r)
    {
        float max = TensorPrimitives.Max(z);
        TensorPrimitives.Subtract(z, max, r);
        if (tau != 1f) TensorPrimitives.Multiply(r, 1f / tau, r);
        TensorPrimitives.Exp(r, r);
        float lse = MathF.Log(TensorPrimitives.Sum(r));
        TensorPrimitives.Subtract(z, max, r);                                   // a second pass, as an unfused log_softmax does
        if (tau != 1f) TensorPrimitives.Multiply(r, 1f / tau, r);
        TensorPrimitives.Subtract(r, lse, r);
    }

    /// <summary>Row-parallel pass, split as CpuBackend splits its ops (cores × 4 row ranges).</summary>
    static void Rows(int n, Action<int, int> body)
    {
        int chunks = Math.Min(n, Environment.ProcessorCount * 4);
        Parallel.For(0, chunks, ci =>
        {
            int lo = (int)((long)n * ci / chunks), hi = (int)((long)n * (ci + 1) / chunks);
            for (int i = lo; i < hi; i++) body(i, i * V);
        });
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        foreach (var t in new[] { _zs, _zNat, _zNeg, _y, _w, _kl, _ce, _kd }) t.Dispose();
        _ops.Dispose();
    }

    /// <summary>One launch, three warm-up and five measured iterations of one call each (each iteration
    /// restores the student logits first): a 2,048-token call takes a good fraction of a second on two
    /// cores, and the warm-ups let tiered JIT finish before measuring.</summary>
    sealed class NceConfig : ManualConfig
    {
        public NceConfig()
        {
            AddJob(Job.Default.WithLaunchCount(1).WithWarmupCount(3).WithIterationCount(5));
            WithSummaryStyle(SummaryStyle.Default.WithRatioStyle(RatioStyle.Trend));
        }
    }
}
