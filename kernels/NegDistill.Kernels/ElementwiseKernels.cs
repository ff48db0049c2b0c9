using ILGPU;
using ILGPU.Runtime;

namespace NegDistill.Kernels;

/// <summary>Fill, axpy, scale and the two reductions the trainer needs (Σx² for gradient clipping,
/// a non-finite count for NaN/Inf detection). CPU twin: <see cref="NegDistill.Runtime.CpuBackend"/>.
/// The reductions write one partial per group (fixed grid, fixed tree), summed on the host in double; version 1
/// (ReduceKernel) reduces each group by GroupReduce's shared-memory tree, version 2 (ReduceV2Kernel, the default) by
/// its warp shuffles (the sums associate differently; the non-finite count is exact in both).
/// Fill, axpy and scale have a version 2 (*V2Kernel: four floats per thread, 128-bit loads and stores) used where
/// <see cref="Wide.Fits"/> holds; same bits as version 1.</summary>
public static class ElementwiseKernels
{
    public const int ReduceGroups = 256;

    public static void FillKernel(Index1D i, ArrayView<float> y, float v) => y[i] = v;
    public static void AxpyKernel(Index1D i, ArrayView<float> y, ArrayView<float> x, float a) => y[i] += a * x[i];
    public static void ScaleKernel(Index1D i, ArrayView<float> y, float a) => y[i] *= a;
    public static void FillV2Kernel(Index1D i, ArrayView<Float4> y, float v) => y[i] = new Float4(v, v, v, v);
    public static void AxpyV2Kernel(Index1D i, ArrayView<Float4> y, ArrayView<Float4> x, float a)
    {
        Float4 yv = y[i], xv = x[i];
        y[i] = new Float4(yv.X + a * xv.X, yv.Y + a * xv.Y, yv.Z + a * xv.Z, yv.W + a * xv.W);
    }
    public static void ScaleV2Kernel(Index1D i, ArrayView<Float4> y, float a)
    {
        Float4 yv = y[i];
        y[i] = new Float4(yv.X * a, yv.Y * a, yv.Z * a, yv.W * a);
    }
    /// <summary>Random weights where they live: Init.NormalAt32 (the fp32 form of the host's draw) per element.</summary>
    public static void FillNormalKernel(Index1D i, ArrayView<float> y, float std, ulong seed) => y[i] = NegDistill.Model.Init.NormalAt32(std, seed, i);
    public static void FillNormal16Kernel(Index1D i, ArrayView<ushort> y, float std, ulong seed, int bf16)
        => y[i] = NegDistill.Checkpoints.HalfPrecision.Narrow(NegDistill.Model.Init.NormalAt32(std, seed, i), bf16 != 0);

    /// <summary>Grid: ReduceGroups groups. mode 0: Σx²; mode 1: count of non-finite values; mode 2: Σx. Version 1.</summary>
    public static void ReduceKernel(ArrayView<float> x, ArrayView<float> partial, long n, int mode) => Reduce(x, partial, n, mode, 1);

    /// <summary>Version 2 of <see cref="ReduceKernel"/>: warp shuffles.</summary>
    public static void ReduceV2Kernel(ArrayView<float> x, ArrayView<float> partial, long n, int mode) => Reduce(x, partial, n, mode, 2);

    static void Reduce(ArrayView<float> x, ArrayView<float> partial, long n, int mode, int rv)
    {
        var sh = SharedMemory.Allocate<float>(GroupReduce.MaxGroup);
        float acc = 0f;
        long stride = (long)Grid.DimX * Group.DimX;
        for (long i = (long)Grid.IdxX * Group.DimX + Group.IdxX; i < n; i += stride)
        {
            float v = x[i];
            if (mode == 0) acc += v * v;
            else if (mode == 2) acc += v;
            else if (float.IsNaN(v) || float.IsInfinity(v)) acc += 1f;
        }
        acc = GroupReduce.Sum(acc, sh, rv);
        if (Group.IdxX == 0) partial[Grid.IdxX] = acc;
    }

    public sealed class Launcher(Accelerator acc, int group)
    {
        readonly Action<Index1D, ArrayView<float>, float> _fill = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, float>(FillKernel);
        readonly Action<Index1D, ArrayView<float>, ArrayView<float>, float> _axpy = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, float>(AxpyKernel);
        readonly Action<Index1D, ArrayView<float>, float> _scale = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, float>(ScaleKernel);
        readonly Action<Index1D, ArrayView<float>, float, ulong> _normal = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, float, ulong>(FillNormalKernel);
        readonly Action<Index1D, ArrayView<ushort>, float, ulong, int> _normal16 = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<ushort>, float, ulong, int>(FillNormal16Kernel);
        readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, long, int> _reduce =
            acc.LoadStreamKernel<ArrayView<float>, ArrayView<float>, long, int>(ReduceKernel);
        readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, long, int> _reduce2 =
            acc.LoadStreamKernel<ArrayView<float>, ArrayView<float>, long, int>(ReduceV2Kernel);
        readonly MemoryBuffer1D<float, Stride1D.Dense> _partial = acc.Allocate1D<float>(ReduceGroups);
        readonly float[] _host = new float[ReduceGroups];

        readonly Action<Index1D, ArrayView<Float4>, float> _fill2 = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<Float4>, float>(FillV2Kernel);
        readonly Action<Index1D, ArrayView<Float4>, ArrayView<Float4>, float> _axpy2 = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<Float4>, ArrayView<Float4>, float>(AxpyV2Kernel);
        readonly Action<Index1D, ArrayView<Float4>, float> _scale2 = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<Float4>, float>(ScaleV2Kernel);

        public void Fill(ArrayView<float> y, float v, long n, Wide.Version version = Wide.Version.V2Float4)
        {
            if (version == Wide.Version.V2Float4 && Wide.Fits(n, y)) _fill2((int)(n / 4), Wide.As4(y, n), v);
            else _fill((int)n, y, v);
        }

        public void Axpy(ArrayView<float> y, ArrayView<float> x, float a, long n, Wide.Version version = Wide.Version.V2Float4)
        {
            if (version == Wide.Version.V2Float4 && Wide.Fits(n, y, x)) _axpy2((int)(n / 4), Wide.As4(y, n), Wide.As4(x, n), a);
            else _axpy((int)n, y, x, a);
        }

        public void Scale(ArrayView<float> y, float a, long n, Wide.Version version = Wide.Version.V2Float4)
        {
            if (version == Wide.Version.V2Float4 && Wide.Fits(n, y)) _scale2((int)(n / 4), Wide.As4(y, n), a);
            else _scale((int)n, y, a);
        }
        public void FillNormal(ArrayView<float> y, float std, ulong seed) => _normal((int)y.Length, y, std, seed);
        public void FillNormal16(ArrayView<ushort> y, float std, ulong seed, bool bf16) => _normal16((int)y.Length, y, std, seed, bf16 ? 1 : 0);

        public double Reduce(ArrayView<float> x, long n, int mode, GroupReduce.Version rv = GroupReduce.Version.V2Warp)
        {
            // enough groups to fill a GPU on large tensors, a single group for small ones
            int groups = (int)Math.Clamp((n + 4L * group - 1) / (4L * group), 1, ReduceGroups);
            (rv == GroupReduce.Version.V1Tree ? _reduce : _reduce2)(new KernelConfig(groups, group), x, _partial.View, n, mode);
            ((ArrayView<float>)_partial.View).SubView(0, groups).CopyToCPU(_host.AsSpan(0, groups));   // the span overload pins
            double s = 0;
            for (int i = 0; i < groups; i++) s += _host[i];
            return s;
        }
    }
}
