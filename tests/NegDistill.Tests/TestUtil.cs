using NegDistill.Kernels;
using NegDistill.Runtime;

namespace NegDistill.Tests;

static class TestUtil
{
    public static double[] RandD(int n, ulong seed, double scale = 1)
    {
        var r = new double[n];
        for (int i = 0; i < n; i++) r[i] = (2 * CounterRng.Uniform(seed, (ulong)i) - 1) * scale;
        return r;
    }

    public static float[] Rand(int n, ulong seed, float scale = 1)
    {
        var r = new float[n];
        for (int i = 0; i < n; i++) r[i] = (2 * CounterRng.Uniform(seed, (ulong)i) - 1) * scale;
        return r;
    }

    /// <summary>|a − e| ≤ atol + rtol·|e| elementwise; the message names the tensor and the first
    /// offending index.</summary>
    public static void Close(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual, float atol, float rtol, string what)
    {
        Assert.That(actual.Length, Is.EqualTo(expected.Length), $"{what}: length");
        for (int i = 0; i < expected.Length; i++)
        {
            float e = expected[i], a = actual[i];
            if (!(Math.Abs(a - e) <= atol + rtol * Math.Abs(e)))
                Assert.Fail($"{what}[{i}]: expected {e}, got {a} (atol {atol}, rtol {rtol})");
        }
    }

    public static void Close(ReadOnlySpan<double> expected, ReadOnlySpan<double> actual, double atol, double rtol, string what)
    {
        Assert.That(actual.Length, Is.EqualTo(expected.Length), $"{what}: length");
        for (int i = 0; i < expected.Length; i++)
        {
            double e = expected[i], a = actual[i];
            if (!(Math.Abs(a - e) <= atol + rtol * Math.Abs(e)))
                Assert.Fail($"{what}[{i}]: expected {e}, got {a} (atol {atol}, rtol {rtol})");
        }
    }

    static IlgpuBackend? _ilgpu;
    static readonly object Gate = new();

    /// <summary>One ILGPU CPU-accelerator backend shared by the test run (kernel compilation is the
    /// expensive part; it happens once per kernel).</summary>
    public static IlgpuBackend Ilgpu
    {
        get { lock (Gate) return _ilgpu ??= new IlgpuBackend(IlgpuDevice.Cpu); }
    }

    /// <summary>Central-difference gradient of loss() with respect to every element of x, perturbed in
    /// place by ±h and restored (fp64 gradient checks).</summary>
    public static double[] FiniteDiff(double[] x, Func<double> loss, double h = 1e-6)
    {
        var g = new double[x.Length];
        for (int i = 0; i < x.Length; i++)
        {
            double o = x[i];
            x[i] = o + h; double lp = loss();
            x[i] = o - h; double lm = loss();
            x[i] = o;
            g[i] = (lp - lm) / (2 * h);
        }
        return g;
    }

    public static double Dot(double[] a, double[] b) { double s = 0; for (int i = 0; i < a.Length; i++) s += a[i] * b[i]; return s; }

    /// <summary>Runs <paramref name="op"/> on the CPU twin and on the kernels (ILGPU CPU accelerator)
    /// with the same inputs and returns each side's named F32 and I32 outputs.</summary>
    public static (Dictionary<string, float[]> F, Dictionary<string, int[]> I)[] OnBoth(
        Dictionary<string, (DType dt, int[] shape, float[]? data, int[]? ints)> inputs, Action<IBackend, Dictionary<string, Tensor>> op, params string[] outputs)
    {
        var res = new List<(Dictionary<string, float[]>, Dictionary<string, int[]>)>();
        foreach (IBackend ops in new IBackend[] { new CpuBackend(), TestUtil.Ilgpu })
        {
            var t = new Dictionary<string, Tensor>();
            foreach (var (name, (dt, shape, data, ints)) in inputs)
            {
                t[name] = ops.Alloc(name, dt, shape);
                if (data != null) ops.Upload(t[name], data);
                if (ints != null) ops.Upload(t[name], ints);
            }
            op(ops, t);
            ops.Synchronize();
            var f = new Dictionary<string, float[]>(); var i = new Dictionary<string, int[]>();
            foreach (var o in outputs)
            {
                if (t[o].DType == DType.I32) { var a = new int[t[o].Length]; ops.Download(t[o], a); i[o] = a; }
                else f[o] = TestUtil.Get(ops, t[o]);
            }
            foreach (var x in t.Values) x.Dispose();
            res.Add((f, i));
        }
        return res.ToArray();
    }

    public static float[] Get(IBackend ops, Tensor t) { var r = new float[t.Length]; ops.Download(t, r); return r; }
}
